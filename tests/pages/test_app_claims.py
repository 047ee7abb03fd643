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


def test_a_lesson_launched_after_the_claims_runs_starts_before_them_and_runs_says_so(tmp_path, monkeypatch):
    """The claims' runs queued from the Claims page are batch; a lesson launched afterwards from the Lessons page
    is interactive: the local queue starts the lesson's runs first, and the Runs page shows each run's priority and
    the order under its table."""
    from cldash.analysis.lessons import LESSONS
    from cldash.runs.launchers.local import queue

    from test_app import no_starts

    no_starts(monkeypatch)
    db = tmp_path / "runs.db"
    at = app(db, monkeypatch, page="pages/claims.py")
    at.radio(key="claims-regime").set_value("common").run()
    at.button(key="claims-launch-all").click().run()
    at.button(key="yes-all").click().run()
    store = Store(str(db))
    claims = [r["id"] for r in store.runs()]
    at.switch_page("pages/lessons.py").run()
    at.button(key=f"lesson-launch-{LESSONS[0].key}").click().run()
    assert not at.exception
    lesson = sorted(set(r["id"] for r in store.runs()) - set(claims))
    assert len(lesson) == len(LESSONS[0].runs) and min(lesson) > max(claims)
    assert [r["id"] for r in queue(store)[1]] == lesson + claims
    at.switch_page("pages/runs.py").run()
    table = at.dataframe[0].value.set_index("id")
    assert set(table.loc[claims, "priority"]) == {"batch"} and set(table.loc[lesson, "priority"]) == {"interactive"}
    assert any(c.value.endswith(f"— waiting: {len(lesson)} interactive first, then {len(claims)} batch")
               for c in at.caption)
