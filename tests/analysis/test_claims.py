"""Claims as data: every decision rule on synthetic stores whose answer is known, and the claim table itself.

The stores hold finished run rows with summaries written by the test (no training): a verdict depends
only on the store, so the same store gives the same verdict.
"""

import math

import pytest

from cldash.analysis import claims as C
from cldash.analysis.claims import Check, Claim, RunSpec
from cldash.store import Store

CLAIM = Claim("test-forgets-less", "a test paper", "B forgets less than A.", "digits-rotate",
              {"A": RunSpec("lora", {"rank": 4, "alpha": 8.0}, {"policy": "merge"}),
               "B": RunSpec("lora", {"rank": 1, "alpha": 2.0}, {"policy": "merge"})},
              (Check("forgetting", "B", "less", "A"),), ("Compare", "forgetting"), paper_preset="paper:codyra")
KEEPS = Claim("test-keeps", "a test paper", "B keeps A's general retention.", "digits-rotate", CLAIM.runs,
              (Check("general_retention", "B", "keeps", "A", margin=0.05),), ("Compare", "general"))


def add(store, claim, label, seed, regime="common", status="finished", **summary):
    cfg = C.config(claim, label, regime, seed)
    rid = store.create_run(cfg, status=status, name=cfg["name"])
    store.update_run(rid, summary={"acc": 0.5, "la": 0.9, "forgetting": 0.5, "general_retention": 0.5, **summary})
    return rid


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "claims.db")


def fill(store, a, b, claim=CLAIM, key="forgetting", seeds=C.SEEDS, **extra):
    for s, (x, y) in zip(seeds, zip(a, b)):
        add(store, claim, "A", s, **{key: x})
        add(store, claim, "B", s, **{key: y}, **extra)


def test_holds_when_the_paired_interval_is_on_the_claimed_side(store):
    fill(store, [0.60, 0.70, 0.65], [0.50, 0.61, 0.54])
    v = C.verdict(store, CLAIM)
    assert v["verdict"] == "holds"
    (check,) = v["checks"]
    assert check["n"] == 3 and check["mean"] == pytest.approx(-0.1)
    assert check["high"] < 0
    assert v["runs"]["A"] and len(v["runs"]["B"]) == 3 and v["missing"] == 0


def test_the_opposite_does_not_hold(store):
    fill(store, [0.50, 0.61, 0.54], [0.60, 0.70, 0.65])
    v = C.verdict(store, CLAIM)
    assert v["verdict"] == "does not hold" and v["checks"][0]["state"] == "opposite"
    assert v["checks"][0]["verdict"] == "the opposite holds" and v["to_launch"] == []   # decided: no more seeds


def test_a_difference_inside_the_noise_is_not_enough_evidence_and_asks_for_the_next_seeds(store):
    fill(store, [0.60, 0.50, 0.70], [0.55, 0.60, 0.62])
    v = C.verdict(store, CLAIM)
    (check,) = v["checks"]
    assert v["verdict"] == "not enough evidence" and check["state"] == "undecided"
    assert check["low"] < 0 < check["high"] and "could detect a difference of" in check["why"]
    assert 0.1 < check["detectable"] < math.inf
    # the stopping rule: 3 seeds undecided -> seeds 3 and 4 of both runs (the schedule's next point, 5)
    assert v["seeds_wanted"] == 5 and sorted((c["method_options"]["rank"], c["seed"]) for c in v["to_launch"]) == \
        [(1, 3), (1, 4), (4, 3), (4, 4)]


