"""The decision rules of a claim's check: paired differences, equivalence, power and when to stop.

A check compares run A with run B (or with a number) on one metric. Its evidence is the paired
difference d_s = m(A, s) - m(B, s) over the seeds s that both have, summarised by `paired` as a mean
and a 95 % two-sided Student t-interval. `decide` turns that into one of four states:

- **holds**: the 95 % interval lies on the claimed side, beyond the check's margin;
- **the opposite holds**: the interval lies clearly on the other side;
- **no difference larger than δ**: two one-sided t-tests (TOST, Schuirmann 1987) at 5 % each, i.e.
  the 90 % interval lies inside (-δ, +δ); δ is the smallest difference that matters (`DELTAS`);
- **not enough evidence yet**: anything else, with the smallest difference these seeds could
  detect (`detectable`), so that "undecided" says how far the seeds are from an answer.

The stopping rule, fixed in advance: run 3 seeds; while a check is undecided, add seeds up to the
next point of `SEED_SCHEDULE` = (3, 5, 7, 10) and decide again; stop as soon as it is decided, or at
10 seeds whatever the answer. The schedule is a constant, not a setting: nobody can lengthen it
until the wanted answer appears, or stop it the moment the interval happens to clear 0, and every
claim is judged by the same rule. The price of looking more than once: each look is a 5 % test, and
looking up to 4 times inflates the chance that a true null difference is declared a difference above
the nominal 5 %, to about 14 % two-sided (simulated for normal differences looked at after 3, 5, 7
and 10 seeds; about 7 % towards one given side). It stays bounded because the looks are few and
fixed; a rule that looked after every seed without a cap would reach any answer eventually.

Everything here is pure and stdlib only: the Streamlit pages import it at start-up. The t quantiles
are a table computed once with scipy.stats.t.ppf; the t CDF (for TOST's p-value) is a regularized
incomplete beta by continued fraction (Numerical Recipes, 3rd ed., section 6.4).
"""

from __future__ import annotations

import math
import numbers
import statistics

STATES = ("holds", "opposite", "equivalent", "undecided")
STATE_TEXT = {"holds": "holds", "opposite": "the opposite holds", "equivalent": "no difference larger than δ",
              "undecided": "not enough evidence yet"}
RELATIONS = ("less", "greater", "keeps")

SEED_SCHEDULE = (3, 5, 7, 10)
SEED_CAP = SEED_SCHEDULE[-1]

# δ, the smallest difference that matters, per metric. Accuracy-like metrics (fractions in [0, 1]): 2 points,
# the δ. The others in their own units: ‖ΔW‖_F (update_norm) 0.1, the effective rank of an update half
# a dimension, the spread of active ranks across modules one whole rank (ranks are integers).
DELTAS = {"acc": 0.02, "forgetting": 0.02, "la": 0.02, "general_retention": 0.02, "bwt": 0.02,
          "task_top1_energy": 0.02, "update_norm": 0.1, "update_erank": 0.5, "active_rank_spread": 1.0}

