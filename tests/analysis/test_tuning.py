"""The tuned regime's search (cldash.analysis.tuning): what it varies, how it picks the best trial, and that the
same seed gives the same best configuration (tiny budgets: 2 trials of a few steps; the full study is bench/'s)."""

import json
import math

import pytest

from cldash.analysis import tuning as T
from cldash.cli import main
from cldash.store import Store

TINY = {"method": "codyra", "stream": "digits-rotate", "stream_options": {"angles": [30.0, 60.0]},
        "steps_per_task": 4, "eval_interval": 0, "spectra_interval": 0, "dense_spectra_interval": 0,
        "checkpoints": "none"}


def row(number, acc, la, state="complete"):
    return {"number": number, "params": {"lr": 0.001 * (number + 1)}, "state": state, "run": number + 1,
            "acc": acc, "la": la, "forgetting": la - acc}


def test_the_best_trial_is_the_best_accuracy_among_those_that_learn():
    """A trial that forgets nothing because it learns nothing cannot win: only trials whose LA is within
    LA_WINDOW of the search's best compete on validation ACC."""
    trials = [row(0, acc=0.60, la=0.70), row(1, acc=0.55, la=0.90), row(2, acc=0.58, la=0.88),
              row(3, acc=0.99, la=0.99, state="failed"), row(4, acc=math.nan, la=math.nan)]
    assert T.choose_best(trials)["number"] == 2          # 0 has the best ACC but learns 0.20 less than 1
    assert T.choose_best([row(0, 0.5, 0.9), row(1, 0.5, 0.9)])["number"] == 0   # a tie: the earlier trial
    assert T.choose_best([]) is None


def test_the_search_space_is_the_same_kind_for_every_method_and_never_a_fixed_option():
    lora, codyra = T.space({"method": "lora"}), T.space({"method": "codyra"})
    assert [p.name for p in lora] == ["lr", "lr_schedule"]
    assert [p.name for p in codyra] == ["lr", "lr_schedule", "kappa_max", "dense_fraction"]
    assert (lora[0].low, lora[0].high, lora[0].kind) == (1e-4, 3e-2, "log")
    fixed = T.space({"method": "slice", "method_options": {"init_form": "authors"}})
    assert [p.name for p in fixed] == ["lr", "lr_schedule", "stable_gamma"]   # the claim fixes the init form
    assert "replay" in [p.name for p in T.space({"method": "lora", "replay": 200})]
    from cldash.methods import REGISTRY

    assert all(len(cls.search_space) <= 2 for cls in REGISTRY.values())


def test_a_search_is_named_by_what_it_tunes_its_budget_and_its_seed():
    name = T.study_name(TINY, 2, 0)
    assert name == T.study_name({**TINY, "eval_interval": 7, "name": "x"}, 2, 0)   # what does not change learning
    assert len({name, T.study_name(TINY, 3, 0), T.study_name(TINY, 2, 1), T.study_name({**TINY, "lr": 0.1}, 2, 0)}) == 4


def test_trial_values_set_run_fields_and_method_options():
    v = T.trial_values(TINY, {"lr": 0.002, "lr_schedule": "cosine", "kappa_max": 0.01})
    assert v["lr"] == 0.002 and v["lr_schedule"] == "cosine" and v["method_options"] == {"kappa_max": 0.01}
    assert "method_options" not in TINY


def test_the_same_seed_gives_the_same_best_configuration_on_validation_data(tmp_path):
    first = Store(tmp_path / "a.db")
    a = T.search(first, TINY, trials=2, seed=3, poll=0.2)
    b = T.search(Store(tmp_path / "b.db"), TINY, trials=2, seed=3, poll=0.2)
    assert a["best"] == b["best"] and [t["params"] for t in a["trials"]] == [t["params"] for t in b["trials"]]
    assert set(a["best"]["params"]) == {"lr", "lr_schedule", "kappa_max", "dense_fraction"}
    assert 1e-4 <= a["best"]["params"]["lr"] <= 3e-2
    runs = first.runs()
    # the trials ran on held-out training data at the tuning seeds, never on the test sets or a verdict's seeds
    assert {r["config"]["validation"] for r in runs} == {T.VALIDATION}
    assert {r["config"]["seed"] for r in runs} == set(T.TUNE_SEEDS) and len(runs) == 2 + 2
    assert all(r["group_key"] == f"tune:{a['study']}" for r in runs)
    assert set(a["spread"]) == {str(s) for s in T.TUNE_SEEDS} and a["finished"]
    # the search lives in the store: asked again, it finds its trials and runs nothing new
    again = T.search(Store(tmp_path / "a.db"), TINY, trials=2, seed=3, poll=0.2)
    assert again["best"] == a["best"] and len(first.runs()) == 4
    assert T.best_params(first, TINY, 2, 3) == a["best"]["params"]
    assert [s["study"] for s in T.searches(first)] == [a["study"]]
    assert json.loads(first.get_setting(T.PREFIX + a["study"]))["trials_budget"] == 2


@pytest.mark.parametrize("argv, sentence", [
    (["tune", "--method", "lora", "--trials", "0"], "--trials must be at least 1"),
    (["tune", "--claim", "nope"], "unknown claim 'nope'"),
    (["tune", "--method", "nope"], "unknown method 'nope'"),
    (["tune", "--claim", "slice-adversarial", "--stream", "digits-permute"], "does not carry over"),
])
def test_tune_refuses_bad_input_in_one_sentence_before_anything_runs(tmp_path, capsys, argv, sentence):
    db = tmp_path / "t.db"
    assert main(["--db", str(db), *argv]) == 2
    assert sentence in capsys.readouterr().err and not db.exists()
