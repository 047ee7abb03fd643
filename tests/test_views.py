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


def test_claim_values_table_has_a_row_per_metric_and_label_with_mean_and_sd():
    from cldash.claims import Check, Claim, RunSpec
    from cldash.views import claim_run_ids, claim_seeds, claim_values_table

    claim = Claim("t", "a paper", "B forgets less than A.", "digits-rotate",
                  {"A": RunSpec("lora"), "B": RunSpec("lora", {"rank": 1})},
                  (Check("forgetting", "B", "less", "A"),), ("Compare", "forgetting"))
    verdict = {"runs": {"A": {0: 3, 1: 5, 2: 7}, "B": {0: 4, 2: 8}},
               "values": {"A": {"forgetting": {0: 0.6, 1: 0.7, 2: 0.65}, "acc": {0: 0.5, 1: 0.4, 2: 0.6}},
                          "B": {"forgetting": {0: 0.5, 2: float("nan")}, "acc": {0: 0.3, 2: 0.2}}}}
    table = claim_values_table(claim, verdict)
    # the checked metric first, then the others; one row per label
    assert list(zip(table["metric"], table["run"])) == [("forgetting", "A"), ("forgetting", "B"), ("acc", "A"),
                                                        ("acc", "B")]
    a = table.iloc[0]
    assert [a["seed 0"], a["seed 1"], a["seed 2"]] == [0.6, 0.7, 0.65]
    assert a["mean"] == pytest.approx(0.65) and a["sd"] == pytest.approx(0.05)
    assert a["mean ± sd"] == "0.650 ± 0.050" and a["run ids"] == "#3, #5, #7"
    b = table.iloc[1]     # a missing seed and a NaN value: the mean of what there is, no sd from one value
    assert math.isnan(b["seed 1"]) and b["mean"] == pytest.approx(0.5) and math.isnan(b["sd"])
    assert b["mean ± sd"] == "0.500" and b["run ids"] == "#4, #8"
    assert table.iloc[2]["what"] == "final average accuracy (ACC)"
    assert claim_seeds(verdict) == 2 and claim_run_ids(verdict) == [3, 4, 5, 7, 8]
    assert claim_seeds({"runs": {"A": {}, "B": {}}}) == 0


def test_paper_is_common_when_no_paper_preset_applies():
    from cldash.claims import get_claim
    from cldash.views import paper_is_common

    assert paper_is_common(get_claim("study-rank"))          # LoRA only, each method its own authors' preset
    assert not paper_is_common(get_claim("eblora-spectrum"))  # paper:eblora for every run


def test_id_ranges():
    from cldash.text import id_ranges

    assert [id_ranges([4]), id_ranges([4, 5, 6]), id_ranges([4, 7, 9])] == ["#4", "#4 to #6", "#4, #7, #9"]