def test_seeds_until_clear_stops_at_the_cap(store):
    """Undecided at every look: 3 -> 5 -> 7 -> 10 seeds, and at 10 nothing more is asked, whatever the answer."""
    noise = [0.05, -0.06, 0.04, -0.03, 0.02, -0.05, 0.06, -0.04, 0.03, -0.02, 0.01, -0.01]
    wanted, have = [], 3
    while True:
        for s in range(len(store.runs()) // 2, have):
            add(store, CLAIM, "A", s, forgetting=0.5)
            add(store, CLAIM, "B", s, forgetting=0.5 + noise[s])
        v = C.verdict(store, CLAIM)
        wanted.append(v["seeds_wanted"])
        if not v["to_launch"]:
            break
        have = v["seeds_wanted"]
    assert wanted == [5, 7, 10, 10] and v["verdict"] == "not enough evidence" and v["checks"][0]["n"] == 10


def test_no_difference_larger_than_delta_is_equivalence(store):
    fill(store, [0.500, 0.600, 0.550, 0.520, 0.580], [0.503, 0.598, 0.552, 0.519, 0.583], seeds=range(5))
    v = C.verdict(store, CLAIM)
    assert v["checks"][0]["state"] == "equivalent" and v["verdict"] == "does not hold"
    assert v["checks"][0]["delta"] == 0.02 and v["to_launch"] == []


def test_too_few_seeds_is_not_enough_evidence_and_lists_what_is_missing(store):
    fill(store, [0.60, 0.70], [0.50, 0.61], seeds=(0, 1))
    v = C.verdict(store, CLAIM)
    assert v["verdict"] == "not enough evidence" and v["checks"][0]["n"] == 2
    todo = v["to_launch"]
    assert [(c["method_options"]["rank"], c["seed"]) for c in todo] == [(4, 2), (1, 2)]


def test_a_failed_run_does_not_count_and_is_launched_again(store):
    fill(store, [0.60, 0.70], [0.50, 0.61], seeds=(0, 1))
    add(store, CLAIM, "A", 2, status="failed")
    add(store, CLAIM, "B", 2, status="running")
    assert C.verdict(store, CLAIM)["verdict"] == "not enough evidence"
    assert [(c["method_options"]["rank"], c["seed"]) for c in C.verdict(store, CLAIM)["to_launch"]] == [(4, 2)]
    ids = C.launch_missing(store, (CLAIM,), ("common",), start=False)
    assert len(ids) == 1 and store.get_run(ids[0])["status"] == "queued"
    assert C.launch_missing(store, (CLAIM,), ("common",), start=False) == []   # idempotent while queued


def test_only_runs_of_exactly_the_claims_configuration_count(store):
    fill(store, [0.60, 0.70, 0.65], [0.50, 0.61, 0.54])
    other = C.config(CLAIM, "B", "common", 0)
    other["lr"] = 0.05                      # another learning rate: another experiment
    rid = store.create_run(other, status="finished")
    store.update_run(rid, summary={"forgetting": 0.99})
    other = C.config(CLAIM, "B", "paper", 0)   # the paper regime's run is not a common-regime run
    rid = store.create_run(other, status="finished")
    store.update_run(rid, summary={"forgetting": 0.99})
    v = C.verdict(store, CLAIM)
    assert v["verdict"] == "holds" and rid not in v["runs"]["B"].values()
    assert C.verdict(store, CLAIM, "paper")["verdict"] == "not enough evidence"


def test_the_same_store_gives_the_same_verdict(store, tmp_path):
    fill(store, [0.60, 0.70, 0.65], [0.50, 0.61, 0.54])
    first = C.verdict(store, CLAIM)
    again = C.verdict(Store(tmp_path / "claims.db"), CLAIM)
    assert first == again


def test_keeps_is_a_non_inferiority_margin(store):
    fill(store, [0.50, 0.52, 0.49], [0.48, 0.50, 0.48], claim=KEEPS, key="general_retention")
    assert C.verdict(store, KEEPS)["verdict"] == "holds"          # 0.017 lower, inside the 0.05 margin


def test_keeps_fails_beyond_the_margin(store):
    fill(store, [0.50, 0.52, 0.49], [0.40, 0.41, 0.40], claim=KEEPS, key="general_retention")
    assert C.verdict(store, KEEPS)["verdict"] == "does not hold"


def test_the_guard_turns_a_check_on_a_run_that_did_not_learn_into_not_comparable(store):
    """B forgets less only because it learns nothing (LA 0.31 against 0.76): not holds, not comparable."""
    for s, (fa, fb) in enumerate([(0.6, 0.01), (0.7, 0.02), (0.65, 0.00)]):
        add(store, CLAIM, "A", s, forgetting=fa, la=0.76)
        add(store, CLAIM, "B", s, forgetting=fb, la=0.31)
    v = C.verdict(store, CLAIM)
    (check,) = v["checks"]
    assert check["state"] == "not comparable" and v["verdict"] == "not comparable" and v["to_launch"] == []
    assert "B learns too little (LA 0.31 against A's 0.76" in check["why"]
    # within the margin the same differences are read: the guard's margin is a parameter
    assert C.verdict(store, CLAIM, margin=0.5)["checks"][0]["state"] == "holds"


def test_a_stored_run_from_before_an_option_existed_still_matches(store):
    fill(store, [0.60, 0.70, 0.65], [0.50, 0.61, 0.54])
    for run in store.runs():
        cfg = dict(run["config"])
        cfg.pop("loss_classes")          # a run stored before the option was added
        store.engine.dispose()
        with store.engine.begin() as conn:
            from sqlalchemy import update

            from cldash.store import Run, _j
            conn.execute(update(Run).where(Run.id == run["id"]).values(config=_j(cfg)))
    assert C.verdict(store, CLAIM)["verdict"] == "holds"


def test_t_interval():
    d = C.paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert d["mean"] == 2.0 and d["sd"] == 1.0
    assert d["high"] - d["mean"] == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)
    assert C.paired({0: 1.0}, 0.0)["high"] == math.inf


