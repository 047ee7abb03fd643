"""The decision rules of a check (cldash/analysis/evidence.py) against scipy and hand-made cases."""

import math
import statistics

import pytest
from scipy import stats

from cldash.analysis import evidence as ev

TABLE = [(p, df) for p in ev.T_QUANTILES for df in ev.T_QUANTILES[p]]


def diffs(values, base=0.5):
    """A paired difference whose per-seed differences are `values` (A = base + v, B = base)."""
    return ev.paired({s: base + v for s, v in enumerate(values)}, {s: base for s in range(len(values))})


@pytest.mark.parametrize("p,df", TABLE)
def test_t_table_matches_scipy(p, df):
    assert ev.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-4)


def test_t_quantile_between_entries_beyond_and_below():
    assert ev.t_quantile(0.975, 35) == ev.T_QUANTILES[0.975][30]       # the lower df: conservative
    assert ev.t_quantile(0.975, 35) > stats.t.ppf(0.975, 35)
    assert ev.t_quantile(0.95, 119) == ev.T_QUANTILES[0.95][60]
    assert ev.t_quantile(0.975, 500) == pytest.approx(statistics.NormalDist().inv_cdf(0.975))
    assert ev.t_quantile(0.975, 0) == math.inf
    assert ev.t_quantile(0.9, 5) == pytest.approx(stats.t.ppf(0.9, 5), abs=1e-9)   # off the table: bisection
    assert ev.t_quantile(0.1, 5) == pytest.approx(stats.t.ppf(0.1, 5), abs=1e-9)


@pytest.mark.parametrize("t,df", [(0.0, 1), (0.5, 2), (-1.3, 5), (2.1, 9), (4.0, 1), (-7.0, 3), (0.01, 30),
                                  (1.5, 200), (-3.3, 2.5), (25.0, 4), (math.inf, 3), (-math.inf, 3)])
def test_t_cdf_matches_scipy(t, df):
    assert ev.t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-9)


@pytest.mark.parametrize("a,b,x", [(0.5, 0.5, 0.3), (2.0, 3.0, 0.9), (10.0, 0.5, 0.95), (0.5, 15.0, 0.01)])
def test_betainc_matches_scipy(a, b, x):
    from scipy.special import betainc
    assert ev.betainc(a, b, x) == pytest.approx(betainc(a, b, x), abs=1e-10)


def test_paired_interval_and_edge_cases():
    a, b = {0: 0.8, 1: 0.7, 2: 0.9, 3: float("nan")}, {0: 0.6, 1: 0.6, 2: 0.6, 4: 0.1}
    d = ev.paired(a, b)
    values = [0.2, 0.1, 0.3]
    ci = stats.t.interval(0.95, 2, loc=statistics.fmean(values), scale=stats.sem(values))
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.2) and d["sd"] == pytest.approx(0.1)
    assert d["se"] == pytest.approx(0.1 / math.sqrt(3))
    assert (d["low"], d["high"]) == pytest.approx(ci, abs=1e-4)
    one = ev.paired({0: 0.7, 1: 0.9}, 0.5)                             # one-sample against a number
    assert one["n"] == 2 and one["mean"] == pytest.approx(0.3)
    single = ev.paired({0: 0.7}, {0: 0.5})
    assert math.isnan(single["sd"]) and math.isnan(single["se"])
    assert (single["low"], single["high"]) == (-math.inf, math.inf)
    empty = ev.paired({0: 0.7}, {1: 0.5})
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("mean", "sd", "se", "low", "high"))


@pytest.mark.parametrize("values,delta,equivalent", [
    ([0.004, 0.005, 0.006, 0.005, 0.0045], 0.02, True),      # tightly around 0.005
    ([0.049, 0.050, 0.051, 0.052, 0.048], 0.02, False),      # around 0.05: a real difference
    ([0.08, -0.07, 0.05, -0.06, 0.01], 0.02, False),         # mean near 0 but a large sd
    ([0.01, 0.01, 0.01], 0.02, True),                        # identical differences inside delta
    ([0.03, 0.03, 0.03], 0.02, False),                       # identical differences outside delta
])
def test_tost_textbook_cases(values, delta, equivalent):
    assert ev.equivalence(diffs(values), delta)["equivalent"] is equivalent


def test_tost_p_values_match_scipy_one_sided_tests():
    values = [0.004, 0.012, -0.003, 0.009, 0.001, 0.007]
    delta = 0.02
    e = ev.equivalence(diffs(values, base=0.0), delta)
    p_low = stats.ttest_1samp(values, popmean=-delta, alternative="greater").pvalue
    p_high = stats.ttest_1samp(values, popmean=delta, alternative="less").pvalue
    assert e["p"] == pytest.approx(max(p_low, p_high), abs=1e-6)
    assert e["equivalent"] is (e["p"] < 0.05)
    half = stats.t.ppf(0.95, 5) * stats.sem(values)
    assert (e["low90"], e["high90"]) == pytest.approx((statistics.fmean(values) - half,
                                                       statistics.fmean(values) + half), abs=1e-4)


def test_tost_with_too_few_seeds():
    assert ev.equivalence(diffs([0.001]), 0.02)["equivalent"] is False
    assert math.isnan(ev.equivalence(diffs([0.001]), 0.02)["p"])
    assert math.isnan(ev.equivalence(ev.paired({}, {}), 0.02)["p"])


