"""The Launch page's sweep section and the Live page's log, under Streamlit's AppTest: the run count is
shown before anything is queued, the sweep queues its runs as one group, a second click queues nothing,
a bad grid is one sentence next to the field, an unreachable cluster is one sentence next to the launcher,
and a run's log reads on the Live page."""

from __future__ import annotations

import socket

import pytest

from cldash.runs.processes import log_path
from cldash.store import Store

from test_app import app, no_starts


def _sweep_form(db, monkeypatch, grid: str):
    no_starts(monkeypatch)   # store the runs, start none (neither the launch nor the sidebar's refresh)
    at = app(db, monkeypatch, "pages/launch.py")
    at.multiselect(key="launch-methods").select("full")
    at.toggle(key="sweep-on").set_value(True)
    at.text_area(key="sweep-grid").set_value(grid)
    at.text_input(key="sweep-name").set_value("class")
    at.run()
    return at


def test_the_launch_page_shows_a_sweeps_count_and_queues_it_once_as_a_group(tmp_path, monkeypatch):
    db = tmp_path / "sweep.db"
    at = _sweep_form(db, monkeypatch, "rank=2,4")
    info = [i.value for i in at.info]
    assert any(v.startswith("sweep class: 2 methods x 1 preset x 1 seed x 2 rank = 3 runs; 0 already in the store, "
                            "3 to queue") and "full has no option rank" in v for v in info), info
    button = at.button(key="launch-button")
    assert button.label == "Queue the sweep's 3 new runs"
    button.click().run()
    runs = Store(str(db)).runs()
    assert len(runs) == 3 and {r["group_key"] for r in runs} == {"sweep:class"}
    assert {r["priority"] for r in runs} == {0}   # interactive: launched here to watch it (a CLI sweep: batch)
    assert sorted((r["method"], r["config"]["method_options"].get("rank")) for r in runs) == [
        ("full", None), ("lora", 2), ("lora", 4)]
    assert at.button(key="launch-button").label == "Queue the sweep's 0 new runs"
    assert at.button(key="launch-button").disabled
    assert len(Store(str(db)).runs()) == 3


def test_a_bad_grid_is_one_sentence_next_to_it_and_nothing_is_queued(tmp_path, monkeypatch):
    db = tmp_path / "bad.db"
    at = _sweep_form(db, monkeypatch, "rnak=2,4")
    assert [e.value for e in at.error] == ["no run, method (lora, full) or stream (digits-rotate) option is called "
                                           "'rnak'; `cldash run --method lora --help` lists them."]
    assert at.button(key="launch-button").disabled and Store(str(db)).runs() == []


def test_an_unreachable_cluster_is_one_sentence_next_to_the_launcher(tmp_path, monkeypatch):
    db = tmp_path / "ray.db"
    at = _sweep_form(db, monkeypatch, "rank=2")
    at.selectbox(key="sweep-launcher").set_value("ray").run()
    at.text_input(key="sweep-ray-address").set_value("http://127.0.0.1:9").run()
    at.button(key="sweep-check").click().run()
    assert any(e.value.startswith("cannot reach the Ray cluster at http://127.0.0.1:9") for e in at.error)
    at.button(key="launch-button").click().run()
    assert any(e.value.startswith("cannot reach the Ray cluster at http://127.0.0.1:9") for e in at.error)
    assert Store(str(db)).runs() == []


@pytest.mark.parametrize("name", ["ray", "slurm"])
def test_every_registered_cluster_launcher_is_offered_with_its_spec_and_a_bad_spec_is_one_sentence(
        tmp_path, monkeypatch, name):
    """The choice comes from the launcher registry (no launcher is named by the page): each one's field starts at
    its suggested spec, and what the user writes goes to `parse` as --launcher would."""
    from cldash.runs.launchers import LAUNCHERS

    db = tmp_path / f"{name}.db"
    at = _sweep_form(db, monkeypatch, "rank=2")
    assert at.selectbox(key="sweep-launcher").options == [LAUNCHERS[n].title for n in LAUNCHERS]
    at.selectbox(key="sweep-launcher").set_value(name).run()
    field = at.text_input(key=f"sweep-{name}-address")
    assert field.value == LAUNCHERS[name].suggested_spec()
    field.set_value({"ray": "ray://:10001", "slurm": "slurm:colour=red"}[name]).run()
    at.button(key="launch-button").click().run()
    said = {"ray": "names no host", "slurm": "the SLURM launcher has no option 'colour'"}[name]
    assert any(said in e.value for e in at.error), [e.value for e in at.error]
    assert Store(str(db)).runs() == []


def test_the_live_page_reads_a_runs_log(tmp_path, monkeypatch):
    from cldash.config import resolve

    db = tmp_path / "log.db"
    store = Store(str(db))
    rid = store.create_run(resolve({"method": "lora"}).to_dict(), status="failed")
    store.update_run(rid, host=socket.gethostname(), pid=1, error="boom")
    path = log_path(store, rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("run 1 started\nstep 10/1500 · loss 1.0\n")
    at = app(db, monkeypatch, "pages/live.py", runs=[rid])
    at.toggle(key=f"log-{rid}").set_value(True).run()
    assert [c.value.rstrip("\n") for c in at.code] == ["run 1 started\nstep 10/1500 · loss 1.0"]
