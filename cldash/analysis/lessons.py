"""Classroom lessons as data: a question, a one-click launch that finishes in about a minute, a guided reading.

A `Lesson` has the same shape as a claim (`cldash.analysis.claims`): the runs it launches are `RunSpec`s (method, method
options, run options) on one stream, here shortened (fewer steps per task, fewer tasks) so that the lesson's runs
finish in about a minute on a 2-core laptop, two at a time. Its reading is an ordered list of `Step`s: the page
(and the chart on it) to open, what to look at, what the class should notice, and the paper claim it illustrates
(a key of `cldash.analysis.claims.CLAIMS`, or none). `seconds` is the wall time measured on the reference machine (2 CPU
cores, two runs at once, the default). Nothing here trains or draws: `launch_lesson` queues runs through
`cldash.runs.launch.launch`, and `lesson_runs` finds a lesson's runs in the store, so the Lessons page, the welcome page
and `cldash lessons` share one definition.

A teacher may want a 30 s or a 3 minute version: every function takes `steps_per_task`, which replaces the
lesson's own length (the runs of each length are separate runs, found and launched separately).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cldash.analysis.claims import ADVERSARIAL_ROTATIONS, CLAIMS, RunSpec
from cldash.analysis.matching import match_key, resolved_config
from cldash.core.errors import UserError
from cldash.runs.launch import launch

# When `seconds` was measured: 2026-12-02, `cldash lessons --launch KEY --wait` into an empty store, two runs at
# once, on the reference machine's 2 otherwise idle cores (load average under 2), from the command to the last
# run's end. With the cores shared by other work (load average 6 to 9) the same lessons took 47 s to 107 s.

# the pages a reading may name, and their files (app.py's navigation)
PAGES = {"Runs": "pages/runs.py", "Launch": "pages/launch.py", "Live": "pages/live.py",
         "Compare": "pages/compare.py", "Claims": "pages/claims.py", "Spectra": "pages/spectra.py",
         "Ranks": "pages/ranks.py", "Orders": "pages/orders.py", "Methods": "pages/methods.py",
         "Lessons": "pages/lessons.py"}
STREAM = "digits-rotate"
THREE = [60.0, 120.0, 180.0]   # three rotations instead of five: a lesson's stream, half the time of the full one
# what a lesson sets for every run: spectra every 10 steps (dense ones every 25) so that the Spectra page shows
# them move within a short task; evaluation every 50 steps (the default), since an evaluation of every task costs
# about as much as a dozen training steps: every 25 steps made a lesson about half again as long
RUN_DEFAULTS = {"eval_interval": 50, "spectra_interval": 10, "dense_spectra_interval": 25}
# the module a Spectra step opens on: the first adapted module of the shipped ViT, the one the Spectra page opened on
# before a step's link named a module
MODULE = "vit.layers.0.attention.k_proj"


# The sections a step may scroll to: page -> {anchor: the header the page draws with that anchor}; the lessons'
# tests check that each page draws these headers with these anchors. A step with no section opens its page at the
# top: Spectra's singular values over steps and Ranks' active rank per module are the first charts there; Live and
# Orders have no anchored sections (yet).
SECTIONS = {"Compare": {"at-a-glance": "At a glance", "accuracy-matrices": "Accuracy matrices",
                        "difference": "Difference", "metrics": "Metrics",
                        "accuracy-against-forgetting": "Accuracy against forgetting"},
            "Spectra": {"spectrum-at-one-step": "Spectrum at one step, across runs",
                        "shape-measures": "Shape measures over steps"}}
# the pages whose state a step can set beyond the section: which run the page shows (a label of the lesson's runs),
# and on Spectra the update kind, the module and the shape measures drawn
RUN_PAGES = ("Spectra", "Ranks")
UPDATE_KINDS = ("cumulative", "task")


@dataclass(frozen=True)
class Step:
    """One step of a lesson's reading: open `page` at `chart`, look at `look`, notice `notice`.

    The rest is the page state the step describes, which its link carries (pages/links.py): the page opens on
    `run` (a label of the lesson's runs) with `kind` and `module` chosen and `measures` drawn, scrolled to the
    header `section` (an anchor of SECTIONS[page]). None leaves the page's own default."""

    page: str                   # a key of PAGES
    chart: str                  # the chart or table on that page, as the page titles it
    look: str                   # what to look at
    notice: str                 # what the class should notice (checked against runs at the lesson's length)
    claim: str | None = None    # the paper claim it illustrates: a key of cldash.analysis.claims.CLAIMS
    section: str | None = None  # the header to scroll to: a key of SECTIONS[page]
    run: str | None = None      # the run the page shows first: a key of the lesson's runs (RUN_PAGES only)
    kind: str | None = None     # Spectra: the update kind, one of UPDATE_KINDS
    module: str | None = None   # Spectra: the adapted module (a module name of the lesson's backbone)
    measures: tuple[str, ...] = ()   # Spectra: the shape measures drawn (keys of dashboard.labels.MEASURE_LABELS)

    def link_state(self, run_ids: dict[str, int]) -> dict[str, str]:
        """The query parameters of this step's link: `run_ids` maps the lesson's run labels to the store's ids (a
        run not launched yet is left out, and the page keeps its default)."""
        state = {"section": self.section, "kind": self.kind, "module": self.module,
                 "run": run_ids.get(self.run) if self.run else None,
                 "measures": ",".join(self.measures) or None}
        return {k: str(v) for k, v in state.items() if v is not None}

    def opens(self, run_ids: dict[str, int]) -> str:
        """What the link opens, in words for its tooltip: "Opens Spectra on LoRA r=16 (#1), update: task, module
        vit.layers.0.attention.k_proj, at Shape measures over steps." """
        bits = []
        if self.run:
            bits.append(f"on {self.run}" + (f" (#{run_ids[self.run]})" if self.run in run_ids else ""))
        if self.kind:
            bits.append(f"update: {self.kind}")
        if self.module:
            bits.append(f"module {self.module}")
        if self.section:
            bits.append(f"at {SECTIONS[self.page][self.section]}")
        return f"Opens {self.page} " + ", ".join(bits) + "." if bits else f"Opens {self.page} with the lesson's runs."


@dataclass(frozen=True)
class Lesson:
    key: str
    title: str
    question: str
    runs: dict[str, RunSpec]             # label -> configuration
    reading: tuple[Step, ...]
    steps_per_task: int                  # the lesson's own length
    stream_options: dict = field(default_factory=dict)
    seconds: int = 0                     # wall time measured at the lesson's length, 2 runs at once, 2 CPU cores
    note: str = ""

    @property
    def tasks(self) -> int:
        return len(self.stream_options.get("angles", [])) or 5


def _lora(rank: int, **run) -> RunSpec:
    return RunSpec("lora", {"rank": rank, "alpha": 2.0 * rank}, {"policy": "merge", **run})


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "forgetting", "Catastrophic forgetting",
        "A model learns three rotations of handwritten digits one after the other. What happens to the first "
        "rotation while it learns the others, with full fine-tuning and with LoRA?",
        {"full fine-tuning": RunSpec("full"), "LoRA r=8": _lora(8)},
        (Step("Compare", "Accuracy matrices",
              "row 'after T1' (each method scores about 0.9 on T1, the diagonal), then down the T1 column",
              "the T1 column falls from about 0.9 to about 0.15 by the end, for both: the model forgets what it "
              "learnt first. LoRA, which trains a few percent of the weights, forgets as much as full fine-tuning "
              "here.", section="accuracy-matrices"),
         Step("Compare", "Metrics",
              "forgetting and general-task retention of the two runs",
              "forgetting is about 0.75 for both, and the general column (upright digits, the pre-training task) "
              "falls from 0.95 before training to under 0.4: fine-tuning also erodes what the model knew before.",
              "study-rank", section="metrics"),
         Step("Live", "score of every task over training",
              "each task's score over the steps, with the task boundaries",
              "a task's score climbs while it is trained and drops as soon as the next task starts.")),
        steps_per_task=150, stream_options={"angles": THREE}, seconds=19),
    Lesson(
        "rank", "Rank, plasticity and forgetting",
        "Does a larger LoRA rank learn each task better, forget more, or both? And what does CoDyRA, which "
        "chooses its rank per module, do?",
        {"LoRA r=1": _lora(1), "LoRA r=4": _lora(4), "LoRA r=16": _lora(16), "CoDyRA": RunSpec("codyra")},
        (Step("Compare", "Metrics",
              "learning accuracy (the score on each task right after learning it) and forgetting, rank by rank",
              "rank 1 learns least (learning accuracy about 0.76 against 0.88) and forgets least (about 0.58 against "
              "0.71); ranks 4 and 16 are alike on both. Two papers disagree about higher ranks (CoDyRA: they forget "
              "more; the forgetting study: less): the Claims page decides each, seeds until clear.",
              "codyra-rank", section="metrics"),
         Step("Ranks", "active rank per module over steps",
              "CoDyRA's active rank in each module over the steps (pick the CoDyRA run)",
              "every module starts at rank 16; by the end some have pruned theirs (to 13 here) and others have not: "
              "CoDyRA does not keep the same rank everywhere.",
              "codyra-rank", run="CoDyRA"),
         Step("Compare", "Accuracy against forgetting",
              "where the four runs sit: high accuracy and low forgetting is the corner to be in",
              "all four end near the same final accuracy (about 0.4); CoDyRA's update is smaller than LoRA r=16's "
              "(Spectra: ‖ΔW‖ about 3.4 against 4.7) yet it forgets about as much at this length.",
              "study-rank", section="accuracy-against-forgetting")),
        steps_per_task=100, stream_options={"angles": THREE}, seconds=30),
    Lesson(
        "spectra", "Spectral imbalance",
        "LoRA's update is a matrix of rank r. Is its energy spread over its r directions, or does one direction "
        "take almost all of it? EBLoRA keeps the spectrum balanced on purpose: does it forget less?",
        {"LoRA r=16": _lora(16), "EBLoRA": RunSpec("eblora")},
        (Step("Spectra", "singular values over steps",
              "the heatmap of one module's singular values, first for LoRA, then for EBLoRA (update: task)",
              "LoRA's first singular values are much larger than the rest (a bright band at the top, a dark tail); "
              "EBLoRA's are all about the same size.",
              "eblora-spectrum", run="LoRA r=16", kind="task", module=MODULE),
         Step("Spectra", "Shape measures over steps",
              "top-1 energy share and effective rank of the per-task update",
              "LoRA's top-1 energy share is about 0.5 (half of the update's energy in one direction); EBLoRA's "
              "stays at 1/16 = 0.06, a perfectly flat spectrum.",
              "eblora-spectrum", section="shape-measures", run="LoRA r=16", kind="task", module=MODULE,
              measures=("top1_energy", "erank")),
         Step("Compare", "Metrics",
              "forgetting and final accuracy of the two runs",
              "here EBLoRA forgets about half as much as LoRA (0.38 against 0.78) and ends higher (final accuracy "
              "0.60 against 0.37); the Claims page decides the claim, adding seeds until the answer is clear.",
              "eblora-spectrum", section="metrics")),
        steps_per_task=150, stream_options={"angles": THREE}, seconds=21),
    Lesson(
        "where", "Where the update lives",
        "PiSSA trains exactly the pre-trained weight's top directions; LoRA, WeGeFT and LoRETTA start elsewhere. "
        "Does an adapter's update land in the directions the pre-trained weight uses most, and does that decide "
        "how much it forgets?",
        {"LoRA r=8": _lora(8), "PiSSA": RunSpec("pissa", {}, {"policy": "merge"}),
         "WeGeFT": RunSpec("wegeft", {}, {"policy": "merge"}), "LoRETTA": RunSpec("loretta", {}, {"policy": "merge"})},
        (Step("Spectra", "Shape measures over steps",
              "the measure \"energy in W0's top directions\" (add it to the measures), run by run (update: "
              "cumulative)",
              "PiSSA and WeGeFT (whose update is built from W0 itself) put most of their update's energy in the "
              "pre-trained weight's top directions (about 0.7 and 0.9 at the end), LoRA about half (0.46), LoRETTA "
              "little (0.16).",
              "study-pissa", section="shape-measures", run="LoRA r=8", kind="cumulative", module=MODULE,
              measures=("w0_energy", "frobenius")),
         Step("Compare", "Metrics",
              "forgetting and general-task retention of the four runs",
              "at this length the study's claim does not show: PiSSA forgets about as much as LoRA (0.72 against "
              "0.76) and WeGeFT and LoRETTA a little less (about 0.63). Energy in the top directions alone does not "
              "predict forgetting here; the Claims page decides it at full length, seeds until clear.",
              "study-pissa", section="metrics")),
        steps_per_task=100, stream_options={"angles": THREE}, seconds=34),
    Lesson(
        "rehearsal", "Rehearsal and regularisation",
        "Two classic fixes against forgetting: replay a few stored examples of earlier tasks, or penalise changes "
        "to the weights that mattered (EWC). How much does each help LoRA?",
        {"LoRA r=8": _lora(8, policy="single"), "LoRA + replay": _lora(8, policy="single", aid_preset="replay"),
         "LoRA + EWC": _lora(8, policy="single", aid_preset="ewc")},
        (Step("Compare", "Accuracy matrices",
              "the T1 column of each matrix",
              "with replay the T1 column stays high (0.86 after T1, still 0.70 after T3): 200 stored examples are "
              "enough to keep the first task. Without help it falls to 0.08, with EWC to 0.12.",
              section="accuracy-matrices"),
         Step("Compare", "Metrics",
              "forgetting and learning accuracy of the three runs",
              "replay cuts forgetting from about 0.79 to 0.13 and doubles the final accuracy (0.75 against 0.35); "
              "EWC helps a little (forgetting 0.71) and makes each new task a little harder to learn (learning "
              "accuracy 0.84 against 0.88): protecting old weights costs plasticity.", section="metrics")),
        steps_per_task=100, stream_options={"angles": THREE}, seconds=29,
        note="one LoRA adapter through all tasks (policy single), so that EWC has weights to protect; replay: "
             "TRACE's buffer of 200 examples, balanced; EWC: TRACE's online EWC, lambda 400 (`cldash presets`)."),
    Lesson(
        "order", "Task order and gradient conflict",
        "The same five rotations in two orders: the natural one (36° to 180°) and the adversarial one, which puts "
        "next to each other the rotations whose gradients oppose most. Does the order change how much is "
        "forgotten?",
        {"LoRA, natural order": _lora(8), "LoRA, adversarial order":
            _lora(8, stream_options={"angles": ADVERSARIAL_ROTATIONS})},
        (Step("Orders", "the gradient-conflict matrix",
              "the cosine between the gradients of every pair of rotations (measure the order there first)",
              "in the natural order consecutive rotations' gradients agree (their cosines sum to 1.29 on the shipped "
              "backbone); the adversarial order 72°, 180°, 108°, 36°, 144° makes them disagree (0.22).",
              "slice-adversarial"),
         Step("Compare", "Metrics",
              "forgetting, final accuracy and general-task retention of the two orders",
              "at this length the two orders forget about as much (0.62 and 0.61) and end at about the same "
              "accuracy (0.40 and 0.39); what differs is the general task, which the adversarial order keeps less "
              "of (retention 0.28 against 0.37). SLICE's claim is about its own method on this order: see the "
              "Claims page.",
              "slice-adversarial", section="metrics")),
        steps_per_task=100, seconds=21,
        note="five tasks (the adversarial order is a permutation of all five rotations)."),
)


