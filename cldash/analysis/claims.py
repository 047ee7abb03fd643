"""The seed papers' headline claims as data, and their verdicts computed from the store.

A `Claim` is a declarative record: the paper, a one-line statement in our words, the runs it
needs (methods and options on one stream, at least `SEEDS` seeds), the checks that decide it and
what to look at. Nothing here trains or reads a page: `verdict(store, claim, regime)` finds the
finished runs whose stored configuration is exactly the one the claim asks for, and decides each
check with a paired difference over seeds; `missing(...)` lists the configurations still to run,
which `cldash claims --launch` and the Claims page queue. The page, the CLI and bench/ call the
same functions, so they always agree, and the same store always gives the same verdict.

The decision rule of a check "A's metric is below B's" (or above): the difference d_s = m(A, s) -
m(B, s) for every seed s that both have, its mean and its 95 % t-interval. The check **holds**
when the interval lies on the claimed side of 0 (beyond a margin, where one is given), **does not
hold** when it does not (the opposite, or no clear difference at this number of seeds), and has
**not enough evidence** with fewer than `SEEDS` paired seeds. A "keeps" check (non-inferiority)
holds when the interval's lower end is above -margin. A claim holds when all its checks hold.

Regimes: *common* runs every method on the shared defaults; *paper* runs the claim's runs in its
paper's regime, ``Claim.paper_preset``: ``paper:METHOD`` (that paper's training regime for every
run, so that the baseline trains on the same schedule as the method, as the paper compares them)
or ``paper`` (each method its own authors' preset; one without a preset stays common).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field

from cldash.config import resolve
from cldash.core.errors import ConfigError, UserError
from cldash.runs.launch import launch

SEEDS = (0, 1, 2)
REGIMES = ("common", "paper")
VERDICTS = ("holds", "does not hold", "not enough evidence")

# two-sided 95 % Student t quantiles by degrees of freedom (beyond 30: the normal 1.96)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}

# configuration fields that do not change what a run learns: a stored run matches a claim's run whatever they are
# compile changes how fast, not what (its losses equal the plain run's: tests/engine/test_precision.py); eval_subset
# only thins the anytime scores, never the rows of R the claims read. precision does change the numbers: not here.
IGNORED = ("name", "device", "threads", "eval_interval", "spectra_interval", "dense_spectra_interval",
           "eval_batch_size", "regime", "checkpoints", "compile", "eval_subset")

# the adversarial order of digits-rotate: the permutation of its five rotations with the most opposed consecutive
# gradients on the shipped vit-tiny, as `cldash order --stream digits-rotate` measures it (SLICE's setting; sum of
# consecutive cosines 0.216 against the natural order's 1.290). A test measures it again on the shipped weights.
ADVERSARIAL_ROTATIONS = [72.0, 180.0, 108.0, 36.0, 144.0]

METRICS = {
    "acc": "final average accuracy (ACC)",
    "forgetting": "forgetting",
    "la": "learning accuracy (LA)",
    "general_retention": "general-task retention",
    "bwt": "backward transfer (BWT)",
    "task_top1_energy": "top-1 energy share of the last task's update (mean over modules)",
    "update_norm": "‖ΔW‖_F of the cumulative update (mean over modules)",
    "update_erank": "effective rank of the cumulative update (mean over modules)",
    "active_rank_spread": "spread of the final active rank across modules (max - min)",
}
SUMMARY_METRICS = ("acc", "forgetting", "la", "general_retention", "bwt")


@dataclass(frozen=True)
class RunSpec:
    """One configuration a claim needs (run at every seed): a method with options and run options."""

    method: str
    options: dict = field(default_factory=dict)     # the method's options
    run: dict = field(default_factory=dict)         # run options (policy, stream_options, replay ...)


@dataclass(frozen=True)
class Check:
    """metric(a) `relation` metric(b) (or `value` when b is None). relation: "less", "greater", or "keeps"
    (not lower than b by more than `margin`)."""

    metric: str
    a: str
    relation: str
    b: str | None = None
    value: float = 0.0
    margin: float = 0.0

    def text(self, labels: dict[str, str]) -> str:
        other = labels.get(self.b, self.b) if self.b else f"{self.value:g}"
        verb = {"less": "is below", "greater": "is above", "keeps": f"is not below (margin {self.margin:g})"}
        return f"{METRICS[self.metric]}: {labels.get(self.a, self.a)} {verb[self.relation]} {other}"


@dataclass(frozen=True)
class Claim:
    key: str
    paper: str
    statement: str
    stream: str
    runs: dict[str, RunSpec]            # label -> configuration
    checks: tuple[Check, ...]
    look: tuple[str, str]               # (page, what to look at there)
    paper_preset: str = "paper"         # the paper regime of its runs (see the module docstring)
    stream_options: dict = field(default_factory=dict)
    note: str = ""


def _lora(rank: int, **run) -> RunSpec:
    return RunSpec("lora", {"rank": rank, "alpha": 2.0 * rank}, {"policy": "merge", **run})


ADV = {"stream_options": {"angles": ADVERSARIAL_ROTATIONS}}

CLAIMS: tuple[Claim, ...] = (
    Claim("eblora-spectrum", "EBLoRA, arXiv 2602.00722",
          "LoRA's update spectrum is imbalanced (a large top-1 energy share) and EBLoRA's is flat; EBLoRA forgets "
          "less than LoRA and reaches a higher final accuracy.",
          "digits-rotate",
          {"LoRA": _lora(16), "EBLoRA": RunSpec("eblora")},
          (Check("task_top1_energy", "EBLoRA", "less", "LoRA"), Check("forgetting", "EBLoRA", "less", "LoRA"),
           Check("acc", "EBLoRA", "greater", "LoRA")),
          ("Spectra", "singular values of each task's update, LoRA against EBLoRA (kind: task)"),
          paper_preset="paper:eblora",
          note="LoRA at EBLoRA's rank 16 (alpha 2r), a fresh adapter per task (merge) as EBLoRA has."),
    Claim("codyra-rank", "CoDyRA, arXiv 2412.01004",
          "A higher LoRA rank learns more and forgets more; CoDyRA forgets less than LoRA with a smaller, "
          "lower-rank update, and its rank differs across modules.",
          "digits-rotate",
          {"LoRA r=4": _lora(4), "LoRA r=16": _lora(16), "CoDyRA": RunSpec("codyra")},
          (Check("la", "LoRA r=16", "greater", "LoRA r=4"), Check("forgetting", "LoRA r=16", "greater", "LoRA r=4"),
           Check("forgetting", "CoDyRA", "less", "LoRA r=16"), Check("update_norm", "CoDyRA", "less", "LoRA r=16"),
           Check("update_erank", "CoDyRA", "less", "LoRA r=16"),
           Check("active_rank_spread", "CoDyRA", "greater", value=0.0)),
          ("Ranks", "CoDyRA's active rank per module over the steps"),
          paper_preset="paper:codyra",
          note="CoDyRA's rank 16 against LoRA at 4 and 16 (alpha 2r, merge)."),
    Claim("slice-natural", "SLICE, arXiv 2605.12752",
          "SLICE reaches a better final accuracy and forgets less than LoRA and LoRA-GA, while keeping general "
          "performance (natural task order).",
          "digits-rotate",
          {"LoRA": _lora(8), "LoRA-GA": RunSpec("loraga", {}, {"policy": "merge"}),
           "SLICE": RunSpec("slice", {}, {"policy": "merge"})},
          (Check("acc", "SLICE", "greater", "LoRA"), Check("acc", "SLICE", "greater", "LoRA-GA"),
           Check("forgetting", "SLICE", "less", "LoRA"), Check("forgetting", "SLICE", "less", "LoRA-GA"),
           Check("general_retention", "SLICE", "keeps", "LoRA", margin=0.05)),
          ("Compare", "the accuracy matrices and the metrics table of SLICE, LoRA and LoRA-GA"),
          paper_preset="paper:loraga",
          note="SLICE has no public code; its paper regime is LoRA-GA's (the method it builds on and compares with)."),
    Claim("slice-adversarial", "SLICE, arXiv 2605.12752",
          "On the adversarial task order (most opposed consecutive gradients) SLICE reaches a better final accuracy "
          "and forgets less than LoRA and LoRA-GA, while keeping general performance.",
          "digits-rotate",
          {"LoRA": _lora(8, **ADV), "LoRA-GA": RunSpec("loraga", {}, {"policy": "merge", **ADV}),
           "SLICE": RunSpec("slice", {}, {"policy": "merge", **ADV})},
          (Check("acc", "SLICE", "greater", "LoRA"), Check("acc", "SLICE", "greater", "LoRA-GA"),
           Check("forgetting", "SLICE", "less", "LoRA"), Check("forgetting", "SLICE", "less", "LoRA-GA"),
           Check("general_retention", "SLICE", "keeps", "LoRA", margin=0.05)),
          ("Orders", "the adversarial order's gradient conflicts; then Compare for the three runs"),
          paper_preset="paper:loraga", stream_options=ADV["stream_options"],
          note="The order 72°, 180°, 108°, 36°, 144° is the one `cldash order --stream digits-rotate` measures on the "
               "shipped backbone."),
    Claim("study-pissa", "On catastrophic forgetting in low-rank PEFT, arXiv 2603.09684",
          "PiSSA, which trains the pre-trained weight's principal directions, forgets most.",
          "digits-rotate",
          {"PiSSA": RunSpec("pissa", {}, {"policy": "merge"}), "LoRA r=8": _lora(8),
           "WeGeFT": RunSpec("wegeft", {}, {"policy": "merge"}),
           "LoRETTA": RunSpec("loretta", {}, {"policy": "merge"})},
          (Check("forgetting", "PiSSA", "greater", "LoRA r=8"), Check("forgetting", "PiSSA", "greater", "WeGeFT"),
           Check("forgetting", "PiSSA", "greater", "LoRETTA")),
          ("Compare", "forgetting of PiSSA against LoRA, WeGeFT and LoRETTA"),
          note="Rank 8 for all; the study has no code, so its paper regime gives each method its own authors' "
               "preset (LoRA, which has none, stays common)."),
    Claim("study-rank", "On catastrophic forgetting in low-rank PEFT, arXiv 2603.09684",
          "A higher LoRA rank forgets less.",
          "digits-rotate",
          {"LoRA r=1": _lora(1), "LoRA r=4": _lora(4), "LoRA r=16": _lora(16)},
          (Check("forgetting", "LoRA r=4", "less", "LoRA r=1"), Check("forgetting", "LoRA r=16", "less", "LoRA r=4")),
          ("Compare", "forgetting and learning accuracy of LoRA at ranks 1, 4 and 16"),
          note="alpha = 2r at every rank, so the scale alpha/r is the same."),
    Claim("study-budget", "On catastrophic forgetting in low-rank PEFT, arXiv 2603.09684",
          "At a matched small parameter budget, WeGeFT and LoRETTA forget less than LoRA.",
          "digits-rotate",
          {"LoRA r=4": _lora(4), "WeGeFT": RunSpec("wegeft", {}, {"policy": "merge"}),
           "LoRETTA": RunSpec("loretta", {}, {"policy": "merge"})},
          (Check("forgetting", "WeGeFT", "less", "LoRA r=4"), Check("forgetting", "LoRETTA", "less", "LoRA r=4")),
          ("Compare", "forgetting against trainable parameters"),
          note="About 7k trainable parameters per task each: LoRA r=4 7,168, WeGeFT r=8 (tied) 7,168, LoRETTA r=8 "
               "(TT rank 5) 6,880 (bench/results/forgetting_study.md)."),
)


def get_claim(key: str) -> Claim:
    for c in CLAIMS:
        if c.key == key:
            return c
    raise UserError(f"unknown claim {key!r}; the claims are: {', '.join(c.key for c in CLAIMS)}.")


# -- the configurations a claim needs -------------------------------------------------------------

def run_preset(claim: Claim, method: str, regime: str) -> str:
    """The preset of `method`'s runs in a claim under a regime."""
    from cldash.methods import paper_presets  # deferred: imports torch; pages import claims at start-up

    if regime == "common":
        return "common"
    if claim.paper_preset == "paper":
        return "paper" if method in paper_presets() else "common"
    return claim.paper_preset


