"""The Claims page under Streamlit's AppTest on an empty store: the shipped study's verdicts, its date and the
command that reproduces it are shown, so a class sees an answer before any run."""

from cldash.analysis import claims as C
from cldash.store import Store

from test_app import app


def test_an_empty_store_shows_the_shipped_study_with_its_date_and_command(tmp_path, monkeypatch):
    db = tmp_path / "runs.db"
    Store(db)   # migrated, no runs
    at = app(db, monkeypatch, page="pages/claims.py")
    study = C.shipped_study()
    info = " ".join(i.value for i in at.info)
    assert study["date"] in info and study["command"] in info and study["machine"] in info
    shipped = [c.value for c in at.caption if c.value.startswith(f"shipped study ({study['date']}): ")]
    assert len(shipped) == len(C.CLAIMS) and all(c.count("-badge[") == len(C.REGIMES) for c in shipped)
    assert at.button(key="claims-launch-all").proto.type == "secondary"   # no longer the red primary at the top
