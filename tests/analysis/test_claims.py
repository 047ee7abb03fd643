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
    assert v["verdict"] == "does not hold" and "the opposite holds" in v["checks"][0]["why"]


def test_a_difference_inside_the_noise_does_not_hold(store):
    fill(store, [0.60, 0.50, 0.70], [0.55, 0.60, 0.62])
    v = C.verdict(store, CLAIM)
    assert v["verdict"] == "does not hold" and "no clear difference" in v["checks"][0]["why"]
    assert v["checks"][0]["low"] < 0 < v["checks"][0]["high"]


def test_too_few_seeds_is_not_enough_evidence_and_lists_what_is_missing(store):
    fill(store, [0.60, 0.70], [0.50, 0.61], seeds=(0, 1))
    v = C.verdict(store, CLAIM)
    assert v["verdict"] == "not enough evidence" and v["checks"][0]["n"] == 2
    todo = C.missing(store, CLAIM, "common")
    assert [(c["method_options"]["rank"], c["seed"]) for c in todo] == [(4, 2), (1, 2)]


def test_a_failed_run_does_not_count_and_is_launched_again(store):
    fill(store, [0.60, 0.70], [0.50, 0.61], seeds=(0, 1))
    add(store, CLAIM, "A", 2, status="failed")
    add(store, CLAIM, "B", 2, status="running")
    assert C.verdict(store, CLAIM)["verdict"] == "not enough evidence"
    assert [(c["method_options"]["rank"], c["seed"]) for c in C.missing(store, CLAIM, "common")] == [(4, 2)]
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


def test_forgetting_less_by_learning_less_is_said(store):
    for s, (fa, fb, la) in enumerate([(0.6, 0.5, 0.80), (0.7, 0.61, 0.79), (0.65, 0.54, 0.82)]):
        add(store, CLAIM, "A", s, forgetting=fa, la=0.9)
        add(store, CLAIM, "B", s, forgetting=fb, la=la)
    v = C.verdict(store, CLAIM)
    assert v["verdict"] == "holds" and "also learns less" in v["caveats"][0]


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
    assert d["high"] - d["mean"] == pytest.approx(4.303 / math.sqrt(3))
    assert C.paired({0: 1.0}, 0.0)["high"] == math.inf


@pytest.mark.parametrize("claim", C.CLAIMS, ids=lambda c: c.key)
def test_every_claim_is_well_formed_and_resolves_in_both_regimes(claim):
    assert claim.statement and claim.paper and claim.look[0] in ("Spectra", "Compare", "Ranks", "Orders", "Live")
    for check in claim.checks:
        assert check.metric in C.METRICS and check.a in claim.runs and (check.b is None or check.b in claim.runs)
        assert check.relation in ("less", "greater", "keeps")
    assert len(C.SEEDS) >= 3
    for regime in C.REGIMES:
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
    assert "cannot be ruled out" in C.verdict(store, KEEPS)["checks"][0]["why"]   # 0.04 lower, interval past -0.05
