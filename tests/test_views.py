"""Page data: compare tables and seed statistics, incremental live queries."""

import math

import numpy as np
import pytest

from cldash.config import resolve
from cldash.store import Store
from cldash.views import LiveCache, compare_data, setting_key, setting_label


def fake_run(store, seed, scores, steps=10):
    """A stored run with a given final matrix (rows 0..T) and general column."""
    cfg = resolve({"method": "lora", "seed": seed, "steps_per_task": steps,
                   "stream_options": {"angles": [45, 90]}}).to_dict()
    rid = store.create_run(cfg, status="running")
    store.write_structure(rid, [{"position": 1, "name": "a", "kind": "stream"},
                                {"position": 2, "name": "b", "kind": "stream"},
                                {"position": 0, "name": "general", "kind": "general"}], [])
    w = store.writer(rid)
    for i, row in enumerate(scores):
        for pos, v in zip([1, 2, 0], row):
            w.evaluation(steps * i, i, pos, {"accuracy": v}, True)
    w.flush(num_tasks=2)
    return rid


def test_compare_data_metrics_and_seed_spread(db):
    store = Store(db)
    a = fake_run(store, 0, [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7], [0.5, 0.9, 0.6]])
    b = fake_run(store, 1, [[0.1, 0.2, 0.9], [0.9, 0.3, 0.8], [0.7, 0.9, 0.7]])
    data = compare_data(store, [a, b])
    m = data.metrics.set_index("id")
    assert m.loc[a, "bwt"] == pytest.approx(0.5 - 0.8)
    assert m.loc[b, "bwt"] == pytest.approx(0.7 - 0.9)
    assert m.loc[a, "general_retention"] == pytest.approx(0.6 / 0.9)
    (row,) = data.by_setting.to_dict("records")
    assert row["seeds"] == 2
    assert row["bwt"] == pytest.approx(-0.25) and row["bwt_std"] == pytest.approx(np.std([-0.3, -0.2], ddof=1))
    assert setting_key(store.get_run(a)["config"]) == setting_key(store.get_run(b)["config"])
    assert setting_label(store.get_run(a)["config"]) == "lora r=8 single · digits-rotate"


def test_unfinished_run_has_undefined_metrics_until_its_matrix_is_complete(db):
    store = Store(db)
    rid = fake_run(store, 0, [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7]])
    m = compare_data(store, [rid]).metrics.iloc[0]
    assert math.isnan(m["acc"]) and math.isnan(m["bwt"])


def test_live_cache_reads_only_new_rows(db):
    store = Store(db)
    rid = fake_run(store, 0, [[0.1, 0.2, 0.9]])
    w = store.writer(rid)
    cache = LiveCache(rid)
    for step in range(1, 6):
        w.scalar(step, "loss", 1.0 / step)
    w.flush()
    cache.update(store)
    assert cache.loss.step.tolist() == [1, 2, 3, 4, 5] and cache.last_loss_step == 5
    cache.update(store)
    assert len(cache.loss) == 5                       # nothing new, nothing added
    for step in range(6, 9):
        w.scalar(step, "loss", 0.1)
    w.evaluation(8, 1, 1, {"accuracy": 0.5}, False)
    w.flush()
    cache.update(store)
    assert cache.loss.step.tolist() == list(range(1, 9))
    assert cache.last_eval_step == 8 and len(cache.evals) == 4
