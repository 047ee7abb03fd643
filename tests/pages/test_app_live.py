"""The Live page under AppTest on a store of fixed runs: an overview row per run, and the charts of one run below
it, the row selected."""

import json
import os
import socket

import pytest

from cldash.store import Store

from test_app import app, no_starts
from test_live_overview import live_run


@pytest.fixture
def live_db(tmp_path, monkeypatch):
    """Three runs of three tasks: #1 finished, #2 running in task 2 (alive: this process), #3 finished, its last
    evaluation the row after task 1 (so its score is task 1's)."""
    no_starts(monkeypatch)
    db = tmp_path / "live.db"
    store = Store(str(db))
    live_run(store, [(0, 0, True, [0.1, 0.1, 0.1, 0.9]), (10, 1, True, [0.9, 0.2, 0.1, 0.8]),
                     (20, 2, True, [0.6, 0.9, 0.2, 0.7]), (30, 3, True, [0.5, 0.7, 0.9, 0.6])],
             status="finished", step=30, task=3)
    running = live_run(store, [(0, 0, True, [0.1, 0.1, 0.1, 0.9]), (5, 1, False, [0.5, 0.1, 0.1, 0.9]),
                               (10, 1, True, [0.8, 0.1, 0.2, 0.8]), (15, 2, False, [0.7, 0.4, 0.2, 0.8])],
                       step=15, task=2)
    store.update_run(running, pid=os.getpid(), host=socket.gethostname())
    live_run(store, [(0, 0, True, [0.2, 0.2, 0.2, 0.9]), (10, 1, True, [0.6, 0.2, 0.2, 0.8])],
             status="finished", step=30, task=3, method="full")
    return db


def titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]


def test_the_overview_has_a_row_per_run_with_its_progress_task_and_score(live_db, monkeypatch):
    at = app(live_db, monkeypatch, "pages/live.py")
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe) == 1 and at.dataframe[0].key == "live-overview"
    df = at.dataframe[0].value
    assert df.id.tolist() == [1, 2, 3] and df.status.tolist() == ["finished", "running", "finished"]
    assert df.progress.tolist() == pytest.approx([1.0, 0.5, 1.0])
    assert df.task.tolist() == ["3/3 · rotate 180°", "2/3 · rotate 90°", "3/3 · rotate 180°"]
    assert df.score.tolist() == pytest.approx([0.7, 0.55, 0.6])
    assert [list(v) for v in df["each task now"]] == [pytest.approx(x) for x in
                                                     ([0.5, 0.7, 0.9], [0.7, 0.4, 0.2], [0.6, 0.2, 0.2])]
    # nothing selected: the running run's charts, and only its
    assert len(at.subheader) == 1 and at.subheader[0].value.startswith("#2 ")
    assert [t.key for t in at.toggle if str(t.key).startswith("log-")] == ["log-2"]
    assert "score 0.550: accuracy at step 15, mean of tasks 1 to 2" in " ".join(c.value for c in at.caption)
    assert {"training loss", "accuracy matrix so far"} <= set(titles(at))


@pytest.mark.parametrize("row, run", [(0, 1), (2, 3)])
def test_selecting_a_row_draws_that_runs_charts_and_only_its(live_db, monkeypatch, row, run):
    at = app(live_db, monkeypatch, "pages/live.py")
    at.session_state["live-overview"] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.subheader) == 1 and at.subheader[0].value.startswith(f"#{run} ")
    assert [t.key for t in at.toggle if str(t.key).startswith("log-")] == [f"log-{run}"]
    keys = [c.proto.id for c in at.get("plotly_chart")]
    assert len(keys) == 3 and all(f"-{run}" in k for k in keys), keys
    at.run()                                  # a refresh (the fragment's, or any rerun) keeps the selection
    assert at.subheader[0].value.startswith(f"#{run} ")