def get_lesson(key: str) -> Lesson:
    for lesson in LESSONS:
        if lesson.key == key:
            return lesson
    raise UserError(f"unknown lesson {key!r}; the lessons are: {', '.join(x.key for x in LESSONS)}.")


def group_key(lesson: Lesson) -> str:
    return f"lesson:{lesson.key}"


def check_length(steps_per_task: int | None) -> None:
    if steps_per_task is not None and not 1 <= int(steps_per_task) <= 10_000:
        raise UserError(f"steps per task must be between 1 and 10000 (got {steps_per_task}).")


def config(lesson: Lesson, label: str, steps_per_task: int | None = None, seed: int = 0) -> dict:
    """The resolved configuration of one of a lesson's runs, at the lesson's length or `steps_per_task`."""
    check_length(steps_per_task)
    spec = lesson.runs[label]
    run = dict(spec.run)
    stream_options = {**lesson.stream_options, **run.pop("stream_options", {})}
    values = {"method": spec.method, "stream": STREAM, "seed": seed, "method_options": dict(spec.options),
              "stream_options": stream_options, **RUN_DEFAULTS,
              "steps_per_task": int(steps_per_task or lesson.steps_per_task), **run}
    cfg = resolved_config(values)
    cfg["name"] = f"{label} · lesson {lesson.key}"
    return cfg