def config(claim: Claim, label: str, regime: str, seed: int) -> dict:
    """The resolved configuration of one of a claim's runs (what is launched and what is matched)."""
    spec = claim.runs[label]
    values = {"method": spec.method, "stream": claim.stream, "seed": seed, "method_options": dict(spec.options),
              "preset": run_preset(claim, spec.method, regime), **spec.run}
    cfg = resolved_config(values)
    cfg["name"] = f"{label} · {claim.key} · {regime} · seed {seed}"
    return cfg


@functools.lru_cache(maxsize=4096)
def _resolved(text: str) -> dict:
    """resolve() of a configuration given as JSON, cached: the claims' 200-odd configurations took about a
    second to resolve at every verdict, and the Claims page recomputes its verdicts every two seconds while
    runs are on their way (callers get a deep copy)."""
    return resolve(json.loads(text)).to_dict()


def resolved_config(values: dict) -> dict:
    """resolve() of a configuration, as the dict a run stores, from one cache that the claims and the lessons
    share; a deep copy, the caller's to change."""
    return copy.deepcopy(_resolved(json.dumps(values, sort_keys=True, default=str)))


def match_key(cfg: dict) -> str:
    """What two resolved configurations share when they ask for the same run of a claim or a lesson: every field
    but the seed and those that do not change what a run learns (IGNORED), as JSON."""
    return json.dumps({k: v for k, v in cfg.items() if k not in IGNORED and k != "seed"}, sort_keys=True, default=str)


