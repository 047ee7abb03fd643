"""The seed papers' headline claims as data, and their verdicts computed from the store.

A `Claim` is a declarative record: the paper, a one-line statement in our words, the runs it
needs (methods with their options pinned, on one stream), the checks that decide it and what to
look at. Nothing here trains or reads a page: `verdict(store, claim, regime, setting=...)` finds the
finished runs whose stored configuration is exactly one the claim asks for, and decides each check
from the paired differences over seeds (cldash.analysis.evidence); its ``to_launch`` lists the
configurations still to run, which `cldash claims --launch`, the Claims page and bench/ queue. They
all call the same functions, so they agree, and the same store always gives the same verdict.

A check's state: **holds**, **the opposite holds**, **no difference larger than δ** (TOST) or **not
enough evidence yet** (evidence.decide), or **not comparable** when it reads an outcome (GUARDED) of
a run that learned too little: its mean learning accuracy more than `GUARD_MARGIN` below the claim's
best learner (`guard`). A claim *does not hold* when a check is contradicted (the opposite, or no
difference), has *not enough evidence* while one is undecided, is *not comparable* when one was
guarded, and *holds* when all hold. Seeds: every run starts with 3; the runs of a check still
undecided get the next point of the fixed schedule 3 -> 5 -> 7 -> 10 (`seeds_per_run`).

Regimes: *common* runs every method on the shared defaults; *paper* runs the claim's runs in its
paper's regime, ``Claim.paper_preset``: ``paper:METHOD`` (that paper's training regime for every
run, so that the baseline trains on the same schedule as the method, as the paper compares them)
or ``paper`` (each method its own authors' preset; one without a preset stays common); its length
stays the common one. *tuned* runs each run with the best values of its own search
(cldash.analysis.tuning), on fresh seeds. A `Setting` moves every claim to another stream, backbone
or length (and names the tuned regime's search budget).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from importlib import resources

from cldash.analysis.evidence import STATE_TEXT, decide, delta_of, detectable, first_seeds, paired, seeds_wanted
from cldash.analysis.matching import match_key, resolved_config, stored_key
from cldash.analysis.reported import paper_setting, reported
from cldash.analysis.tuning import TRIALS, best_params, trial_values
from cldash.core.errors import UserError
from cldash.runs.launch import launch

REGIMES = ("common", "paper", "tuned")
VERDICTS = ("holds", "does not hold", "not enough evidence", "not comparable", "not tuned yet", "not in this setting")
SEEDS = tuple(range(first_seeds()))   # the first seeds of every claim's runs; the stopping rule adds more
GUARD_MARGIN = 0.10   # the learned-enough guard: a run more than this below the claim's best LA is not compared
# the checks the guard reads: those about what a run keeps or ends with, which a run that learns nothing wins
GUARDED = ("forgetting", "general_retention", "bwt", "acc")

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


def _lora(rank: int, alpha: float | None = None, **run) -> RunSpec:
    """LoRA at `rank` with alpha 2r (scale 2, as EBLoRA's) unless given, a fresh adapter per task (merge)."""
    return RunSpec("lora", {"rank": rank, "alpha": 2.0 * rank if alpha is None else alpha}, {"policy": "merge", **run})


ADV = {"stream_options": {"angles": ADVERSARIAL_ROTATIONS}}
CURRENT = {"loss_classes": "current"}   # the class-IL loss of the CoDyRA, InfLoRA and SD-LoRA code
LA_MARGIN = 0.05                         # "learns no less": LA not lower by more than this (non-inferiority)
# SLICE is LoRA-GA plus gradient surgery: both at one rank, alpha, init form and gradient estimate, so that the
# surgery is all that differs (explicit options win over any preset, so the paper regime keeps them equal too)
GA = {"rank": 8, "alpha": 16.0, "init_form": "authors", "direction": "ArB2r", "scale": "stable", "stable_gamma": 16.0,
      "grad_batches": 4, "grad_batch_size": 32}


def _learns(a: str, b: str) -> Check:
    """The pair of every "forgets less": a learns no less than b (LA within LA_MARGIN)."""
    return Check("la", a, "keeps", b, margin=LA_MARGIN)


def _slice_claim(key: str, statement: str, run: dict, look: tuple, note: str, stream_options=None) -> Claim:
    return Claim(
        key, "SLICE, arXiv 2605.12752", statement, "digits-rotate",
        {"LoRA": _lora(8, **run), "LoRA-GA": RunSpec("loraga", GA, {"policy": "merge", **run}),
         "SLICE": RunSpec("slice", GA, {"policy": "merge", **run}),
         "SLICE no surgery": RunSpec("slice", {**GA, "surgery": "none"}, {"policy": "merge", **run})},
        (Check("acc", "SLICE", "greater", "LoRA"), Check("acc", "SLICE", "greater", "LoRA-GA"),
         Check("forgetting", "SLICE", "less", "LoRA"), Check("forgetting", "SLICE", "less", "LoRA-GA"),
         _learns("SLICE", "LoRA"), _learns("SLICE", "LoRA-GA"),
         Check("general_retention", "SLICE", "keeps", "LoRA", margin=0.05),
         Check("general_retention", "SLICE", "keeps", "LoRA-GA", margin=0.05),
         Check("forgetting", "SLICE", "less", "SLICE no surgery"), _learns("SLICE", "SLICE no surgery")),
        look, paper_preset="paper:loraga", stream_options=stream_options or {},
        note=note + " LoRA-GA and SLICE share rank 8, alpha 16, the authors' init form and one gradient estimate; "
                    "'SLICE no surgery' (ours, a diagnostic) asks whether the projection, not the replay gradient, "
                    "does it. SLICE sees 250 replayed examples for its init; LoRA and LoRA-GA see none.")


CLAIMS: tuple[Claim, ...] = (
    Claim("eblora-spectrum", "EBLoRA, arXiv 2602.00722",
          "LoRA's update spectrum is imbalanced (a few directions take most of its energy), and that imbalance "
          "causes forgetting: EBLoRA, which keeps the spectrum flat, forgets less than LoRA, even without its "
          "subspace memory F, and reaches a higher final accuracy.",
          "digits-rotate",
          {"LoRA": _lora(16), "EBLoRA": RunSpec("eblora"), "EBLoRA no F": RunSpec("eblora", {"energy": 0.0})},
          (Check("task_top1_energy", "LoRA", "greater", value=0.125),
           Check("forgetting", "EBLoRA no F", "less", "LoRA"), _learns("EBLoRA no F", "LoRA"),
           Check("forgetting", "EBLoRA", "less", "LoRA"), _learns("EBLoRA", "LoRA"),
           Check("acc", "EBLoRA", "greater", "LoRA"), Check("forgetting", "EBLoRA", "less", "EBLoRA no F"),
           _learns("EBLoRA", "EBLoRA no F")),
          ("Spectra", "singular values of each task's update, LoRA against EBLoRA (kind: task)"),
          paper_preset="paper:eblora",
          note="LoRA at EBLoRA's rank 16 and scale (alpha 2r), a fresh adapter per task (merge) as EBLoRA has. "
               "EBLoRA's own top-1 share is 1/16 by construction, so the spectrum check asks whether LoRA's is "
               "above twice that (0.125). 'EBLoRA no F' (energy 0: the protected basis never grows) separates "
               "the flat spectrum from the subspace memory."),
    Claim("codyra-rank", "CoDyRA, arXiv 2412.01004",
          "A higher LoRA rank learns more and forgets more; CoDyRA forgets less than LoRA while learning as well, "
          "with a smaller, lower-rank update than LoRA at its scale, because it prunes; its rank differs across "
          "modules.",
          "digits-rotate",
          {"LoRA r=4": _lora(4), "LoRA r=16": _lora(16), "LoRA r=16 s=1": _lora(16, alpha=16.0),
           "CoDyRA": RunSpec("codyra"), "CoDyRA no pruning": RunSpec("codyra", {"kappa_max": 0.0})},
          (Check("la", "LoRA r=16", "greater", "LoRA r=4"), Check("forgetting", "LoRA r=16", "greater", "LoRA r=4"),
           Check("forgetting", "CoDyRA", "less", "LoRA r=16 s=1"), _learns("CoDyRA", "LoRA r=16 s=1"),
           Check("update_norm", "CoDyRA", "less", "LoRA r=16 s=1"),
           Check("update_erank", "CoDyRA", "less", "LoRA r=16 s=1"),
           Check("update_norm", "CoDyRA", "less", "CoDyRA no pruning"),
           Check("forgetting", "CoDyRA", "less", "CoDyRA no pruning"), _learns("CoDyRA", "CoDyRA no pruning"),
           Check("active_rank_spread", "CoDyRA", "greater", value=0.0)),
          ("Ranks", "CoDyRA's active rank per module over the steps"),
          paper_preset="paper:codyra",
          note="CoDyRA (rank 16, no alpha: scale 1) against LoRA at ranks 4 and 16 (alpha 2r) for the rank "
               "question, and against LoRA r=16 at CoDyRA's scale (alpha 16) for the update's size; 'CoDyRA no "
               "pruning' (kappa_max 0) is the same gates without the proximal step. The paper's words: \"higher "
               "rank favors plasticity, lower rank favors stability\" (project page, Takeaway 2)."),
    _slice_claim("slice-natural",
                 "SLICE reaches a better final accuracy and forgets less than LoRA and LoRA-GA, learning as well, "
                 "while keeping general performance (natural task order).", {},
                 ("Compare", "the accuracy matrices and the metrics table of SLICE, LoRA and LoRA-GA"),
                 "SLICE has no public code; its paper regime is LoRA-GA's (the method it builds on)."),
    _slice_claim("slice-adversarial",
                 "On the adversarial task order (most opposed consecutive gradients) SLICE reaches a better final "
                 "accuracy and forgets less than LoRA and LoRA-GA, learning as well, while keeping general "
                 "performance.", ADV,
                 ("Orders", "the adversarial order's gradient conflicts; then Compare for the three runs"),
                 "The order 72°, 180°, 108°, 36°, 144° is the one `cldash order --stream digits-rotate` measures on "
                 "the shipped backbone.", ADV["stream_options"]),
    Claim("study-pissa", "On catastrophic forgetting in low-rank PEFT, arXiv 2603.09684",
          "PiSSA, which trains the pre-trained weight's principal directions, forgets most.",
          "digits-rotate",
          {"PiSSA": RunSpec("pissa", {"rank": 8, "alpha": 16.0}, {"policy": "merge"}), "LoRA r=8": _lora(8),
           "WeGeFT": RunSpec("wegeft", {"rank": 8}, {"policy": "merge"}),
           "LoRETTA": RunSpec("loretta", {"rank": 8}, {"policy": "merge"})},
          (Check("forgetting", "PiSSA", "greater", "LoRA r=8"), Check("forgetting", "PiSSA", "greater", "WeGeFT"),
           Check("forgetting", "PiSSA", "greater", "LoRETTA")),
          ("Compare", "forgetting of PiSSA against LoRA, WeGeFT and LoRETTA"),
          note="Only the reference note's paraphrase: the abstract does not name PiSSA (it says updates confined "
               "to small shared subspaces interfere). Rank 8 for all, PiSSA at LoRA's scale; the study has no "
               "code, so its paper regime gives each method its own authors' preset."),
    Claim("study-rank", "On catastrophic forgetting in low-rank PEFT, arXiv 2603.09684",
          "A higher LoRA rank forgets less.",
          "digits-rotate",
          {"LoRA r=1": _lora(1), "LoRA r=4": _lora(4), "LoRA r=16": _lora(16)},
          (Check("forgetting", "LoRA r=4", "less", "LoRA r=1"), Check("forgetting", "LoRA r=16", "less", "LoRA r=4"),
           _learns("LoRA r=4", "LoRA r=1"), _learns("LoRA r=16", "LoRA r=4")),
          ("Compare", "forgetting and learning accuracy of LoRA at ranks 1, 4 and 16"),
          paper_preset="common",
          note="Only the reference note's paraphrase, not the abstract. Its second check is the opposite of "
               "codyra-rank's (CoDyRA: higher rank forgets more) on the same runs: at most one of the two can "
               "hold. alpha = 2r at every rank, so the scale is the same; the study has no code, so no paper "
               "regime of its own."),
    Claim("study-budget", "On catastrophic forgetting in low-rank PEFT, arXiv 2603.09684",
          "At a matched small parameter budget, LoRETTA forgets less than LoRA while learning as well, and WeGeFT "
          "keeps the pre-trained representations (general performance) at least as well as LoRA.",
          "digits-rotate",
          {"LoRA r=4": _lora(4), "WeGeFT": RunSpec("wegeft", {"rank": 8, "alpha": 8.0, "tie": True},
                                                   {"policy": "merge"}),
           "LoRETTA": RunSpec("loretta", {"rank": 8, "alpha": 16.0, "tensor_rank": 5}, {"policy": "merge"})},
          (Check("forgetting", "LoRETTA", "less", "LoRA r=4"), _learns("LoRETTA", "LoRA r=4"),
           Check("general_retention", "WeGeFT", "keeps", "LoRA r=4", margin=0.05),
           Check("forgetting", "WeGeFT", "less", "LoRA r=4"), _learns("WeGeFT", "LoRA r=4")),
          ("Compare", "forgetting against trainable parameters"),
          paper_preset="common",
          note="The budget is pinned by the options (tests/analysis/test_claims.py counts it on the shipped "
               "backbone): LoRA r=4 7,168, WeGeFT r=8 tied 7,168, LoRETTA r=8 TT rank 5 6,880 trainable "
               "parameters per task. The abstract: LoRETTA \"mitigates forgetting\", WeGeFT \"preserves "
               "pretrained representations\"."),
    Claim("codyra-classil", "CoDyRA, arXiv 2412.01004",
          "Class-incremental: CoDyRA forgets less than LoRA while learning new classes as well, and ends higher.",
          "digits-split",
          {"LoRA r=16 s=1": _lora(16, alpha=16.0, **CURRENT), "CoDyRA": RunSpec("codyra", {}, CURRENT)},
          (Check("forgetting", "CoDyRA", "less", "LoRA r=16 s=1"), _learns("CoDyRA", "LoRA r=16 s=1"),
           Check("acc", "CoDyRA", "greater", "LoRA r=16 s=1")),
          ("Compare", "the accuracy matrices of CoDyRA and LoRA on the split digits"),
          paper_preset="paper:codyra",
          note="Two digits a task, one ten-way head, scored among all ten (class-IL), the loss masked to the "
               "task's own classes as the authors train. LoRA r=16 at CoDyRA's scale, the page's X-TAIL baseline."),
    Claim("inflora-classil", "InfLoRA, arXiv 2404.00228",
          "Class-incremental: InfLoRA, whose new subspace avoids interfering with old tasks, forgets less than "
          "sequential LoRA while learning as well, and ends higher.",
          "digits-split",
          {"Seq-LoRA": _lora(10, **CURRENT), "InfLoRA": RunSpec("inflora", {}, CURRENT)},
          (Check("forgetting", "InfLoRA", "less", "Seq-LoRA"), _learns("InfLoRA", "Seq-LoRA"),
           Check("acc", "InfLoRA", "greater", "Seq-LoRA")),
          ("Compare", "the accuracy matrices of InfLoRA and sequential LoRA on the split digits"),
          paper_preset="paper:inflora",
          note="Sequential LoRA at InfLoRA's rank 10 (alpha 2r), a fresh adapter per task merged at the boundary; "
               "the loss masked to the task's classes for both, as InfLoRA trains."),
    Claim("sdlora-classil", "SD-LoRA, arXiv 2501.13198",
          "Class-incremental, without rehearsal: SD-LoRA forgets less than sequential LoRA while learning as well, "
          "and ends higher than sequential LoRA and InfLoRA.",
          "digits-split",
          {"Seq-LoRA": _lora(10, **CURRENT), "InfLoRA": RunSpec("inflora", {}, CURRENT),
           "SD-LoRA": RunSpec("sdlora", {}, CURRENT)},
          (Check("forgetting", "SD-LoRA", "less", "Seq-LoRA"), _learns("SD-LoRA", "Seq-LoRA"),
           Check("acc", "SD-LoRA", "greater", "Seq-LoRA"), Check("acc", "SD-LoRA", "greater", "InfLoRA")),
          ("Compare", "the accuracy matrices of SD-LoRA, InfLoRA and sequential LoRA on the split digits"),
          paper_preset="paper:sdlora",
          note="Rank 10 for all (SD-LoRA's and InfLoRA's); the loss masked to the task's classes, as SD-LoRA "
               "trains. The paper's Table 2 compares with InfLoRA and full fine-tuning."),
)


def get_claim(key: str) -> Claim:
    for c in CLAIMS:
        if c.key == key:
            return c
    raise UserError(f"unknown claim {key!r}; the claims are: {', '.join(c.key for c in CLAIMS)}.")


# -- the setting a claim runs in -----------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """Where the claims run: their own stream, backbone and length, or another (`cldash claims --stream S
    --backbone B --steps-per-task N`); None keeps the claim's own."""

    stream: str | None = None
    backbone: str | None = None
    steps_per_task: int | None = None
    trials: int = TRIALS      # the tuned regime's search budget (each run's search: `cldash tune --trials`)

    def text(self, claim: Claim) -> str:
        stream = self.stream or claim.stream
        cfg = resolved_config({"stream": stream, **({"backbone": self.backbone} if self.backbone else {})})
        return f"{stream}, {cfg['backbone']}, {self.steps_per_task or cfg['steps_per_task']} steps per task"

    def refusal(self, claim: Claim) -> str | None:
        """Why the claim cannot run in this setting, or None."""
        if self.stream and self.stream != claim.stream and claim.stream_options:
            return (f"{claim.key} is about its own task order of {claim.stream} (stream options "
                    f"{claim.stream_options}); it does not carry over to {self.stream}.")
        return None


OWN = Setting()


def run_values(claim: Claim, label: str, setting: Setting = OWN) -> dict:
    """The values of one of a claim's runs in the common regime, before resolve and without a seed: the target a
    tuning search of that run tunes."""
    spec = claim.runs[label]
    run = dict(spec.run)
    if setting.stream and setting.stream != claim.stream:
        run.pop("stream_options", None)
    values = {"method": spec.method, "stream": setting.stream or claim.stream, "method_options": dict(spec.options),
              **run}
    if setting.backbone:
        values["backbone"] = setting.backbone
    if setting.steps_per_task:
        values["steps_per_task"] = setting.steps_per_task
    return values


def run_preset(claim: Claim, method: str, regime: str) -> str:
    """The preset of `method`'s runs in a claim under a regime (the tuned regime starts from common)."""
    from cldash.methods import paper_presets  # deferred: imports torch; pages import claims at start-up

    if regime in ("common", "tuned"):
        return "common"
    if claim.paper_preset == "paper":
        return "paper" if method in paper_presets() else "common"
    return claim.paper_preset


def paper_is_common(claim: Claim) -> bool:
    """Whether the claim's paper regime is its common one (no run has a paper preset): then it is not decided
    twice from the same runs."""
    return all(run_preset(claim, spec.method, "paper") == "common" for spec in claim.runs.values())


def config(claim: Claim, label: str, regime: str, seed: int, setting: Setting = OWN,
           tuned: dict | None = None) -> dict:
    """The resolved configuration of one of a claim's runs (what is launched and what is matched); `tuned`: the
    tuned regime's best parameters by label (cldash.analysis.tuning)."""
    values = {**run_values(claim, label, setting), "seed": seed,
              "preset": run_preset(claim, claim.runs[label].method, regime)}
    if regime == "tuned":
        values = trial_values(values, (tuned or {})[label])
    cfg = resolved_config(values)
    cfg["name"] = f"{label} · {claim.key} · {regime} · seed {seed}"
    return cfg


def tuned_params(store, claim: Claim, setting: Setting = OWN, trials: int = TRIALS) -> dict[str, dict | None]:
    """Each run's best parameters from its finished search (None: not searched yet)."""
    return {label: best_params(store, run_values(claim, label, setting), trials) for label in claim.runs}


def matching_runs(store, claim: Claim, regime: str, runs: list[dict] | None = None, setting: Setting = OWN,
                  tuned: dict | None = None) -> dict[str, dict[int, dict]]:
    """{label: {seed: run}} of the store's runs whose configuration is exactly one the claim needs (any status;
    the latest run of a seed wins, a finished one over any other)."""
    wanted = {match_key(config(claim, label, regime, 0, setting, tuned)): label for label in claim.runs}
    out: dict[str, dict[int, dict]] = {label: {} for label in claim.runs}
    stream = setting.stream or claim.stream
    for run in runs if runs is not None else store.runs(stream=stream):
        if run["stream"] != stream or run["method"] not in {spec.method for spec in claim.runs.values()}:
            continue
        label = wanted.get(stored_key(json.dumps(run["config"], sort_keys=True, default=str)))
        if label is None:
            continue
        seed, have = run["config"]["seed"], out[label].get(run["config"]["seed"])
        if have is None or (run["status"] == "finished") >= (have["status"] == "finished"):
            out[label][seed] = run
    return out


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


# -- the decision ---------------------------------------------------------------------------------

def _mean(values: dict[int, float]) -> float:
    xs = [v for v in values.values() if math.isfinite(v)]
    return statistics.fmean(xs) if xs else float("nan")


def guard(check: Check, la: dict[str, float], margin: float) -> str | None:
    """The learned-enough guard: why a check comparing outcomes cannot be read (a run in it learns more than
    `margin` below the best learner of the claim), or None."""
    if check.metric not in GUARDED or check.b is None:
        return None
    finite = {k: v for k, v in la.items() if math.isfinite(v)}
    if not finite:
        return None
    best = max(finite, key=finite.get)
    for side in (check.a, check.b):
        if math.isfinite(la[side]) and la[side] < finite[best] - margin:
            return (f"not comparable: {side} learns too little (LA {la[side]:.2f} against {best}'s "
                    f"{finite[best]:.2f}, more than the guard's {margin:g} below)")
    return None


def decide_check(check: Check, a: dict[int, float], b: dict[int, float] | float, la: dict[str, float],
                 margin: float) -> dict:
    """One check's state and evidence: the guard first, then the paired difference (cldash.analysis.evidence)."""
    d = paired(a, b)
    delta = delta_of(check.metric)
    refused = guard(check, la, margin)
    if refused:
        state, why = "not comparable", refused
    elif d["n"] < first_seeds():
        state, why = "undecided", f"{d['n']} of the {first_seeds()} seeds a check needs before it is read"
    else:
        state, why = decide(check.relation, d, check.margin, delta, (check.a, check.b or f"{check.value:g}"))
    return {"state": state, "verdict": STATE_TEXT.get(state, state), "why": why, "delta": delta,
            "detectable": detectable(d) if d["n"] else float("inf"), **d}


def overall(states: set[str]) -> str:
    """A claim's verdict from its checks' states: any check contradicted (the opposite, or no difference) -> it
    does not hold; else any undecided -> not enough evidence; else any guarded -> not comparable; else holds."""
    if states & {"opposite", "equivalent"}:
        return "does not hold"
    if "undecided" in states:
        return "not enough evidence"
    if "not comparable" in states:
        return "not comparable"
    return "holds"


def seeds_per_run(claim: Claim, checks: list[dict]) -> dict[str, int]:
    """The seeds each run wants by the stopping rule: the first seeds for every run; for the runs of a check
    that is still undecided, the schedule's next point after the seeds the check has (a decided check's runs
    stop there, so a claim's clear checks do not make its unclear ones cost more)."""
    wanted = dict.fromkeys(claim.runs, first_seeds())
    for spec, c in zip(claim.checks, checks, strict=True):
        if c["state"] == "undecided" and c["n"] >= first_seeds():
            for label in (spec.a, spec.b):
                if label is not None:
                    wanted[label] = max(wanted[label], seeds_wanted(c["n"], False))
    return wanted


def _values(store, claim: Claim, finished: dict) -> dict:
    metrics = sorted({c.metric for c in claim.checks} | {"la", "acc", "forgetting"})
    return {label: {m: {s: run_metric(store, r, m) for s, r in by_seed.items()} for m in metrics}
            for label, by_seed in finished.items()}


def verdict(store, claim: Claim, regime: str = "common", runs: list[dict] | None = None, setting: Setting = OWN,
            margin: float = GUARD_MARGIN) -> dict:
    """The claim's verdict under a regime in a setting, with its evidence: {"verdict", "checks": [...], "runs":
    {label: {seed: run id}}, "values": {label: {metric: {seed: value}}}, "missing": configurations to launch
    (the first seeds, or the next ones the stopping rule asks for), "seeds_wanted", "reported", ...}."""
    if regime not in REGIMES:
        raise UserError(f"regime must be one of {', '.join(REGIMES)} (got {regime!r}).")
    base = {"claim": claim.key, "regime": regime, "setting": setting.text(claim), "checks": [],
            "runs": {}, "values": {}, "pending": 0, "missing": 0, "to_launch": [], "seeds_wanted": 0,
            "same_as": "common" if regime == "paper" and paper_is_common(claim) else None,
            "reported": [r.__dict__ for r in reported(claim.key)],
            "paper_setting": paper_setting(claim.key, setting.text(claim))}
    refusal = setting.refusal(claim)
    if refusal:
        return {**base, "verdict": "not in this setting", "why": refusal}
    tuned = tuned_params(store, claim, setting, setting.trials) if regime == "tuned" else None
    if tuned is not None and any(v is None for v in tuned.values()):
        todo = [label for label, v in tuned.items() if v is None]
        command = f"cldash tune --claim {claim.key}" + (f" --trials {setting.trials}" if setting.trials != TRIALS
                                                         else "")
        return {**base, "verdict": "not tuned yet", "why": f"{len(todo)} of its {len(tuned)} runs have no finished "
                f"search of {setting.trials} trials ({', '.join(todo)}): `{command}` runs them", "untuned": todo}
    found = matching_runs(store, claim, regime, runs, setting, tuned)
    finished = {label: {s: r for s, r in by_seed.items() if r["status"] == "finished"}
                for label, by_seed in found.items()}
    values = _values(store, claim, finished)
    la = {label: _mean(values[label]["la"]) for label in claim.runs}
    labels = {k: k for k in claim.runs}
    checks = []
    for check in claim.checks:
        b = values[check.b][check.metric] if check.b else check.value
        checks.append({"check": check.text(labels), "metric": check.metric,
                       **decide_check(check, values[check.a][check.metric], b, la, margin)})
    states = {c["state"] for c in checks}
    wanted = seeds_per_run(claim, checks)
    todo = [config(claim, label, regime, seed, setting, tuned) for label in claim.runs
            for seed in range(wanted[label])
            if found[label].get(seed, {}).get("status") not in ("finished", "queued", "running")]
    return {**base, "verdict": overall(states), "checks": checks, "la": la, "seeds_wanted": max(wanted.values()),
            "seeds_per_run": wanted,
            "runs": {label: {s: r["id"] for s, r in sorted(by_seed.items())} for label, by_seed in finished.items()},
            "pending": sum(1 for by_seed in found.values() for r in by_seed.values()
                           if r["status"] in ("queued", "running")),
            "missing": len(todo), "to_launch": todo, "values": values, "tuned": tuned}


def verdicts(store, regimes: tuple[str, ...] = REGIMES, runs: list[dict] | None = None, setting: Setting = OWN,
             claims: tuple[Claim, ...] | None = None, margin: float = GUARD_MARGIN) -> list[dict]:
    """Every claim's verdict under each regime, from one read of the store's runs (or these runs)."""
    runs = store.runs() if runs is None else runs
    return [verdict(store, c, regime, runs, setting, margin) for c in (claims or CLAIMS) for regime in regimes]


def to_launch(store, claims: tuple[Claim, ...] = CLAIMS, regimes: tuple[str, ...] = REGIMES,
              runs: list[dict] | None = None, setting: Setting = OWN, margin: float = GUARD_MARGIN) -> list[dict]:
    """The configurations these claims still need under these regimes (their first seeds, or the next seeds the
    stopping rule asks for where a check is undecided), each once (claims share runs)."""
    return distinct_configs(verdicts(store, regimes, runs, setting, claims, margin))


def distinct_configs(vs: list[dict]) -> list[dict]:
    """The configurations these verdicts still need, each once (claims share runs)."""
    out, seen = [], set()
    for v in vs:
        for cfg in v["to_launch"]:
            key = (match_key(cfg), cfg["seed"])
            if key not in seen:
                seen.add(key)
                out.append(cfg)
    return out


def launch_missing(store, claims: tuple[Claim, ...] = CLAIMS, regimes: tuple[str, ...] = REGIMES,
                   start: bool = True, setting: Setting = OWN, margin: float = GUARD_MARGIN) -> list[int]:
    """Queue the runs `to_launch` names (cldash.runs.launch); launching again while they are queued adds nothing. A
    launch key counts the earlier attempts at the configuration, so a failed run is retried with a new row."""
    configs = to_launch(store, claims, regimes, setting=setting, margin=margin)
    if not configs:
        return []
    tries = {}
    for r in store.runs():
        k = (match_key(r["config"]), r["config"]["seed"])
        tries[k] = tries.get(k, 0) + 1
    keys = []
    for cfg in configs:
        k = (match_key(cfg), cfg["seed"])
        digest = hashlib.sha1(f"{k[0]}|{k[1]}".encode()).hexdigest()[:16]
        keys.append(f"claims:{digest}:{tries.get(k, 0)}")
    return launch(store, configs, keys, group_key="claims", names=[c["name"] for c in configs], start=start,
                  priority="batch")   # a lesson launched meanwhile goes first


def shipped_study() -> dict:
    """The verdicts of the study that ships with the package (bench/claims_study.py at 100 steps a task, trimmed
    to what the Claims page shows): its date, its versions ("machine"), the command that reproduces it, and a
    verdict per claim and regime. The page shows it on a store without claim runs, so a class sees an answer."""
    study = json.loads(resources.files("cldash.analysis").joinpath("data/claims_study.json").read_text())
    return {**study, "by_claim": {(v["claim"], v["regime"]): v["verdict"] for v in study["verdicts"]}}