# Student t quantiles t_p(df), from scipy.stats.t.ppf rounded to 4 decimals (one-off; scipy is not imported here)
T_QUANTILES = {
    0.975: {
        1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.306, 9: 2.2622,
        10: 2.2281, 11: 2.201, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314, 16: 2.1199, 17: 2.1098, 18: 2.1009,
        19: 2.093, 20: 2.086, 21: 2.0796, 22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595, 26: 2.0555, 27: 2.0518,
        28: 2.0484, 29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799,
    },
    0.95: {
        1: 6.3138, 2: 2.92, 3: 2.3534, 4: 2.1318, 5: 2.015, 6: 1.9432, 7: 1.8946, 8: 1.8595, 9: 1.8331, 10: 1.8125,
        11: 1.7959, 12: 1.7823, 13: 1.7709, 14: 1.7613, 15: 1.7531, 16: 1.7459, 17: 1.7396, 18: 1.7341, 19: 1.7291,
        20: 1.7247, 21: 1.7207, 22: 1.7171, 23: 1.7139, 24: 1.7109, 25: 1.7081, 26: 1.7056, 27: 1.7033, 28: 1.7011,
        29: 1.6991, 30: 1.6973, 40: 1.6839, 60: 1.6706, 120: 1.6577,
    },
    0.8: {
        1: 1.3764, 2: 1.0607, 3: 0.9785, 4: 0.941, 5: 0.9195, 6: 0.9057, 7: 0.896, 8: 0.8889, 9: 0.8834, 10: 0.8791,
        11: 0.8755, 12: 0.8726, 13: 0.8702, 14: 0.8681, 15: 0.8662, 16: 0.8647, 17: 0.8633, 18: 0.862, 19: 0.861,
        20: 0.86, 21: 0.8591, 22: 0.8583, 23: 0.8575, 24: 0.8569, 25: 0.8562, 26: 0.8557, 27: 0.8551, 28: 0.8546,
        29: 0.8542, 30: 0.8538, 40: 0.8507, 60: 0.8477, 120: 0.8446,
    },
}


_TABLE_DFS = tuple(sorted(T_QUANTILES[0.975]))


def t_quantile(p: float, df: int) -> float:
    """The Student t quantile t_p(df): the table's value, the next lower tabled df's between entries
    (a larger quantile, so a conservative interval), the normal quantile beyond 120; inf for df < 1.
    A p not in the table is found by bisection on `t_cdf`."""
    if df < 1:
        return math.inf
    if df > _TABLE_DFS[-1]:
        return statistics.NormalDist().inv_cdf(p)
    df = max(d for d in _TABLE_DFS if d <= df)
    if p in T_QUANTILES:
        return T_QUANTILES[p][df]
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b), by the continued fraction on the side where it converges."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_cf(a, b, x) / a
    return 1 - front * _beta_cf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom: I_{df/(df+t²)}(df/2, 1/2) is the two-sided tail."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def paired(a: dict[int, float], b: dict[int, float] | float) -> dict:
    """The paired difference a[s] - b[s] over the seeds both have with finite values (b a number: a one-sample
    test against it): n, mean, sd, se and the 95 % two-sided t-interval (low, high). n = 0: nan everywhere;
    n = 1: sd and se nan, the interval (-inf, +inf)."""
    one_sample = isinstance(b, numbers.Real)
    seeds = sorted(s for s in a if one_sample or s in b)
    diffs = [a[s] - (b if one_sample else b[s]) for s in seeds]
    diffs = [d for d in diffs if math.isfinite(d)]
    n = len(diffs)
    if n == 0:
        return dict.fromkeys(("n", "mean", "sd", "se", "low", "high"), math.nan) | {"n": 0}
    mean = statistics.fmean(diffs)
    if n == 1:
        return {"n": 1, "mean": mean, "sd": math.nan, "se": math.nan, "low": -math.inf, "high": math.inf}
    sd = statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    half = t_quantile(0.975, n - 1) * se
    return {"n": n, "mean": mean, "sd": sd, "se": se, "low": mean - half, "high": mean + half}


def equivalence(d: dict, delta: float) -> dict:
    """TOST for |true difference| < delta: two one-sided t-tests at alpha 0.05 (H0: difference <= -delta and
    H0: difference >= +delta). Equivalent iff the 90 % interval lies strictly inside (-delta, +delta); p is the
    larger one-sided p-value (nan where it cannot be computed: fewer than 2 seeds)."""
    n, mean, se = d["n"], d["mean"], d["se"]
    if n < 2:
        bound = math.nan if n == 0 else math.inf
        return {"equivalent": False, "low90": -bound, "high90": bound, "p": math.nan}
    half = t_quantile(0.95, n - 1) * se
    low90, high90 = mean - half, mean + half
    if se > 0:
        p_low = 1 - t_cdf((mean + delta) / se, n - 1)      # H0: difference <= -delta
        p_high = t_cdf((mean - delta) / se, n - 1)         # H0: difference >= +delta
    else:   # identical differences: each test is certain
        p_low, p_high = float(mean <= -delta), float(mean >= delta)
    return {"equivalent": -delta < low90 and high90 < delta, "low90": low90, "high90": high90,
            "p": max(p_low, p_high)}