def configs(lesson: Lesson, steps_per_task: int | None = None) -> dict[str, dict]:
    return {label: config(lesson, label, steps_per_task) for label in lesson.runs}


def lesson_runs(store, lesson: Lesson, steps_per_task: int | None = None,
                runs: list[dict] | None = None) -> dict[str, dict | None]:
    """{label: the store's run of that configuration in the lesson's group, or None}: the latest one, a finished
    or active run over a failed, cancelled or interrupted one."""
    wanted = {match_key(cfg): label for label, cfg in configs(lesson, steps_per_task).items()}
    out: dict[str, dict | None] = {label: None for label in lesson.runs}
    rank = {"finished": 2, "running": 1, "queued": 1}
    rows = runs if runs is not None else store.runs(ids=store.group_run_ids(group_key(lesson)))
    for run in rows:
        label = wanted.get(match_key(run["config"]))
        if label is None:
            continue
        have = out[label]
        if have is None or rank.get(run["status"], 0) >= rank.get(have["status"], 0):
            out[label] = run
    return out


def launch_lesson(store, key: str, steps_per_task: int | None = None, start: bool = True) -> list[int]:
    """Queue the lesson's runs (group ``lesson:KEY``) and return their ids, one per run in the lesson's order.
    A run of the same configuration that is queued, running or finished is reused, so a double click (or a second
    class) launches once; a failed, cancelled or interrupted one is launched again under a new launch key."""
    lesson = get_lesson(key)
    cfgs = configs(lesson, steps_per_task)
    found = lesson_runs(store, lesson, steps_per_task)
    todo = [label for label in lesson.runs
            if found[label] is None or found[label]["status"] not in ("queued", "running", "finished")]
    ids = {label: found[label]["id"] for label in lesson.runs if label not in todo}
    if todo:
        group = store.runs(ids=store.group_run_ids(group_key(lesson)))
        keys = []
        for label in todo:
            k = match_key(cfgs[label])
            tries = sum(1 for r in group if match_key(r["config"]) == k)
            keys.append(f"lesson:{key}:{hashlib.sha1(k.encode()).hexdigest()[:16]}:{tries}")
        new = launch(store, [cfgs[label] for label in todo], keys, group_key=group_key(lesson),
                     names=[cfgs[label]["name"] for label in todo], start=start)
        ids.update(zip(todo, new))
    return [ids[label] for label in lesson.runs]