@pytest.mark.parametrize("claim", C.CLAIMS, ids=lambda c: c.key)
def test_every_claim_is_well_formed_and_resolves_in_every_regime(claim):
    assert claim.statement and claim.paper and claim.look[0] in ("Spectra", "Compare", "Ranks", "Orders", "Live")
    for check in claim.checks:
        assert check.metric in C.METRICS and check.a in claim.runs and (check.b is None or check.b in claim.runs)
        assert check.relation in ("less", "greater", "keeps")
    assert len(C.SEEDS) >= 3
    for regime in ("common", "paper"):
        configs = [C.config(claim, label, regime, 0) for label in claim.runs]
        assert len({C.match_key(c) for c in configs}) == len(configs)     # distinct runs
        for cfg in configs:
            assert cfg["stream"] == claim.stream
            if regime == "common":
                assert cfg["preset"] == "common" and not cfg["regime"]["values"]
            else:
                assert cfg["preset"] == C.run_preset(claim, cfg["method"], "paper")
    assert C.get_claim(claim.key) is claim


def test_claims_cli(tmp_path, capsys):
    from cldash.cli import main

    db = str(tmp_path / "cli.db")
    store = Store(db)
    claim = C.get_claim("study-rank")
    for s in C.SEEDS:
        for label, f in (("LoRA r=1", 0.60), ("LoRA r=4", 0.65), ("LoRA r=16", 0.70)):
            add(store, claim, label, s, forgetting=f + 0.01 * s)
    assert main(["--db", db, "claims", "--claim", "study-rank", "--regime", "common"]) == 0
    out = capsys.readouterr().out
    assert "common  DOES NOT HOLD" in out and "the opposite holds" in out
    assert main(["--db", db, "claims", "--claim", "nope"]) == 2
    assert "unknown claim 'nope'" in capsys.readouterr().err


def test_the_adversarial_order_is_the_one_cldash_order_measures_on_the_shipped_backbone():
    from cldash.analysis.orders import measure

    result = measure({"stream": "digits-rotate"})
    assert result["ordered_options"]["angles"] == C.ADVERSARIAL_ROTATIONS
    assert result["cost"] < result["natural_cost"]


def test_keeps_says_whether_the_drop_is_beyond_the_margin_or_only_not_ruled_out(store):
    fill(store, [0.50, 0.52, 0.49], [0.47, 0.44, 0.48], claim=KEEPS, key="general_retention")
    check = C.verdict(store, KEEPS)["checks"][0]   # 0.04 lower, its interval past -0.05: neither side yet
    assert check["state"] == "undecided" and "could detect" in check["why"]


def trainable_per_task(cfg: dict) -> int:
    """What trains in the first task of a claim's run, counted after the method built its adapters."""
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun

    cfg = {**cfg, "steps_per_task": 1, "stream_options": {"angles": [36.0]}, "eval_interval": 0}
    crun = ContinualRun(resolve(cfg))
    counts, original = [], crun.method.before_task

    def before_task(ctx):
        original(ctx)
        counts.append(sum(p.numel() for p in crun.method.trainable_parameters()))
    crun.method.before_task = before_task
    crun.run()
    return counts[0]


def test_study_budget_compares_at_the_parameter_budget_it_names():
    """The claim is about a matched budget: its pinned options give each run about 7k trainable parameters a
    task on the shipped backbone, in both regimes (explicit options win over any preset)."""
    claim = C.get_claim("study-budget")
    for regime in ("common", "paper"):
        counts = {label: trainable_per_task(C.config(claim, label, regime, 0)) for label in claim.runs}
        assert counts == {"LoRA r=4": 7168, "WeGeFT": 7168, "LoRETTA": 6880}, regime


@pytest.mark.parametrize("key", ["slice-natural", "slice-adversarial"])
def test_slice_and_lora_ga_differ_only_in_the_surgery(key):
    """SLICE is LoRA-GA plus gradient surgery: at equal rank, alpha, init form and gradient estimate in every
    regime, and the same trainable budget."""
    claim = C.get_claim(key)
    for regime in ("common", "paper"):
        ga, sl = (C.config(claim, label, regime, 0) for label in ("LoRA-GA", "SLICE"))
        for name in C.GA:
            assert ga["method_options"][name] == sl["method_options"][name] == C.GA[name], (regime, name)
        assert ga["lr"] == sl["lr"] and ga["steps_per_task"] == sl["steps_per_task"]
    assert trainable_per_task(C.config(claim, "LoRA-GA", "paper", 0)) == \
        trainable_per_task(C.config(claim, "SLICE", "paper", 0))