@functools.lru_cache(maxsize=4096)
def _stored_key(text: str) -> str | None:
    """The match key of a stored configuration, resolved again so that options added since it ran read as their
    defaults (None if it no longer resolves: a method or option that is gone)."""
    try:
        return match_key(_resolved(text))
    except ConfigError:
        return None


def matching_runs(store, claim: Claim, regime: str, runs: list[dict] | None = None) -> dict[str, dict[int, dict]]:
    """{label: {seed: run}} of the store's runs whose configuration is exactly one the claim needs (any status;
    the latest run of a seed wins, a finished one over any other)."""
    wanted = {match_key(config(claim, label, regime, 0)): label for label in claim.runs}
    out: dict[str, dict[int, dict]] = {label: {} for label in claim.runs}
    for run in runs if runs is not None else store.runs(stream=claim.stream):
        if run["method"] not in {spec.method for spec in claim.runs.values()}:
            continue
        label = wanted.get(_stored_key(json.dumps(run["config"], sort_keys=True, default=str)))
        if label is None:
            continue
        seed, have = run["config"]["seed"], out[label].get(run["config"]["seed"])
        if have is None or (run["status"] == "finished") >= (have["status"] == "finished"):
            out[label][seed] = run
    return out


def missing(store, claim: Claim, regime: str, runs: list[dict] | None = None) -> list[dict]:
    """The configurations to launch so that every run of the claim has every seed of SEEDS: those with no run,
    or whose run failed, was cancelled or interrupted (queued and running ones are on their way)."""
    found = matching_runs(store, claim, regime, runs)
    return [config(claim, label, regime, seed) for label in claim.runs for seed in SEEDS
            if found[label].get(seed, {}).get("status") not in ("finished", "queued", "running")]