def progress(runs: dict[str, dict | None]) -> dict:
    """The state of a lesson's runs: {"launched", "finished", "active", "failed", "progress" (0..1 over all
    runs), "done" (every run finished)}."""
    rows = [r for r in runs.values() if r is not None]
    statuses = [r["status"] for r in rows]
    total = len(runs) or 1
    share = sum(1.0 if r["status"] == "finished" else float(r["progress"] or 0.0) for r in rows) / total
    return {"launched": len(rows), "finished": statuses.count("finished"),
            "active": sum(s in ("queued", "running") for s in statuses),
            "failed": sum(s in ("failed", "cancelled", "interrupted") for s in statuses),
            "progress": min(1.0, share), "done": len(rows) == len(runs) and all(s == "finished" for s in statuses)}


def run_ids(runs: dict[str, dict | None]) -> list[int]:
    return [r["id"] for r in runs.values() if r is not None]


def duration(lesson: Lesson) -> str:
    """The lesson's measured wall time in words ('about 1 min 10 s'), or '' where it was not measured."""
    if not lesson.seconds:
        return ""
    m, s = divmod(int(round(lesson.seconds / 5.0) * 5), 60)
    return "about " + (f"{m} min" if m else "") + (" " if m and s else "") + (f"{s} s" if s or not m else "")


def summary(lesson: Lesson) -> str:
    """One line on a lesson's runs and length: '2 runs · 3 tasks × 150 steps · about 20 s on 2 CPU cores'."""
    bits = [f"{len(lesson.runs)} runs", f"{lesson.tasks} tasks × {lesson.steps_per_task} steps"]
    if duration(lesson):
        bits.append(duration(lesson) + " on 2 CPU cores")
    return " · ".join(bits)


def claim_keys() -> set[str]:
    return {c.key for c in CLAIMS}
