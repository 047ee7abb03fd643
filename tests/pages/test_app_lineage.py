"""Resume and fork from the dashboard (issue 14), under AppTest, on tiny runs made in-process: the Runs page
resumes a stopped run and forks a finished one ("What if…"), the sidebar switches automatic resume, and
Compare draws a fork beside its parent with the fork point marked. No run process is started (no_starts):
the tests read what the pages wrote to the store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cldash.config import resolve
from cldash.runs import lineage, recovery
from cldash.runs.execute import execute
from cldash.store import Store, _engine

from conftest import use_few_test_digits
from test_app import app, array, charts, no_starts

STEPS = 4
TINY = {"method": "lora", "steps_per_task": STEPS, "batch_size": 16, "eval_interval": 0, "spectra_interval": 0,
        "dense_spectra_interval": 0, "stream_options": {"angles": [45, 90, 135]}}
FINISHED, INTERRUPTED, NO_CHECKPOINTS = 1, 2, 3    # the template's runs


def stop_in_task_2(progress) -> None:
    """A Ctrl-C halfway through task 2."""
    if progress.step == STEPS + 2:
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store (and its checkpoints folder) with: #1 finished with the default checkpoints (a checkpoint after every
    task, on this tiny backbone); #2 interrupted in its second task (a checkpoint after task 1); #3 finished
    without checkpoints."""
    folder = tmp_path_factory.mktemp("lineage")
    store = Store(str(folder / "runs.db"))
    with pytest.MonkeyPatch.context() as patch:
        use_few_test_digits(patch)
        for kept in ({}, {"checkpoints": "latest"}, {"checkpoints": "none"}):
            rid = store.create_run(resolve({**TINY, **kept}).to_dict())
            execute(store, rid, progress=stop_in_task_2 if rid == INTERRUPTED else None)
    assert [r["status"] for r in store.runs()] == ["finished", "interrupted", "finished"]
    _engine(store.url).dispose()   # the WAL into the file: the folder can be copied as it is
    return folder


@pytest.fixture
def lineage_db(template, tmp_path, monkeypatch) -> str:
    """A copy of the template store for one test; runs are queued but never started."""
    shutil.copytree(template, tmp_path / "s")
    no_starts(monkeypatch)
    return str(tmp_path / "s" / "runs.db")


def test_resume_button_queues_an_interrupted_run_from_its_last_checkpoint(lineage_db, monkeypatch):
    at = app(lineage_db, monkeypatch, runs=[INTERRUPTED])
    button = at.button(key="runs-resume")
    assert button.label == "Resume 1 stopped" and not button.disabled
    button.click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = Store(lineage_db).get_run(INTERRUPTED)
    assert (run["status"], run["resume_task"], run["step"], run["resumes"]) == ("queued", 1, STEPS, 1)
    assert [s.value for s in at.success] == [
        f"Resumed #{INTERRUPTED} from its checkpoint after task 1; the rows of each unfinished task were "
        "dropped, so nothing counts twice."]
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[INTERRUPTED, "status"] == "queued"
    assert table.loc[INTERRUPTED, "lineage"] == "resumed 1× · continues after task 1"


def test_resume_button_says_which_runs_it_could_not_resume(lineage_db, monkeypatch):
    Store(lineage_db).update_run(NO_CHECKPOINTS, status="failed", launcher="ray")   # its node has the checkpoints
    at = app(lineage_db, monkeypatch, runs=[INTERRUPTED, NO_CHECKPOINTS])
    at.button(key="runs-resume").click().run()
    assert [s.value for s in at.success] == [
        f"Resumed #{INTERRUPTED} from its checkpoint after task 1; the rows of each unfinished task were "
        "dropped, so nothing counts twice."]
    (error,) = [e.value for e in at.error]
    assert error.startswith(f"run {NO_CHECKPOINTS} ran on a ray cluster")
    assert Store(lineage_db).get_run(NO_CHECKPOINTS)["status"] == "failed"


