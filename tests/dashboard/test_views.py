"""Page data: compare tables and seed statistics, incremental live queries."""

import math

import numpy as np
import pandas as pd
import pytest

from cldash.config import resolve
from cldash.dashboard.labels import setting_key, setting_label
from cldash.dashboard.views import LiveCache, compare_data
from cldash.store import Store


def fake_run(store, seed, scores, steps=10, group=None, status="running", **cfg):
    """A stored run with a given final matrix (rows 0..T) and general column; config values (rank=..., lr=...)
    and a group key as given."""
    opts = {"rank": cfg.pop("rank")} if "rank" in cfg else {}
    config = resolve({"method": "lora", "seed": seed, "steps_per_task": steps, "method_options": opts,
                      "stream_options": {"angles": [45, 90]}, **cfg}).to_dict()
    rid = store.create_run(config, status=status, group_key=group)
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
    from cldash.analysis.claims import Check, Claim, RunSpec
    from cldash.dashboard.views import claim_run_ids, claim_seeds, claim_values_table

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
    from cldash.analysis.claims import get_claim, paper_is_common

    assert paper_is_common(get_claim("study-rank"))          # LoRA only, each method its own authors' preset
    assert not paper_is_common(get_claim("eblora-spectrum"))  # paper:eblora for every run


def test_claim_reported_table_gives_each_papers_number_with_its_unit_and_place(tmp_path):
    from cldash.analysis.claims import get_claim, verdict
    from cldash.dashboard.views import claim_reported_table
    from cldash.store import Store

    assert claim_reported_table({"reported": []}).columns.tolist() == ["quantity", "method", "value", "where"]
    rows = [{"quantity": "forgetting (X-TAIL)", "method": "CoDyRA", "value": 1.87, "unit": "%", "where": "page",
             "metric": "forgetting"},
            {"quantity": "drift", "method": "LoRA (r=16)", "value": 50.11, "unit": "", "where": "Table 5",
             "metric": ""}]
    table = claim_reported_table({"reported": rows})
    assert table["value"].tolist() == ["1.87 %", "50.11"] and table["where"].tolist() == ["page", "Table 5"]
    codyra = claim_reported_table(verdict(Store(str(tmp_path / "x.db")), get_claim("codyra-rank")))
    assert {"1.87 %", "14.86 %"} <= set(codyra["value"])


def _summary(method="codyra", options=None, finished=True, updated=1.0, acc=0.8):
    from cldash.analysis.claims import get_claim, run_values

    target = run_values(get_claim("codyra-rank"), "CoDyRA") if method == "codyra" else \
        {"method": method, "stream": "digits-rotate", "method_options": options or {}}
    trials = [{"number": 0, "params": {"lr": 0.001, "lr_schedule": "cosine"}, "state": "complete", "run": 4,
               "acc": acc, "la": 0.9, "forgetting": 0.2}]
    return {"study": f"tune-{method}-{updated}", "target": target, "trials_budget": 16, "trials": trials,
            "finished": finished, "best": {"params": trials[0]["params"], "trial": 0, "acc": acc, "la": 0.9,
                                           "forgetting": 0.2} if finished else None,
            "spread": {"100": acc, "101": acc + 0.02} if finished else {}, "spread_sd": 0.0141 if finished else None,
            "updated": updated}