# -- metrics of a run ----------------------------------------------------------------------------

def run_metric(store, run: dict, metric: str) -> float:
    """One metric of a finished run, from its summary or its stored spectra and scalars (nan if absent)."""
    nan = float("nan")
    if metric in SUMMARY_METRICS:
        value = (run.get("summary") or {}).get(metric)
        return nan if value is None else float(value)
    if metric == "active_rank_spread":
        df = store.scalars(run["id"], names=["active_rank"])
        if not len(df):
            return nan
        last = df[df.step == df.step.max()]
        return float(last.value.max() - last.value.min())
    kind, column = {"task_top1_energy": ("task", "top1_energy"), "update_norm": ("cumulative", "frobenius"),
                    "update_erank": ("cumulative", "erank")}[metric]
    df = store.spectra_at([run["id"]], kind)
    return float(df[column].mean()) if len(df) else nan


# -- the decision rule ----------------------------------------------------------------------------

def t95(df: int) -> float:
    if df in T95:
        return T95[df]
    below = [k for k in T95 if k < df]
    return T95[max(below)] if df < 30 else 1.96


def paired(a: dict[int, float], b: dict[int, float] | float) -> dict:
    """The paired difference over the seeds both have: n, mean, sd, 95 % interval (low, high)."""
    seeds = sorted(s for s in a if (isinstance(b, (int, float)) or s in b) and math.isfinite(a[s]))
    diffs = [a[s] - (b if isinstance(b, (int, float)) else b[s]) for s in seeds]
    diffs = [d for d in diffs if math.isfinite(d)]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "sd": float("nan"), "low": float("nan"), "high": float("nan")}
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else float("nan")
    half = t95(n - 1) * sd / math.sqrt(n) if n > 1 else float("inf")
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def decide(check: Check, d: dict) -> tuple[str, str]:
    """(verdict, why) of one check from its paired difference."""
    if d["n"] < len(SEEDS):
        return "not enough evidence", f"{d['n']} of the {len(SEEDS)} seeds it needs"
    lo, hi, m = d["low"], d["high"], check.margin
    interval = f"difference {d['mean']:+.3f}, 95 % interval [{lo:+.3f}, {hi:+.3f}] over {d['n']} seeds"
    if check.relation == "less":
        ok, opposite = hi < -m, lo > m
    elif check.relation == "greater":
        ok, opposite = lo > m, hi < -m
    else:   # keeps: not lower by more than the margin
        ok, opposite = lo > -m, hi < -m
    if ok:
        return "holds", interval
    if check.relation == "keeps":
        return "does not hold", interval + ("; it is lower by more than the margin" if opposite else
                                            "; a drop beyond the margin cannot be ruled out")
    return "does not hold", interval + ("; the opposite holds" if opposite else "; no clear difference")