def test_resume_button_is_off_for_runs_that_did_not_stop(lineage_db, monkeypatch):
    at = app(lineage_db, monkeypatch, runs=[FINISHED])
    assert at.button(key="runs-resume").disabled


def test_what_if_forks_a_finished_run_with_the_changed_option(lineage_db, monkeypatch):
    at = app(lineage_db, monkeypatch, runs=[FINISHED])
    key = f"fork{FINISHED}"
    assert at.selectbox(key=f"{key}-after").options == ["after task 1", "after task 2"]
    at.selectbox(key=f"{key}-after").set_value(1)
    at.number_input(key=f"{key}-replay").set_value(64).run()
    at.button(key=f"{key}-button").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    store = Store(lineage_db)
    (fork,) = [r for r in store.runs() if r["parent_id"]]
    assert (fork["parent_id"], fork["fork_task"], fork["status"]) == (FINISHED, 1, "queued")
    assert fork["config"]["replay"] == 64 and fork["config"]["method"] == "lora"
    assert at.session_state["selected"] == [FINISHED, fork["id"]]      # parent and fork, ready for Compare
    assert [s.value for s in at.success] == [f"Started run #{fork['id']} from #{FINISHED}'s state after task 1 "
                                             "with replay=64; parent and fork are selected."]
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[fork["id"], "lineage"] == f"fork of #{FINISHED} after task 1"
    assert table.loc[FINISHED, "lineage"] == ""

    # the same fork asked for again (a double click) is the same run
    at = app(lineage_db, monkeypatch, runs=[FINISHED])
    at.selectbox(key=f"{key}-after").set_value(1)
    at.number_input(key=f"{key}-replay").set_value(64).run()
    at.button(key=f"{key}-button").click().run()
    assert len(store.runs()) == 4 and at.session_state["selected"] == [FINISHED, fork["id"]]


def test_what_if_offers_every_task_of_a_run_with_the_default_checkpoints(lineage_db, monkeypatch):
    """A run on a shipped tiny backbone keeps every task's checkpoint unless told otherwise, so the form offers a
    fork after each task but the last, and says nothing about checkpoints that were not kept."""
    assert Store(lineage_db).get_run(FINISHED)["config"]["checkpoints"] == "all"
    at = app(lineage_db, monkeypatch, runs=[FINISHED])
    assert at.selectbox(key=f"fork{FINISHED}-after").options == ["after task 1", "after task 2"]
    assert not [c.value for c in at.caption if "Checkpoints kept after" in c.value]
    # a run with checkpoints latest offers its last task only, and says why (checkpoints after task 1 of 3)
    store = Store(lineage_db)
    latest = store.create_run(resolve({**TINY, "checkpoints": "latest", "seed": 1}).to_dict())
    use_few_test_digits(monkeypatch)
    assert execute(store, latest) == "finished"
    at = app(lineage_db, monkeypatch, runs=[latest])
    assert at.selectbox(key=f"fork{latest}-after").options == ["after task 2"]
    assert [c.value for c in at.caption if "Checkpoints kept after" in c.value] == [
        "Checkpoints kept after task 2 only (checkpoints 'all' keeps one after every task)."]


def test_what_if_says_a_new_method_starts_on_the_merged_weights(lineage_db, monkeypatch):
    at = app(lineage_db, monkeypatch, runs=[FINISHED])
    assert not at.info
    at.selectbox(key=f"fork{FINISHED}-method").set_value("dora").run()
    (note,) = [i.value for i in at.info]
    assert note.startswith(f"DoRA starts on run #{FINISHED}'s merged weights after task 2")
    at.button(key=f"fork{FINISHED}-button").click().run()
    fork = Store(lineage_db).runs()[-1]
    assert (fork["method"], fork["parent_id"], fork["fork_task"]) == ("dora", FINISHED, 2)