def test_search_tables_and_lines_of_a_tuning_summary(tmp_path):
    from cldash.analysis.claims import get_claim
    from cldash.dashboard.views import (
        claim_searches,
        method_searches_table,
        params_text,
        search_best_text,
        search_trials_table,
    )

    assert params_text({"lr": 0.00123456, "lr_schedule": "cosine", "energy": 0.9}) == \
        "lr 0.00123 · lr_schedule cosine · energy 0.9"
    done, going = _summary(updated=1.0), _summary(finished=False, updated=2.0, acc=0.9)
    trials = search_trials_table(done)
    assert trials.columns.tolist() == ["trial", "params", "validation ACC", "LA", "forgetting", "state", "run"]
    assert trials.iloc[0].tolist() == [0, "lr 0.001 · lr_schedule cosine", 0.8, 0.9, 0.2, "complete", 4]
    assert search_best_text(done) == ("Search finished, 1 trials. Best: trial 0, lr 0.001 · lr_schedule cosine · "
                                      "validation ACC 0.800, LA 0.900, forgetting 0.200 · the best again at each "
                                      "tuning seed: 0.810 ± 0.014 over seeds 100, 101")
    assert search_best_text(going).startswith("Search running: 1 of 16 trials")
    # the finished search of a run wins over a newer one still going; a run without a search has None
    found = claim_searches(None, get_claim("codyra-rank"), [going, done])
    assert found["CoDyRA"] is done and found["LoRA r=4"] is None
    assert claim_searches(None, get_claim("codyra-rank"), [going])["CoDyRA"] is going
    table = method_searches_table([done, going, _summary("lora", {"rank": 4})], "codyra")
    assert table["tuned"].tolist() == ["lr 0.001 · lr_schedule cosine", ""]
    assert table["trials"].tolist() == ["1 of 16", "1 of 16 (running)"]
    assert table["spread"][0] == "0.810 ± 0.014 over seeds 100, 101"
    assert method_searches_table([done], "lora").empty


def test_id_ranges():
    from cldash.core.text import id_ranges

    assert [id_ranges([4]), id_ranges([4, 5, 6]), id_ranges([4, 7, 9])] == ["#4", "#4 to #6", "#4, #7, #9"]


# -- sweeps and groups ----------------------------------------------------------------------------
def grouped_run(store, seed, scores, group=None, status="finished", **cfg):
    """fake_run, finished by default, with its summary stored."""
    from cldash.measures.metrics import summarize

    rid = fake_run(store, seed, scores, group=group, status=status, **cfg)
    if status == "finished":
        R = np.array([row[:2] for row in scores])
        store.update_run(rid, summary=summarize(R, {"general": [row[2] for row in scores]}))
    return rid


FULL = [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7], [0.5, 0.9, 0.6]]


def test_setting_labels_tell_apart_settings_that_differ_only_in_an_unlabelled_option():
    from cldash.dashboard.labels import setting_labels

    cfg = lambda **kw: resolve({"method": "lora", **kw}).to_dict()   # noqa: E731
    configs = [cfg(lr=1e-3), cfg(lr=1e-2), cfg(lr=1e-3, seed=1), cfg(method_options={"rank": 4})]
    assert setting_labels(configs) == ["lora r=8 single · digits-rotate · lr=0.001",
                                       "lora r=8 single · digits-rotate · lr=0.01",
                                       "lora r=8 single · digits-rotate · lr=0.001",   # a seed of the first
                                       "lora r=4 single · digits-rotate"]
    assert setting_labels(configs[:1]) == ["lora r=8 single · digits-rotate"]        # nothing to tell apart


def test_mean_matrix_averages_each_cell_over_the_runs_that_have_its_row(db):
    from cldash.dashboard.views import mean_matrix

    store = Store(db)
    a = grouped_run(store, 0, FULL)
    b = grouped_run(store, 1, [[0.3, 0.4, 0.9], [0.6, 0.5, 0.5], [0.7, 0.7, 0.8]])
    c = grouped_run(store, 2, [[0.2, 0.3, 0.9]], status="running")       # only row 0 so far
    m = mean_matrix([store.accuracy_matrix(i) for i in (a, b, c)])
    assert m["rows"] == [0, 1, 2] and m["n"] == [3, 2, 2] and m["tasks"] == ["a", "b"]
    np.testing.assert_allclose(m["R"], [[0.2, 0.3], [0.7, 0.4], [0.6, 0.8]])
    np.testing.assert_allclose(m["general"]["general"], [0.9, 0.6, 0.7])
    assert m["sd"][0, 0] == pytest.approx(0.1) and m["sd"][1, 0] == pytest.approx(np.std([0.8, 0.6], ddof=1))