def detectable(d: dict, power: float = 0.8) -> float:
    """The smallest true difference these seeds could detect at two-sided alpha 0.05 with this power:
    (t_0.975(n-1) + t_power(n-1)) · sd / sqrt(n); inf for fewer than 2 seeds."""
    n = d["n"]
    if n < 2 or not math.isfinite(d["sd"]):
        return math.inf
    return (t_quantile(0.975, n - 1) + t_quantile(power, n - 1)) * d["sd"] / math.sqrt(n)


def _state(relation: str, d: dict, margin: float, delta: float) -> str:
    """The state alone, by the precedence holds, opposite, equivalent, undecided."""
    if relation not in RELATIONS:
        raise ValueError(f"relation {relation!r} is not one of {', '.join(RELATIONS)}")
    if d["n"] < 2:
        return "undecided"
    low, high = d["low"], d["high"]
    holds = {"less": high < -margin, "greater": low > margin, "keeps": low > -margin}[relation]
    opposite = {"less": low > 0, "greater": high < 0, "keeps": high < -margin}[relation]
    if holds:
        return "holds"
    if opposite:
        return "opposite"
    if relation != "keeps" and equivalence(d, delta)["equivalent"]:
        return "equivalent"
    return "undecided"


def decide(relation: str, d: dict, margin: float, delta: float, names: tuple[str, str] = ("A", "B")) -> tuple[str, str]:
    """(state, why) of one check from its paired difference `d` (see `paired`). relation: "less" (the claim:
    A below B), "greater" (A above B) or "keeps" (non-inferiority: A not below B by more than margin); `names`
    says A and B in the sentence."""
    state = _state(relation, d, margin, delta)
    n = d["n"]
    if n == 0:
        return state, "no seed has a finite value on both sides yet"
    if n == 1:
        return state, f"difference {d['mean']:+.3f} from 1 seed; an interval needs at least 2"
    base = f"difference {d['mean']:+.3f}, 95 % interval [{d['low']:+.3f}, {d['high']:+.3f}] over {n} seeds"
    if state == "holds":
        small = f"; the effect is real but smaller than δ = {delta:.3f}" if abs(d["mean"]) < delta else ""
        return state, base + small
    if state == "opposite":
        a, b = names
        side = {"less": f"{a} is clearly above {b}", "greater": f"{a} is clearly below {b}",
                "keeps": f"{a} is lower than {b} by more than the margin {margin:.3f}"}[relation]
        return state, f"{base}; {side}"
    if state == "equivalent":
        e = equivalence(d, delta)
        p = f"= {e['p']:.3f}" if e["p"] >= 0.001 else "< 0.001"
        return state, (f"{base}; its 90 % interval [{e['low90']:+.3f}, {e['high90']:+.3f}] lies inside "
                       f"±{delta:.3f} (TOST p {p})")
    return state, f"{base}; these {n} seeds could detect a difference of {detectable(d):.3f} or more"


def seeds_wanted(n_finished: int, decided: bool) -> int:
    """How many seeds a check wants in all: no more once decided; otherwise the next point of SEED_SCHEDULE
    above n_finished; at or beyond the cap, stop (n_finished) whatever the answer."""
    if decided:
        return n_finished
    return next((s for s in SEED_SCHEDULE if s > n_finished), n_finished)


def first_seeds() -> int:
    """The seeds every check starts with."""
    return SEED_SCHEDULE[0]


def delta_of(metric: str) -> float:
    """δ, the smallest difference that matters, for a metric."""
    if metric not in DELTAS:
        raise ValueError(f"no δ for metric {metric!r}; add it to DELTAS in cldash/analysis/evidence.py "
                         f"(known: {', '.join(DELTAS)})")
    return DELTAS[metric]