@pytest.mark.parametrize("other, sentence", [
    ('{"steps_per_task": 8}', "steps_per_task cannot change at a fork"),
    ('{"lr": -1}', "learning rate must be a number > 0.0 and <= 10.0 (got -1.0)."),   # under the field, its label
    ('{"lr": 0.01', "other options must be a JSON object"),
])
def test_what_cannot_fork_is_one_sentence_under_its_field_and_creates_nothing(lineage_db, monkeypatch, other, sentence):
    at = app(lineage_db, monkeypatch, runs=[FINISHED])
    at.text_area(key=f"fork{FINISHED}-other").input(other).run()
    at.button(key=f"fork{FINISHED}-button").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and sentence in errors[0], errors
    assert len(Store(lineage_db).runs()) == 3 and not at.success


def test_a_run_without_checkpoints_offers_no_fork_and_says_why(lineage_db, monkeypatch):
    at = app(lineage_db, monkeypatch, runs=[NO_CHECKPOINTS])
    assert not [b for b in at.button if b.key == f"fork{NO_CHECKPOINTS}-button"]
    assert any(f"Run #{NO_CHECKPOINTS} kept no checkpoint before its last task (it ran with checkpoints 'none')"
               in c.value for c in at.caption)


def test_sidebar_toggle_switches_automatic_resume_in_the_store(lineage_db, monkeypatch):
    at = app(lineage_db, monkeypatch)
    toggle = at.sidebar.toggle[0]
    assert toggle.label == "Resume interrupted runs automatically" and toggle.value is False
    toggle.set_value(True).run()
    assert Store(lineage_db).get_setting(recovery.AUTO_RESUME_SETTING) == "on" and at.sidebar.toggle[0].value
    at.sidebar.toggle[0].set_value(False).run()
    assert Store(lineage_db).get_setting(recovery.AUTO_RESUME_SETTING) == "off"


def fork_point(spec: dict) -> tuple[list[float], list[str]]:
    """The y of each dashed line drawn on a heatmap figure, and its annotations' texts."""
    lines = [s["y0"] for s in spec["layout"].get("shapes", []) if s.get("line", {}).get("dash") == "dash"]
    return lines, [a["text"] for a in spec["layout"].get("annotations", [])]


def test_compare_draws_a_fork_beside_its_parent_with_the_fork_point_marked(lineage_db, monkeypatch):
    store = Store(lineage_db)
    use_few_test_digits(monkeypatch)
    fork = lineage.fork(store, FINISHED, 1, {"replay": 64}, start=False)
    assert execute(store, fork) == "finished"

    at = app(lineage_db, monkeypatch, "pages/compare.py", runs=[fork])   # the fork alone: Compare offers its parent
    add = at.button(key="cmp-add-parents")
    assert add.label == f"Add #{FINISHED}"
    add.click().run()
    assert not at.exception and at.session_state["selected"] == [FINISHED, fork]

    heatmaps = [s for s in charts(at) if s["data"][0]["type"] == "heatmap" and s["data"][0].get("zmin") == 0]
    assert len(heatmaps) == 2
    parent_fig, fork_fig = heatmaps        # in one row, the parent first
    assert fork_point(parent_fig) == ([], [])
    assert fork_point(fork_fig) == ([1.5], [f"fork of #{FINISHED} after task 1"])   # under row "after T1"
    assert list(fork_fig["data"][0]["y"]) == ["before", "after T1", "after T2", "after T3"]
    parent_z, fork_z = array(parent_fig["data"][0]["z"]), array(fork_fig["data"][0]["z"])
    np.testing.assert_array_equal(fork_z[:2], parent_z[:2])      # above the line: the parent's own rows

    diff = [s for s in charts(at) if s["layout"].get("title", {}).get("text", "").startswith("A − B")]
    assert len(diff) == 1   # fork − parent at first: zero above the fork point
    np.testing.assert_array_equal(array(diff[0]["data"][0]["z"])[:2], 0)