def test_codyra_is_compared_with_lora_at_its_own_scale():
    """CoDyRA's update has no alpha (scale 1): the update-size checks compare it with LoRA r=16 at alpha 16, not
    with the alpha 2r LoRA of the rank question."""
    claim = C.get_claim("codyra-rank")
    same_scale = C.config(claim, "LoRA r=16 s=1", "common", 0)["method_options"]
    assert same_scale["alpha"] / same_scale["rank"] == 1.0
    for check in claim.checks:
        if check.metric in ("update_norm", "update_erank") and check.b and check.b.startswith("LoRA"):
            assert check.b == "LoRA r=16 s=1"


def test_every_forgets_less_is_paired_with_learns_no_less():
    for claim in C.CLAIMS:
        pairs = {(c.a, c.b) for c in claim.checks if c.metric == "la" and c.relation == "keeps"}
        for c in claim.checks:
            if c.metric == "forgetting" and c.relation == "less":
                assert (c.a, c.b) in pairs, (claim.key, c)


def test_eblora_without_f_never_grows_its_basis():
    """'EBLoRA no F' isolates the flat spectrum from the subspace memory: with energy 0 the basis stays empty."""
    import torch

    from cldash.methods.eblora import grow_basis

    assert grow_basis(None, torch.randn(32, 16), 0.0, 10).shape == (32, 0)
    assert grow_basis(None, torch.randn(32, 16), 0.99, 10).shape[1] > 0
    assert C.config(C.get_claim("eblora-spectrum"), "EBLoRA no F", "common", 0)["method_options"]["energy"] == 0.0


@pytest.mark.parametrize("key", ["codyra-classil", "inflora-classil", "sdlora-classil"])
def test_the_class_incremental_claims_train_on_the_current_classes_as_the_authors(key):
    claim = C.get_claim(key)
    assert claim.stream == "digits-split"
    for regime in ("common", "paper"):
        for label in claim.runs:
            assert C.config(claim, label, regime, 0)["loss_classes"] == "current", (label, regime)


def test_a_claim_in_another_setting_runs_there_and_says_so(store):
    setting = C.Setting(stream="digits-permute", steps_per_task=40)
    claim = C.get_claim("codyra-rank")
    cfg = C.config(claim, "CoDyRA", "common", 0, setting)
    assert cfg["stream"] == "digits-permute" and cfg["steps_per_task"] == 40
    v = C.verdict(store, claim, "common", setting=setting)
    assert v["setting"].startswith("digits-permute") and "40 steps per task" in v["setting"]
    assert all(c["stream"] == "digits-permute" for c in v["to_launch"]) and v["missing"] == 3 * len(claim.runs)
    refused = C.verdict(store, C.get_claim("slice-adversarial"), "common", setting=setting)
    assert refused["verdict"] == "not in this setting" and "task order" in refused["why"]


def test_a_claim_with_the_papers_numbers_carries_them(store):
    v = C.verdict(store, C.get_claim("codyra-rank"))
    got = {(r["method"], r["value"]) for r in v["reported"]}
    assert ("CoDyRA", 1.87) in got and any(value == 14.86 for _, value in got)
    assert v["paper_setting"]
    assert C.verdict(store, C.get_claim("study-rank"), "paper")["same_as"] == "common"


def test_the_tuned_regime_waits_for_its_searches_then_runs_the_best_values(store):
    from cldash.analysis import tuning as T

    claim = C.get_claim("study-rank")
    v = C.verdict(store, claim, "tuned")
    assert v["verdict"] == "not tuned yet" and f"cldash tune --claim {claim.key}" in v["why"] and not v["to_launch"]
    for i, label in enumerate(claim.runs):   # searches finished (written as `search` writes them)
        values = C.run_values(claim, label)
        name = T.study_name(values, T.TRIALS, 0)
        best = {"params": {"lr": 0.001 * (i + 1), "lr_schedule": "cosine"}, "number": 0, "acc": 0.5, "la": 0.9,
                "forgetting": 0.3}
        T._save(store, name, values, T.space(values), T.TRIALS, 0, {}, finished=True, best=best, spread={})
    v = C.verdict(store, claim, "tuned")
    assert v["verdict"] == "not enough evidence" and len(v["to_launch"]) == 3 * len(claim.runs)
    lrs = {c["method_options"]["rank"]: c["lr"] for c in v["to_launch"]}
    assert lrs == {1: 0.001, 4: 0.002, 16: 0.003}
    assert all(c["lr_schedule"] == "cosine" and c["validation"] == 0 and c["seed"] in (0, 1, 2)
               for c in v["to_launch"])   # fresh seeds on the test sets, never the trials' 100-102