def test_a_group_compares_as_one_row_per_setting_with_its_seed_count(db):
    from cldash.dashboard.views import compare_summary, matrix_items

    store = Store(db)
    r4 = [grouped_run(store, s, FULL, group="sweep:ranks", rank=4) for s in range(3)]
    r8 = [grouped_run(store, s, [[0.1, 0.2, 0.9], [0.9, 0.3, 0.8], [0.7, 0.9, 0.7]], group="sweep:ranks", rank=8)
          for s in range(2)]
    grouped_run(store, 0, FULL, group="claims")
    ids = store.group_run_ids("sweep:ranks")
    assert ids == r4 + r8
    data = compare_data(store, ids)
    rows = data.by_setting.set_index("setting")
    assert rows["seeds"].to_dict() == {"lora r=4 single · digits-rotate": 3, "lora r=8 single · digits-rotate": 2}
    assert rows.loc["lora r=8 single · digits-rotate", "bwt"] == pytest.approx(0.7 - 0.9)
    assert rows.loc["lora r=4 single · digits-rotate", "bwt_std"] == pytest.approx(0.0)
    assert compare_summary(data) == "5 runs · 2 settings × 2 to 3 seeds · 5 finished"
    per_setting = matrix_items(data, per_setting=True)
    assert [(i["key"][:2], i["ids"]) for i in per_setting] == [("S-", r4), ("S-", r8)]
    assert per_setting[1]["title"] == "lora r=8 single · digits-rotate · mean of 2 seeds"
    np.testing.assert_allclose(per_setting[0]["matrix"]["R"], np.array(FULL)[:, :2])
    assert [i["key"] for i in matrix_items(data, per_setting=False)] == [f"R-{i}" for i in ids]
    assert matrix_items(data, per_setting=False)[0]["file"] == f"run-{ids[0]}-matrix"


def test_matrix_pages_cover_every_item_once():
    from cldash.dashboard.views import matrix_pages

    pages = matrix_pages(50, 12)
    assert [(p.start, p.stop) for p in pages] == [(0, 12), (12, 24), (24, 36), (36, 48), (48, 50)]
    assert [(p.start, p.stop) for p in matrix_pages(0, 12)] == [(0, 0)]
    assert len(matrix_pages(12, 12)) == 1


def test_groups_labels_sizes_and_filters(db):
    from cldash.dashboard.labels import group_label
    from cldash.dashboard.tables import runs_table
    from cldash.dashboard.views import filter_runs, group_sizes

    assert [group_label(k) for k in ("sweep:ranks", "claims", "demo-1f3a9c2e", "0123456789ab", None, "")] == \
        ["sweep ranks", "claims", "demo-1f3a9c2e", "launch 0123456789ab", "", ""]
    store = Store(db)
    a = grouped_run(store, 0, FULL, group="sweep:ranks")
    b = grouped_run(store, 0, FULL)
    c = grouped_run(store, 1, FULL, group="claims")
    d = grouped_run(store, 1, FULL, group="sweep:ranks", status="failed")
    runs = store.runs()
    # the group of the newest run first, from the listing and from the store alike
    assert group_sizes(runs) == store.run_groups() == [("sweep:ranks", 2), ("claims", 1)]
    assert [r["id"] for r in filter_runs(runs, group=["sweep:ranks"])] == [a, d]
    assert [r["id"] for r in filter_runs(runs, group=["", "claims"])] == [b, c]
    assert [r["id"] for r in filter_runs(runs, status=["finished"], group=["sweep:ranks"])] == [a]
    assert filter_runs(runs) == runs
    assert runs_table(runs)["group"].tolist() == ["sweep ranks", "", "claims", "sweep ranks"]


def test_accuracy_matrices_of_read_runs_match_the_store_s(db):
    store = Store(db)
    ids = [grouped_run(store, 0, FULL), grouped_run(store, 1, FULL[:2], status="running"),
           store.create_run(resolve({"method": "lora"}).to_dict())]      # queued: no tasks, no evaluations
    fast = store.accuracy_matrices_of(store.runs(ids=ids))
    for rid, m in store.accuracy_matrices(ids).items():
        assert (fast[rid]["rows"], fast[rid]["tasks"], list(fast[rid]["general"])) == \
            (m["rows"], m["tasks"], list(m["general"]))
        np.testing.assert_array_equal(fast[rid]["R"], m["R"])
        for name, col in m["general"].items():
            np.testing.assert_array_equal(np.asarray(fast[rid]["general"][name], float), np.asarray(col, float))
    assert fast[ids[1]]["rows"] == [0, 1] and fast[ids[2]]["R"].shape == (0, 0)