def test_detectable_formula_and_shrinks_with_seeds():
    d = {"n": 5, "sd": 0.03}
    expected = (stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * 0.03 / math.sqrt(5)
    assert ev.detectable(d) == pytest.approx(expected, abs=1e-4)
    assert ev.detectable(d, power=0.9) == pytest.approx(
        (stats.t.ppf(0.975, 4) + stats.t.ppf(0.9, 4)) * 0.03 / math.sqrt(5), abs=1e-4)
    assert ev.detectable({"n": 1, "sd": math.nan}) == math.inf
    sizes = [ev.detectable({"n": n, "sd": 0.03}) for n in ev.SEED_SCHEDULE]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


# (relation, per-seed differences, margin, state): every state for every relation it can take
CASES = [
    ("less", [-0.050, -0.040, -0.060], 0.0, "holds"),
    ("less", [-0.010, -0.011, -0.012], 0.0, "holds"),          # real but smaller than delta
    ("less", [0.050, 0.040, 0.060], 0.0, "opposite"),
    ("less", [0.004, -0.003, 0.006, -0.002, 0.001], 0.0, "equivalent"),
    ("less", [0.004, 0.005, 0.006, 0.005, 0.0045], 0.0, "opposite"),    # tiny but clear: opposite comes first
    ("less", [-0.05, 0.04, -0.02], 0.0, "undecided"),
    ("less", [-0.05], 0.0, "undecided"),                       # one seed
    ("less", [-0.030, -0.025, -0.035], 0.04, "undecided"),     # below, but not beyond the margin
    ("greater", [0.050, 0.040, 0.060], 0.0, "holds"),
    ("greater", [-0.050, -0.040, -0.060], 0.0, "opposite"),
    ("greater", [-0.004, 0.003, -0.006, 0.002, -0.001], 0.0, "equivalent"),
    ("greater", [0.05, -0.04, 0.02], 0.0, "undecided"),
    ("keeps", [-0.005, -0.004, -0.006], 0.01, "holds"),       # a little lower, within the margin
    ("keeps", [0.02, 0.03, 0.025], 0.01, "holds"),
    ("keeps", [-0.050, -0.040, -0.060], 0.01, "opposite"),    # lower by more than the margin
    ("keeps", [0.004, -0.003, 0.006, -0.002, 0.001], 0.0, "undecided"),   # keeps never says equivalent
    ("keeps", [-0.05, 0.04, -0.02], 0.01, "undecided"),
]


@pytest.mark.parametrize("relation,values,margin,state", CASES)
def test_decide(relation, values, margin, state):
    got, why = ev.decide(relation, diffs(values), margin, 0.02)
    assert got == state, why
    assert got in ev.STATES and ev.STATE_TEXT[got]
    if len(values) > 1:
        assert f"over {len(values)} seeds" in why and "95 % interval" in why
        assert f"{statistics.fmean(values):+.3f}" in why


def test_decide_sentences():
    _, why = ev.decide("less", diffs([-0.05, 0.04, -0.02]), 0.0, 0.02)
    d = diffs([-0.05, 0.04, -0.02])
    assert f"these 3 seeds could detect a difference of {ev.detectable(d):.3f} or more" in why
    _, why = ev.decide("less", diffs([-0.010, -0.011, -0.012]), 0.0, 0.02)
    assert "smaller than δ = 0.020" in why
    _, why = ev.decide("less", diffs([-0.050, -0.040, -0.060]), 0.0, 0.02)
    assert "smaller than" not in why
    _, why = ev.decide("greater", diffs([-0.004, 0.003, -0.006, 0.002, -0.001]), 0.0, 0.02)
    assert "90 % interval" in why and "±0.020" in why and "TOST p < 0.001" in why
    assert ev.decide("less", ev.paired({}, {}), 0.0, 0.02) == ("undecided", "no seed has a finite value on both "
                                                                            "sides yet")
    with pytest.raises(ValueError, match="relation"):
        ev.decide("below", diffs([0.1, 0.2]), 0.0, 0.02)


def test_stopping_rule():
    assert ev.first_seeds() == 3 and ev.SEED_CAP == 10
    n, seen = ev.first_seeds(), [ev.first_seeds()]
    while (wanted := ev.seeds_wanted(n, decided=False)) != n:
        n = wanted
        seen.append(n)
    assert seen == [3, 5, 7, 10]
    assert ev.seeds_wanted(4, decided=False) == 5 and ev.seeds_wanted(0, decided=False) == 3
    assert [ev.seeds_wanted(k, decided=True) for k in (3, 5, 7)] == [3, 5, 7]
    assert ev.seeds_wanted(10, decided=False) == 10 and ev.seeds_wanted(12, decided=False) == 12


def test_deltas():
    assert ev.delta_of("acc") == 0.02 and ev.delta_of("active_rank_spread") == 1.0
    with pytest.raises(ValueError, match="no δ for metric"):
        ev.delta_of("loss")


def test_import_is_light():
    import subprocess
    import sys
    code = "import sys, cldash.analysis.evidence; print(any(m in sys.modules for m in ('numpy', 'scipy', 'torch')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