def verdict(store, claim: Claim, regime: str = "common", runs: list[dict] | None = None) -> dict:
    """The claim's verdict under a regime, with its evidence: {"verdict", "checks": [...], "runs": {label:
    {seed: run id}}, "values": {label: {metric: {seed: value}}}, "missing": n configurations, "caveats"}."""
    if regime not in REGIMES:
        raise UserError(f"regime must be common or paper (got {regime!r}).")
    found = matching_runs(store, claim, regime, runs)
    finished = {label: {s: r for s, r in by_seed.items() if r["status"] == "finished"}
                for label, by_seed in found.items()}
    metrics = sorted({c.metric for c in claim.checks} | {"la", "acc", "forgetting"})
    values = {label: {m: {s: run_metric(store, r, m) for s, r in by_seed.items()} for m in metrics}
              for label, by_seed in finished.items()}
    labels = {k: k for k in claim.runs}
    checks, caveats = [], []
    for check in claim.checks:
        a = values[check.a][check.metric]
        b = values[check.b][check.metric] if check.b else check.value
        d = paired(a, b)
        v, why = decide(check, d)
        checks.append({"check": check.text(labels), "verdict": v, "why": why, **d})
        if v == "holds" and check.metric == "forgetting" and check.relation == "less" and check.b:
            la = paired(values[check.a]["la"], values[check.b]["la"])
            if la["n"] >= len(SEEDS) and la["high"] < 0:
                caveats.append(f"{check.a} forgets less than {check.b} but also learns less: learning accuracy "
                               f"{la['mean']:+.3f} [{la['low']:+.3f}, {la['high']:+.3f}].")
    states = {c["verdict"] for c in checks}
    overall = "not enough evidence" if "not enough evidence" in states else \
        "does not hold" if "does not hold" in states else "holds"
    return {"claim": claim.key, "regime": regime, "verdict": overall, "checks": checks, "caveats": caveats,
            "runs": {label: {s: r["id"] for s, r in sorted(by_seed.items())} for label, by_seed in finished.items()},
            "pending": sum(1 for by_seed in found.values() for r in by_seed.values()
                           if r["status"] in ("queued", "running")),
            "missing": len(missing(store, claim, regime, runs=[r for by in found.values() for r in by.values()])),
            "values": values}


def verdicts(store, regimes: tuple[str, ...] = REGIMES, runs: list[dict] | None = None) -> list[dict]:
    """Every claim's verdict under each regime, from one read of the store's runs (or these runs)."""
    runs = store.runs() if runs is None else runs
    return [verdict(store, c, regime, [r for r in runs if r["stream"] == c.stream]) for c in CLAIMS
            for regime in regimes]


def to_launch(store, claims: tuple[Claim, ...] = CLAIMS, regimes: tuple[str, ...] = REGIMES,
              runs: list[dict] | None = None) -> list[dict]:
    """The missing configurations of these claims under these regimes, each once (claims share runs)."""
    runs = store.runs() if runs is None else runs
    out, seen = [], set()
    for claim in claims:
        for regime in regimes:
            for cfg in missing(store, claim, regime, [r for r in runs if r["stream"] == claim.stream]):
                key = (match_key(cfg), cfg["seed"])
                if key not in seen:
                    seen.add(key)
                    out.append(cfg)
    return out


def launch_missing(store, claims: tuple[Claim, ...] = CLAIMS, regimes: tuple[str, ...] = REGIMES,
                   start: bool = True) -> list[int]:
    """Queue the missing runs (cldash.runs.launch); launching again while they are queued adds nothing. A launch key
    counts the earlier attempts at the configuration, so a failed run is retried with a new row."""
    configs = to_launch(store, claims, regimes)
    if not configs:
        return []
    runs = store.runs()
    tries = {}
    for r in runs:
        k = (match_key(r["config"]), r["config"]["seed"])
        tries[k] = tries.get(k, 0) + 1
    keys = []
    for cfg in configs:
        k = (match_key(cfg), cfg["seed"])
        digest = hashlib.sha1(f"{k[0]}|{k[1]}".encode()).hexdigest()[:16]
        keys.append(f"claims:{digest}:{tries.get(k, 0)}")
    return launch(store, configs, keys, group_key="claims", names=[c["name"] for c in configs], start=start)