def test_matrices_table_holds_every_matrix_as_matrix_table_does(db):
    from cldash.dashboard.tables import matrices_table, matrix_table
    from cldash.dashboard.views import matrix_items

    store = Store(db)
    ids = [grouped_run(store, s, FULL, group="sweep:x") for s in range(2)] + \
        [grouped_run(store, 0, FULL[:2], status="running", rank=4)]
    items = matrix_items(compare_data(store, ids), per_setting=False)
    table = matrices_table(items)
    assert table["runs"].tolist() == ["#1"] * 3 + ["#2"] * 3 + ["#3"] * 2
    for item in items:
        part = table[table["matrix"] == item["title"]].drop(columns=["matrix", "runs"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(part, matrix_table(item["matrix"]), check_dtype=False)


def test_run_listing_is_the_runs_without_their_configs(db):
    from cldash.dashboard.tables import runs_table
    from cldash.dashboard.views import run_regime

    store = Store(db)
    grouped_run(store, 0, FULL, group="sweep:x")
    store.create_run(resolve({"method": "dora", "preset": "paper"}).to_dict(), status="queued")
    listing, runs = store.run_listing(), store.runs()
    assert [run_regime(r) for r in listing] == [run_regime(r) for r in runs] == ["common", "paper"]
    for lean, full in zip(listing, runs):
        assert "config" not in lean and {k: v for k, v in full.items() if k not in ("config", "versions")} == \
            {k: v for k, v in lean.items() if k != "regime"}
    pd.testing.assert_frame_equal(runs_table(listing), runs_table(runs))


def test_latest_run_ids_are_the_newest_in_id_order(db):
    store = Store(db)
    ids = [store.create_run(resolve({"method": "lora", "seed": s}).to_dict()) for s in range(5)]
    assert store.latest_run_ids(3) == ids[2:] and store.latest_run_ids(12) == ids
    assert Store(db + "-empty.db").latest_run_ids(12) == []


# -- lineage: resumed runs and forks --------------------------------------------------------------
def lineage_run(rid, parent=None, fork_task=None, status="finished", resumes=None, resume_task=None):
    return {"id": rid, "parent_id": parent, "fork_task": fork_task, "status": status, "resumes": resumes,
            "resume_task": resume_task}


def test_lineage_labels_say_where_a_run_comes_from():
    from cldash.dashboard.labels import lineage_label

    assert lineage_label(lineage_run(1)) == ""
    assert lineage_label(lineage_run(4, parent=3, fork_task=1, status="queued", resume_task=1)) == \
        "fork of #3 after task 1"    # a fork waiting to start: its fork point says where it continues
    assert lineage_label(lineage_run(2, resumes=2)) == "resumed 2×"
    assert lineage_label(lineage_run(2, status="queued", resumes=1, resume_task=2)) == \
        "resumed 1× · continues after task 2"
    assert lineage_label(lineage_run(2, status="queued", resumes=1, resume_task=0)) == \
        "resumed 1× · starts over (no checkpoint)"
    assert lineage_label(lineage_run(5, parent=4, fork_task=2, resumes=1)) == "fork of #4 after task 2 · resumed 1×"


def test_lineage_order_puts_each_fork_after_its_parent_and_rows_keep_them_together():
    from cldash.dashboard.views import lineage_order, lineage_roots, matrix_rows, missing_parents

    runs = [lineage_run(1), lineage_run(2), lineage_run(3, parent=1, fork_task=1), lineage_run(4),
            lineage_run(5, parent=3, fork_task=2), lineage_run(6, parent=9, fork_task=1)]
    assert [r["id"] for r in lineage_order(runs)] == [1, 3, 5, 2, 4, 6]   # a fork of a fork too
    roots = lineage_roots(runs)
    assert roots == {1: 1, 2: 2, 3: 1, 4: 4, 5: 1, 6: 6}   # #6's parent is not compared: it stands alone
    assert missing_parents(runs) == {6: 9}
    items = [{"ids": [r["id"]], "lineage": roots[r["id"]]} for r in lineage_order(runs)]

    def ids(rows):
        return [[item["ids"][0] for item in row] for row in rows]

    assert ids(matrix_rows(items, 3)) == [[1, 3, 5], [2, 4, 6]]
    assert ids(matrix_rows(items[3:] + items[:3], 3)) == [[2, 4, 6], [1, 3, 5]]
    assert ids(matrix_rows([items[3], *items[:2], items[4]], 2)) == [[2], [1, 3], [4]]   # not split over two rows
    assert ids(matrix_rows(items, 2)) == [[1, 3], [5], [2, 4], [6]]   # longer than a row: whole rows
    assert ids(matrix_rows(items, 1)) == [[1], [3], [5], [2], [4], [6]]
    assert [r["id"] for r in lineage_order([lineage_run(7, parent=8), lineage_run(8, parent=7)])] == [7, 8]


def test_compare_items_mark_a_fork_and_the_difference_starts_with_fork_minus_parent(db):
    from cldash.dashboard.views import difference_defaults, matrix_items

    store = Store(db)
    other = fake_run(store, 0, [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7], [0.5, 0.9, 0.6]], status="finished")
    parent = fake_run(store, 1, [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7], [0.5, 0.9, 0.6]], status="finished")
    fork = fake_run(store, 1, [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7], [0.7, 0.8, 0.6]], status="finished", replay=50)
    store.update_run(fork, parent_id=parent, fork_task=1)
    items = matrix_items(compare_data(store, [other, fork, parent]), per_setting=False)
    assert [item["ids"] for item in items] == [[other], [parent], [fork]]
    assert [(item["fork_after"], item["fork_note"]) for item in items] == [
        (None, ""), (None, ""), (1, f"fork of #{parent} after task 1")]
    assert difference_defaults(items) == (2, 1)             # A: the fork, B: its parent
    assert difference_defaults(items[:2]) == (0, 1)


