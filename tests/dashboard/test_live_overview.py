"""The Live page's overview table (views.live_overview, views.watched_run) on a store filled with fixed runs."""

import math

import pandas as pd
import pytest

from cldash.config import resolve
from cldash.dashboard.views import LiveCache, live_overview, watched_run
from cldash.store import Store

TASKS = [{"position": p, "name": f"rotate {a}°", "kind": "stream"} for p, a in ((1, 0), (2, 90), (3, 180))] + \
    [{"position": 0, "name": "general", "kind": "general"}]


def live_run(store, evals, status="running", step=0, task=0, method="lora"):
    """A stored run of 3 tasks of 10 steps with the given evaluations: (step, trained through, final,
    [score of tasks 1, 2, 3, general])."""
    config = resolve({"method": method, "steps_per_task": 10,
                      "stream_options": {"angles": [0, 90, 180]}}).to_dict()
    rid = store.create_run(config, status=status)
    store.write_structure(rid, TASKS, [])
    w = store.writer(rid)
    for at, through, final, scores in evals:
        for pos, v in zip([1, 2, 3, 0], scores):
            w.evaluation(at, through, pos, {"accuracy": v}, final)
    w.flush(step=step, total_steps=30, task=task, num_tasks=3)
    return rid


@pytest.fixture
def store(db):
    store = Store(db)
    # finished: its last evaluation is the row of R after task 3
    live_run(store, [(0, 0, True, [0.1, 0.1, 0.1, 0.9]), (10, 1, True, [0.9, 0.2, 0.1, 0.8]),
                     (20, 2, True, [0.6, 0.9, 0.2, 0.7]), (30, 3, True, [0.5, 0.7, 0.9, 0.6])],
             status="finished", step=30, task=3)
    # running in task 2: its last evaluation is an anytime one at step 15 (trained through task 2)
    live_run(store, [(0, 0, True, [0.1, 0.1, 0.1, 0.9]), (5, 1, False, [0.5, 0.1, 0.1, 0.9]),
                     (10, 1, True, [0.8, 0.1, 0.2, 0.8]), (15, 2, False, [0.7, 0.4, 0.2, 0.8])],
             step=15, task=2)
    # queued: nothing written yet but its tasks
    live_run(store, [], status="queued")
    # running, scored only before training (row 0): no task trained, so no score yet
    live_run(store, [(0, 0, True, [0.1, 0.2, 0.3, 0.9])], step=2, task=1)
    return store


def test_one_row_per_run_with_progress_task_and_the_latest_score(store):
    runs = store.runs()
    caches: dict[int, LiveCache] = {}
    df = live_overview(store, runs, caches).set_index("id")
    assert list(df.index) == [1, 2, 3, 4] and sorted(caches) == [1, 2, 3, 4]
    assert df.status.tolist() == ["finished", "running", "queued", "running"]
    assert df.progress.tolist() == pytest.approx([1.0, 0.5, 0.0, 2 / 30])
    assert df.task.tolist() == ["3/3 · rotate 180°", "2/3 · rotate 90°", "", "1/3 · rotate 0°"]
    # the mean over the tasks trained so far at the latest evaluation: all three for #1, tasks 1 and 2 for #2
    assert df.score[1] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert df.score[2] == pytest.approx((0.7 + 0.4) / 2)      # the anytime one at step 15, not R's row 1
    assert math.isnan(df.score[3]) and math.isnan(df.score[4])
    assert df["each task now"][1] == pytest.approx([0.5, 0.7, 0.9])   # the general task is not a bar
    assert df["each task now"][2] == pytest.approx([0.7, 0.4, 0.2])
    assert all(math.isnan(v) for v in df["each task now"][3]) and len(df["each task now"][3]) == 3
    assert df["evaluated at"].tolist()[:2] == [30, 15] and pd.isna(df["evaluated at"][3])
    assert df.metric.unique().tolist() == ["accuracy"]
    assert df["scored tasks"].tolist() == [3, 2, 0, 0]
    assert df.run[1].startswith("#1 ") and df.label[1].startswith(df.run[1].split(" ")[0])


def test_a_refresh_reads_only_the_new_evaluations_and_moves_the_score(store):
    runs = store.runs(ids=[2])
    caches: dict[int, LiveCache] = {}
    live_overview(store, runs, caches)
    seen = len(caches[2].evals)
    w = store.writer(2)
    for pos, v in zip([1, 2, 3, 0], [0.6, 0.8, 0.2, 0.7]):
        w.evaluation(20, 2, pos, {"accuracy": v}, True)
    w.flush(step=20, task=2)
    df = live_overview(store, store.runs(ids=[2]), caches)
    assert len(caches[2].evals) == seen + 4                    # the four new rows, added to those cached
    assert df.score[0] == pytest.approx(0.7) and df.progress[0] == pytest.approx(20 / 30)
    assert df["evaluated at"][0] == 20


@pytest.mark.parametrize("selected, watched", [([], 2), ([0], 1), ([2], 3), ([9], 2)])
def test_the_watched_run_is_the_selected_row_else_the_first_running_one(store, selected, watched):
    df = live_overview(store, store.runs(), {})
    assert watched_run(df, selected) == watched


def test_without_running_runs_the_first_queued_then_the_newest_is_watched(store):
    df = live_overview(store, store.runs(), {})
    assert watched_run(df[df.status != "running"], []) == 3
    assert watched_run(df[df.status == "finished"].assign(id=[7]), []) == 7
    assert watched_run(df.iloc[:0], []) is None
