"""The dashboard's pages under Streamlit's AppTest, against a store seeded with real runs."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def test_runs_page_lists_the_seeded_runs(seeded_store, monkeypatch):
    monkeypatch.setenv("CLDASH_DB", seeded_store.display)
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=60).run()
    assert not at.exception
    df = at.dataframe[0].value
    assert df["method"].tolist() == ["lora", "full"]
    assert (df["status"] == "finished").all()
    run = seeded_store.runs()[0]
    assert df["final acc"].iloc[0] == pytest.approx(run["summary"]["acc"])


def test_runs_page_on_an_empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CLDASH_DB", str(tmp_path / "empty.db"))
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=60).run()
    assert not at.exception
    assert "No runs yet" in at.info[0].value


def test_unopenable_store_shows_an_error_box(tmp_path, monkeypatch):
    monkeypatch.setenv("CLDASH_DB", str(tmp_path / "missing" / "x.db"))
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=60).run()
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_app_entry_point_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CLDASH_DB", str(tmp_path / "runs.db"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