def test_fork_changes_are_what_the_form_changed(db):
    from cldash.core.errors import ConfigError
    from cldash.dashboard.forks import fork_changes, fork_launch_key, starts_on_merged_weights

    parent = {"config": resolve({"method": "lora", "lr": 0.001, "replay": 0, "seed": 0}).to_dict()}
    same = {"method": "lora", "lr": "", "seed": 0, "replay": 0, "ewc_lambda": 0.0}
    assert fork_changes(parent, same) == {}
    assert fork_changes(parent, {**same, "lr": " 0.001 "}) == {}    # the parent's own value, typed
    assert fork_changes(parent, {**same, "lr": "0.01", "replay": 200}) == {"lr": "0.01", "replay": 200}
    assert fork_changes(parent, {**same, "seed": 1}, '{"batch_size": 32, "replay": 10}') == \
        {"seed": 1, "batch_size": 32, "replay": 10}                    # the JSON wins over a field
    for text, phrase in (('{"lr": ', "is not JSON"), ("[1, 2]", "(got list)")):
        with pytest.raises(ConfigError, match=phrase.replace("(", r"\(").replace(")", r"\)")) as exc:
            fork_changes(parent, same, text)
        assert exc.value.field == "other"
    assert not starts_on_merged_weights(parent, {"replay": 200, "lr": 0.01})
    assert starts_on_merged_weights(parent, {"method": "dora"})
    assert starts_on_merged_weights(parent, {"method_options": {"rank": 4}})
    assert not starts_on_merged_weights(parent, {"method_options": {"rank": 8}})   # the parent's own rank
    assert fork_launch_key(3, 1, {"replay": 200, "lr": 0.01}) == fork_launch_key(3, 1, {"lr": 0.01, "replay": 200})
    assert fork_launch_key(3, 1, {"replay": 200}) != fork_launch_key(3, 2, {"replay": 200})
    assert fork_launch_key(3, 1, {}).startswith("fork:3:1:")