def test_claims_cli_reads_another_setting_and_says_what_the_tuned_regime_still_needs(tmp_path, capsys):
    from cldash.cli import main

    db = str(tmp_path / "cli.db")
    assert main(["--db", db, "claims", "--claim", "codyra-rank", "--stream", "digits-permute", "--steps-per-task",
                 "40", "--regime", "common"]) == 0
    out = capsys.readouterr().out
    assert "on digits-permute, vit-tiny, 40 steps per task; 15 run(s) to launch" in out and "1.87%" in out
    assert main(["--db", db, "claims", "--claim", "study-rank", "--regime", "tuned", "--launch"]) == 0
    out = capsys.readouterr().out
    assert "queued 0 run(s)" in out and "not tuned yet, so not launched in the tuned regime: study-rank" in out
    assert main(["--db", db, "claims", "--stream", "nope"]) == 2
    assert "unknown stream 'nope'" in capsys.readouterr().err
    assert main(["--db", db, "claims", "--guard-margin", "2"]) == 2


class _Terminal:
    """A stdin that is a terminal (what it answers comes from the patched `input`)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "flags", "queued"), [("n\n", [], False), ("\n", [], False), ("y\n", [], True),
                                                        ("", ["--yes"], True)],
                         ids=["no", "enter is no", "yes", "--yes asks nothing"])
def test_claims_launch_in_a_terminal_says_the_runs_and_the_time_and_asks_first(tmp_path, monkeypatch, capsys, answer,
                                                                              flags, queued):
    from cldash.cli import main

    from conftest import keep_runs_queued

    keep_runs_queued(monkeypatch)
    monkeypatch.setattr("sys.stdin", _Terminal())
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer.strip())
    db = str(tmp_path / "cli.db")
    Store(db).set_setting("max_concurrent", "2")   # two at a time, whatever this machine's cores
    assert main(["--db", db, "claims", "--claim", "study-rank", "--regime", "common", "--launch", *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("to queue: 9 runs (13,500 steps), about 3 min on this machine, 2 at a time (estimated from the "
                      "shipped claims study's pace (0.0236 s a step on 2 CPU cores); this store has no finished run of "
                      "this machine of 100 steps or more yet); as a batch, behind any lesson, demo or Launch page "
                      "run queued meanwhile")
    assert asked == ([] if flags else ["queue the 9 run(s)? [y/N] "])
    runs = Store(db).runs()
    assert (len(runs), out[1]) == ((9, f"queued 9 run(s): #1 to #9 -> {db}") if queued else (0, "nothing queued"))
    assert {r["priority"] for r in runs} <= {1}


def test_only_the_runs_of_an_undecided_check_get_more_seeds(store):
    """B vs A is clear after 3 seeds, C vs A is not: C and A go on to 5 seeds, B stops at 3."""
    three = Claim("test-three", "a test paper", "B and C forget less than A.", "digits-rotate",
                  {**CLAIM.runs, "C": RunSpec("lora", {"rank": 2, "alpha": 4.0}, {"policy": "merge"})},
                  (Check("forgetting", "B", "less", "A"), Check("forgetting", "C", "less", "A")), ("Compare", "x"))
    for s, (a, b, c) in enumerate([(0.60, 0.50, 0.55), (0.70, 0.61, 0.75), (0.65, 0.54, 0.62)]):
        add(store, three, "A", s, forgetting=a)
        add(store, three, "B", s, forgetting=b)
        add(store, three, "C", s, forgetting=c)
    v = C.verdict(store, three)
    assert [c["state"] for c in v["checks"]] == ["holds", "undecided"]
    assert v["seeds_per_run"] == {"A": 5, "B": 3, "C": 5}
    assert sorted((c["method_options"]["rank"], c["seed"]) for c in v["to_launch"]) == [(2, 3), (2, 4), (4, 3), (4, 4)]


def test_the_shipped_study_names_its_date_versions_command_and_a_verdict_for_every_claim_and_regime():
    study = C.shipped_study()
    assert study["date"] == "2026-12-07" and "torch" in study["machine"]
    assert study["command"] == "python bench/claims_study.py --steps-per-task 100 --trials 8"
    assert set(study["by_claim"]) == {(c.key, r) for c in C.CLAIMS for r in C.REGIMES}
    assert set(study["by_claim"].values()) <= set(C.VERDICTS)