def test_charts_name_a_run_by_its_method_and_key_options():
    from cldash.dashboard.labels import run_name, setting_name
    from cldash.methods import REGISTRY

    def cfg(method, policy="single", **extra):
        return {"method": method, "policy": policy, "stream": "digits-rotate", **extra}

    assert run_name({"id": 4, "config": cfg("lora", method_options={"rank": 8})}) == "#4 LoRA r=8"
    assert setting_name(cfg("lora", method_options={"rank": 16, "rslora": True})) == "rsLoRA r=16"
    assert setting_name(cfg("adalora", "merge", method_options={"init_r": 12, "target_r": 8})) == "AdaLoRA r=8 merge"
    assert setting_name(cfg("full", None, replay=200, replay_rule="balanced")) == "full FT + replay 200 (balanced)"
    assert setting_name(cfg("lora", preset="paper", method_options={"rank": 8})) == "LoRA r=8 [paper]"
    # every registered method has a short name, the start of its registry label
    names = {k: cls.display_name for k, cls in REGISTRY.items()}
    assert all(names.values())
    assert all(REGISTRY[k].label.startswith(v) for k, v in names.items() if k != "full")


def test_compare_data_gives_runs_and_settings_their_chart_name_and_colour(db):
    from cldash.dashboard.labels import run_color

    store = Store(db)
    a = fake_run(store, 0, [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7], [0.5, 0.9, 0.6]], rank=4)
    b = fake_run(store, 1, [[0.1, 0.2, 0.9], [0.9, 0.3, 0.8], [0.7, 0.9, 0.7]], rank=4)
    c = fake_run(store, 0, [[0.1, 0.2, 0.9], [0.9, 0.3, 0.8], [0.7, 0.9, 0.7]], rank=8, lr=0.01)
    d = fake_run(store, 0, [[0.1, 0.2, 0.9], [0.9, 0.3, 0.8], [0.7, 0.9, 0.7]], rank=8, lr=0.02)
    data = compare_data(store, [a, b, c, d])
    assert data.metrics["name"].tolist() == [f"#{a} LoRA r=4", f"#{b} LoRA r=4", f"#{c} LoRA r=8", f"#{d} LoRA r=8"]
    assert data.metrics["color"].tolist() == [run_color(i) for i in (a, b, c, d)]
    s = data.by_setting
    assert s["name"].tolist() == ["LoRA r=4", "LoRA r=8 · lr=0.01", "LoRA r=8 · lr=0.02"]   # told apart as long
    assert s["color"].tolist() == [run_color(a), run_color(c), run_color(d)]             # a setting: its first run's


def test_the_status_line_shows_one_step_for_a_stopped_run():
    from cldash.dashboard.views import status_line

    run = {"status": "cancelled", "step": 40, "total_steps": 15000, "task": 1, "num_tasks": 5,
           "error": "cancelled at step 41"}
    assert status_line(run) == (40 / 15000, "cancelled · step 40/15000 · task 1/5", "")
    assert status_line({**run, "status": "interrupted", "error": "interrupted (Ctrl-C) at step 41"})[2] == ""
    failed = {**run, "status": "failed", "error": "the loss became nan at step 40 (task 1)\ntraceback"}
    assert status_line(failed)[2] == "the loss became nan at step 40 (task 1)"
    assert status_line({"status": "queued", "step": None, "total_steps": None, "error": None}) == \
        (0.0, "queued · step 0/?", "")


def test_every_metric_has_its_formula_in_latex_and_in_plain_text():
    from cldash.measures.metrics import METRICS

    for m in METRICS:
        assert m.formula and m.latex and m.latex.count("{") == m.latex.count("}"), m.key
        assert "$" not in m.latex and "Σ" not in m.latex, m.key    # KaTeX source, not the plain form
    assert {m.key: m.latex for m in METRICS}["general_retention"] == r"\frac{G_T}{G_0}"
