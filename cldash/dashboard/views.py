"""What each dashboard page loads and says: functions from the store to plain data, and the pages' sentences
built from it (no Streamlit).

Pages call these and hand the result to cldash.dashboard.figures; tests and bench/dashboard_load.py call
them directly. Each loads only what its page draws (one module's spectra, the final rows of R,
rows newer than the last step seen), in a few batched queries. Names of runs, settings and groups come from
cldash.dashboard.labels.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cldash.analysis import claims, tuning
from cldash.analysis.claims import Claim
from cldash.analysis.matching import match_key, resolved_config
from cldash.config import RunConfig, describe_run, resolve
from cldash.core.errors import UserError
from cldash.dashboard.labels import (
    fork_note,
    launcher_label,
    run_color,
    run_label,
    run_name,
    run_refs,
    run_symbol,
    setting_key,
    setting_labels,
    short_setting_name,
)
from cldash.measures.metrics import METRICS, summarize
from cldash.runs.priority import PRIORITIES, priority_name
from cldash.store import Store

# Scalars that count something (ranks, dimensions, directions): drawn with whole-number ticks.
COUNT_SCALARS = frozenset({"active_rank", "active_rank_total", "budget", "F_rank", "memory_dim", "old_rank",
                           "directions", "numerical_rank"})


def status_line(run: dict) -> tuple[float, str, str]:
    """What Live shows for a run's progress, from the run row alone: (fraction done, "cancelled · step 40/15000 ·
    task 1/5", a note). The note is the first line of the run's error unless it only restates the status and the
    step ("cancelled at step 41", written a moment after the last progress flush); the step shown is the one
    the run's progress says, so the two never disagree."""
    total = run.get("total_steps") or 0
    step = run.get("step") or 0
    text = f"{run['status']} · step {step}/{total or '?'}"
    if run.get("num_tasks"):
        text += f" · task {run.get('task') or 0}/{run['num_tasks']}"
    note = (run.get("error") or "").splitlines()[0] if run.get("error") else ""
    if re.fullmatch(rf"{re.escape(str(run['status']))}( \(.*\))? at step \d+", note):
        note = ""
    return (min(1.0, step / total) if total else 0.0), text, note


def boundaries(run: dict) -> list[int]:
    """Global steps at which each task ended (for dotted lines on step axes)."""
    steps = run["config"]["steps_per_task"]
    return [steps * t for t in range(1, (run.get("num_tasks") or 0) + 1)]


# -- compare -------------------------------------------------------------------------------------
@dataclass
class CompareData:
    runs: list[dict]
    matrices: dict[int, dict]
    metrics: pd.DataFrame            # one row per run
    by_setting: pd.DataFrame         # mean and spread over seeds, one row per setting


def run_metrics(run: dict, matrix: dict) -> dict[str, float]:
    """The stored summary of a finished run; for an unfinished one, metrics of the rows so far
    (undefined ones NaN) so that a live comparison shows something honest."""
    if run.get("summary"):
        return run["summary"]
    R = matrix["R"]
    if R.shape[0] >= 2 and R.shape[0] == R.shape[1] + 1 and np.isfinite(R).all():
        return summarize(R, matrix["general"])
    return {m.key: math.nan for m in METRICS}


def compare_data(store: Store, run_ids: list[int]) -> CompareData:
    runs = store.runs(ids=run_ids)
    matrices = store.accuracy_matrices_of(runs) if runs else {}   # the run rows read once, not twice
    rows = []
    settings = setting_labels([r["config"] for r in runs])
    for r, setting in zip(runs, settings):
        m = run_metrics(r, matrices[r["id"]])
        rows.append({"id": r["id"], "label": run_label(r), "setting": setting,
                     "setting_key": setting_key(r["config"]), "method": r["method"], "seed": r["seed"],
                     "status": r["status"], **{k.key: m.get(k.key, math.nan) for k in METRICS},
                     "name": run_name(r), "setting_name": short_setting_name(r["config"], setting),
                     "color": run_color(r["id"]), "symbol": run_symbol(r["id"])})
    metrics = pd.DataFrame(rows, columns=["id", "label", "setting", "setting_key", "method", "seed", "status",
                                          *[m.key for m in METRICS], "name", "setting_name", "color", "symbol"])
    return CompareData(runs, matrices, metrics, seed_summary(metrics))


def seed_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of each setting; with the runs' chart identity
    (compare_data's name, setting_name, color, symbol columns) the setting's short name ("name") and the
    colour and symbol of its first run."""
    keys = [m.key for m in METRICS]
    ident = [c for c in ("setting_name", "color", "symbol") if c in metrics]
    if metrics.empty:
        return pd.DataFrame(columns=["setting", "seeds", *keys, *[f"{k}_std" for k in keys],
                                     *(["name", "color", "symbol"] if ident else [])])
    g = metrics.groupby(["setting_key", "setting"], sort=False)
    mean = g[keys].mean()
    std = g[keys].std(ddof=1).add_suffix("_std")
    parts = [g.size().rename("seeds"), mean, std]
    if ident:
        parts.append(g[ident].first().rename(columns={"setting_name": "name"}))
    out = pd.concat(parts, axis=1).reset_index().drop(columns="setting_key")
    return out


def mean_sd_table(by_setting: pd.DataFrame) -> pd.DataFrame:
    """seed_summary's rows with each metric written "mean ± sd" ("mean" alone from a single seed)."""
    shown = by_setting.copy()
    for m in METRICS:
        shown[m.key] = [f"{mu:.3f} ± {sd:.3f}" if sd == sd else f"{mu:.3f}"
                        for mu, sd in zip(by_setting[m.key], by_setting[f"{m.key}_std"])]
    return shown


def mean_matrix(matrices: list[dict]) -> dict:
    """The cell-wise mean of several runs' accuracy matrices (one setting's seeds), with the standard
    deviation ("sd", NaN from a single value) and how many runs each row of R averages ("n"). A row is
    averaged over the runs that have it, so an unfinished seed does not blank the others' rows."""
    first = matrices[0]
    rows = sorted({r for m in matrices for r in m["rows"]})
    names = list(first["general"])

    def stacked(m: dict) -> np.ndarray:   # (rows x (T + general)) on the shared rows, NaN where m lacks a row
        Z = np.full((len(rows), len(first["tasks"]) + len(names)), np.nan)
        at = [rows.index(r) for r in m["rows"]]
        if at:
            cols = [np.asarray(m["R"], dtype=float)] + [np.asarray(m["general"][g], dtype=float)[:, None]
                                                        for g in names]
            Z[at] = np.hstack(cols)
        return Z

    Z = np.stack([stacked(m) for m in matrices])
    n = np.sum(np.isfinite(Z).any(axis=2), axis=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # all-NaN cells stay NaN
        mean = np.nanmean(Z, axis=0)
        sd = np.nanstd(Z, axis=0, ddof=1) if len(matrices) > 1 else np.full_like(mean, np.nan)
    T = len(first["tasks"])
    return {"R": mean[:, :T], "general": {g: list(mean[:, T + k]) for k, g in enumerate(names)}, "rows": rows,
            "tasks": list(first["tasks"]), "metric": first["metric"], "sd": sd, "n": [int(x) for x in n]}


def matrix_items(data: CompareData, per_setting: bool) -> list[dict]:
    """What the Compare page draws as accuracy matrices: one item per run ("R-<id>"), or one per setting
    ("S-<setting key>") with the mean of its runs' matrices (mean_matrix). Each item: key (for widgets),
    file (a CSV's name), title, matrix, ids (the runs behind it); a run's item also its lineage (the id of
    its earliest ancestor compared), parent, fork_after (the fork point, None for a run that is no fork) and
    fork_note. Runs come in lineage_order: a fork right after its parent."""
    if not per_setting:
        roots = lineage_roots(data.runs)
        return [{"key": f"R-{r['id']}", "file": f"run-{r['id']}-matrix", "title": run_label(r),
                 "matrix": data.matrices[r["id"]], "ids": [r["id"]], "lineage": roots[r["id"]],
                 "parent": r.get("parent_id"), "fork_after": r.get("fork_task") if r.get("parent_id") else None,
                 "fork_note": fork_note(r)}
                for r in lineage_order(data.runs)]
    items = []
    for (key, setting), g in data.metrics.groupby(["setting_key", "setting"], sort=False):
        ids = g["id"].tolist()
        have = [data.matrices[i] for i in ids if data.matrices[i]["rows"]]
        matrix = mean_matrix(have) if have else data.matrices[ids[0]]
        n = f"mean of {len(have)} seeds" if len(have) > 1 else f"seed {g['seed'].iloc[0]}"
        items.append({"key": f"S-{key}", "file": f"setting-{key}-mean-matrix", "title": f"{setting} · {n}",
                      "matrix": matrix, "ids": ids})
    return items


def matrix_pages(count: int, size: int) -> list[slice]:
    """`count` items in pages of at most `size` (at least one page, empty when there is nothing)."""
    return [slice(start, min(count, start + size)) for start in range(0, count, size)] or [slice(0, 0)]


def compare_summary(data: CompareData) -> str:
    """One line on what is compared: "50 runs · 10 settings × 5 seeds · 46 finished, 4 running"."""
    n, settings = len(data.runs), len(data.by_setting)
    seeds = sorted(set(data.by_setting["seeds"])) if settings else []
    per = "" if not seeds or seeds == [1] else f" × {seeds[0]} seeds" if len(seeds) == 1 else \
        f" × {seeds[0]} to {seeds[-1]} seeds"
    counts: dict[str, int] = {}
    for r in data.runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    statuses = ", ".join(f"{k} {s}" for s, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{n} run{'s' * (n != 1)} · {settings} setting{'s' * (settings != 1)}{per} · {statuses}"


# -- lineage: forks beside their parents ---------------------------------------------------------
def lineage_roots(runs: list[dict]) -> dict[int, int]:
    """For each run, the id of its earliest ancestor among `runs` (its own id when its parent is not among
    them)."""
    parent = {r["id"]: r.get("parent_id") for r in runs}
    roots = {}
    for r in runs:
        at, seen = r["id"], {r["id"]}
        while parent.get(at) in parent and parent[at] not in seen:   # `seen`: a damaged store cannot loop
            at = parent[at]
            seen.add(at)
        roots[r["id"]] = at
    return roots


def lineage_order(runs: list[dict]) -> list[dict]:
    """The runs in their order, except that each fork follows its parent (and the parent's earlier forks)
    when that parent is among them, so a fork is drawn next to the run it branched from."""
    roots = lineage_roots(runs)
    children: dict[int, list[dict]] = {}
    for r in runs:
        if roots[r["id"]] != r["id"]:
            children.setdefault(r["parent_id"], []).append(r)
    out, placed = [], set()

    def place(r: dict) -> None:
        if r["id"] in placed:
            return
        placed.add(r["id"])
        out.append(r)
        for child in children.get(r["id"], []):
            place(child)

    for r in runs:
        if roots[r["id"]] == r["id"]:
            place(r)
    for r in runs:   # only a cycle of parent ids (a damaged store) leaves a run unplaced
        place(r)
    return out


def missing_parents(runs: list[dict]) -> dict[int, int]:
    """{fork id: parent id} for the forks among `runs` whose parent is not among them (the Compare page
    offers to add it)."""
    ids = {r["id"] for r in runs}
    return {r["id"]: r["parent_id"] for r in runs if r.get("parent_id") and r["parent_id"] not in ids}


def addable_parents(store: Store, runs: list[dict]) -> dict[int, int]:
    """missing_parents of `runs` whose parent is still in the store (a deleted parent cannot be added)."""
    orphans = missing_parents(runs)
    if not orphans:
        return {}
    kept = {r["id"] for r in store.runs(ids=set(orphans.values()))}
    return {f: p for f, p in orphans.items() if p in kept}


def forks_note(orphans: dict[int, int]) -> str:
    """What the Compare page says of forks compared without their parents ({fork id: parent id})."""
    return (" · ".join(f"#{f} is a fork of #{p}" for f, p in orphans.items()) + ": compare each with its "
            "parent, beside it, with the fork point marked.")


def matrix_rows(items: list[dict], per_row: int) -> list[list[dict]]:
    """`items` (matrix_items, in lineage order) in rows of at most `per_row`. A run and its forks (the items
    sharing a "lineage") start a new row rather than break over two, so a fork sits beside its parent; a
    lineage longer than a row fills whole rows of its own."""
    groups: list[list[dict]] = []
    for item in items:
        if groups and item.get("lineage") is not None and groups[-1][0].get("lineage") == item["lineage"]:
            groups[-1].append(item)
        else:
            groups.append([item])
    rows: list[list[dict]] = []
    for group in groups:
        if rows and len(group) > 1 and len(rows[-1]) + len(group) > per_row:
            rows.append([])
        for item in group:
            if not rows or len(rows[-1]) >= per_row:
                rows.append([])
            rows[-1].append(item)
        if len(group) > per_row:   # what follows would look like one more fork of it
            rows.append([])
    return [row for row in rows if row]


def difference_defaults(items: list[dict]) -> tuple[int, int]:
    """The Compare page's difference A − B at first: the first fork against its parent when both are drawn
    (the rows up to the fork point are then 0, the rest is what the change did), else the first two."""
    at = {item["ids"][0]: k for k, item in enumerate(items) if len(item["ids"]) == 1}
    for k, item in enumerate(items):
        if item.get("parent") in at:
            return k, at[item["parent"]]
    return 0, 1


# -- groups --------------------------------------------------------------------------------------
def run_regime(run: dict) -> str:
    """"common" (the shared defaults) or the preset a run ran under ("paper", "paper:METHOD"); a row of
    Store.run_listing carries it as "regime"."""
    if "regime" in run:
        return run["regime"]
    return (run.get("config") or {}).get("preset") or "common"


def group_sizes(runs: list[dict]) -> list[tuple[str, int]]:
    """Each group of these runs with its number of runs, the group of the newest run first (as
    Store.run_groups answers from the store)."""
    sizes: dict[str, int] = {}
    newest: dict[str, int] = {}
    for r in runs:
        key = r.get("group_key")
        if key:
            sizes[key] = sizes.get(key, 0) + 1
            newest[key] = max(newest.get(key, 0), r["id"])
    return sorted(sizes.items(), key=lambda kv: -newest[kv[0]])


def filter_runs(runs: list[dict], status=(), method=(), stream=(), regime=(), group=(), launcher=(),
                host=()) -> list[dict]:
    """The runs passing every filter that has values (an empty one passes all); in `group`, "" stands for
    the runs in no group, in `host` for the runs that have not started on any (queued)."""
    return [r for r in runs if (not status or r["status"] in status) and (not method or r["method"] in method)
            and (not stream or r["stream"] in stream) and (not regime or run_regime(r) in regime)
            and (not group or (r.get("group_key") or "") in group)
            and (not launcher or launcher_label(r) in launcher) and (not host or (r.get("host") or "") in host)]


# -- the Runs page's words -----------------------------------------------------------------------
def listing_caption(runs: list[dict]) -> str:
    """The line under the runs table: "3 finished · 1 running — latest: #3 finished, #4 running" (the last 8), and
    while runs wait, the order they start in: "waiting: 2 interactive first, then 84 batch"."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    line = (" · ".join(f"{n} {status}" for status, n in sorted(counts.items())) + " — latest: " +
            ", ".join(f"#{r['id']} {r['status']}" for r in runs[-8:]))
    waiting = [priority_name(r) for r in runs if r["status"] == "queued" and not r.get("pid")]
    if waiting:
        by = {name: waiting.count(name) for name in PRIORITIES if name in waiting}
        line += " — waiting: " + ", then ".join(f"{n} {name}" + (" first" if i == 0 and len(by) > 1 else "")
                                                for i, (name, n) in enumerate(by.items()))
    return line


def resumed_message(done: list[tuple[int, int]]) -> str:
    """What the Runs page says after resuming runs, from (run id, the task it continues after; 0: from the
    start) pairs."""
    each = [f"#{run_id} from its checkpoint after task {task}" if task else
            f"#{run_id} from the start (it has no checkpoint)" for run_id, task in done]
    return f"Resumed {', '.join(each)}; the rows of each unfinished task were dropped, so nothing counts twice."


def delete_label(selected: int, active: int) -> tuple[str, str]:
    """The delete checkbox's label (how many of the selected runs it deletes) and the line under it (why not
    the active ones), short enough for a third of the page."""
    ended = selected - active
    still = "" if not active else \
        f"{active} {'is' if active == 1 else 'are'} still active: cancel {'it' if active == 1 else 'them'} first."
    if not active:
        label = "I want to delete the selected run" if selected == 1 else \
            f"I want to delete the {selected} selected runs"
    elif not ended:
        label = "Nothing to delete"
    else:
        label = f"I want to delete {ended} of the {selected} selected runs"
    return label, still


# -- live ----------------------------------------------------------------------------------------
@dataclass
class LiveCache:
    """Rows of one run seen so far; `update` adds only the rows newer than the last seen step."""

    run_id: int
    loss: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["step", "value"]))
    evals: pd.DataFrame = field(default_factory=pd.DataFrame)
    last_loss_step: int = 0
    last_eval_step: int = -1
    queries: int = 0

    def update(self, store: Store) -> LiveCache:
        new = store.scalars(self.run_id, names=["loss"], since_step=self.last_loss_step)
        if len(new):
            self.loss = pd.concat([self.loss, new[["step", "value"]]], ignore_index=True)
            self.last_loss_step = int(new.step.max())
        ev = store.evaluations(self.run_id, since_step=self.last_eval_step)
        if len(ev):
            self.evals = pd.concat([self.evals, ev], ignore_index=True) if len(self.evals) else ev
            self.last_eval_step = int(ev.step.max())
        self.queries += 2
        return self


# Columns of the Live page's overview table (live_overview), in the order it shows them.
OVERVIEW_COLUMNS = ["id", "run", "status", "progress", "task", "score", "each task now", "evaluated at", "scored tasks",
                    "metric", "label"]


def live_overview(store: Store, runs: list[dict], caches: dict[int, LiveCache]) -> pd.DataFrame:
    """The Live page's overview: one row per run, in the order of `runs`, for a table a class reads at once.

    - run: its chart name ('#4 LoRA r=8', labels.run_name), label: the long one (labels.run_label);
    - progress: the share of steps done (status_line, so the bar and the details below agree);
    - task: the task it trains now, "2/5 · rotate 90°" (as status_line counts it; "" before its first step);
    - score: the run's primary metric at its latest evaluation (an anytime one during a task, the row of R at a
      task's end), averaged over the tasks trained so far (1 .. the task being trained); NaN before training;
    - each task now: that evaluation's score of every stream task, in stream order (NaN for one not scored),
      the latest row of the anytime matrix: it reads as bars in a cell, and a task forgotten shows as its bar
      falling;
    - evaluated at: the step of that evaluation (None before the first); scored tasks: how many tasks its score
      averages (0 before training); metric: the primary metric's name.

    `caches` (run id -> LiveCache, kept by the page between refreshes) are updated here, so each refresh reads
    only the rows newer than the last seen; the task names come from one batched read for all runs."""
    matrices = store.accuracy_matrices_of(runs) if runs else {}
    rows = []
    for r in runs:
        cache = caches.setdefault(r["id"], LiveCache(r["id"])).update(store)
        names, metric = matrices[r["id"]]["tasks"], r["primary_metric"]
        now, score, at, through = [math.nan] * len(names), math.nan, None, 0
        ev = cache.evals
        if len(ev):
            ev = ev[ev.metric == metric]
        if len(ev):
            last = ev[ev.step == ev.step.max()]
            at, through = int(last.step.iloc[0]), int(last.trained_through.max())
            by_task = dict(zip(last.task.astype(int), last.value.astype(float)))
            now = [by_task.get(p, math.nan) for p in range(1, len(names) + 1)]
            seen = [v for v in now[:through] if math.isfinite(v)]
            score = float(np.mean(seen)) if seen else math.nan
        task, n = r.get("task") or 0, r.get("num_tasks") or len(names)
        where = f"{task}/{n}" + (f" · {names[task - 1]}" if 0 < task <= len(names) else "") if task else ""
        rows.append({"id": r["id"], "run": run_name(r), "status": r["status"], "progress": status_line(r)[0],
                     "task": where, "score": score, "each task now": now, "evaluated at": at,
                     "scored tasks": through, "metric": metric, "label": run_label(r)})
    return pd.DataFrame(rows, columns=OVERVIEW_COLUMNS)


def watched_run(overview: pd.DataFrame, selected_rows: list[int]) -> int | None:
    """The run whose charts Live draws below its overview: the row a user selected, else the first running run,
    else the first queued one, else the newest; None for an empty overview."""
    if overview.empty:
        return None
    if selected_rows and 0 <= selected_rows[0] < len(overview):
        return int(overview.id.iloc[selected_rows[0]])
    for status in ("running", "queued"):
        if (overview.status == status).any():
            return int(overview.id[overview.status == status].iloc[0])
    return int(overview.id.max())


# -- spectra -------------------------------------------------------------------------------------
def update_kinds(index: pd.DataFrame) -> list[str]:
    """The update kinds a run's spectra have (Store.spectrum_index): cumulative, task, then the methods' own."""
    return sorted(index.kind.unique(), key=lambda k: (k != "cumulative", k != "task", k))


def spectrum_modules(modules: pd.DataFrame, index: pd.DataFrame, kind: str) -> list[str]:
    """The modules with spectra of this kind, in the modules table's order (else by name)."""
    logged = index[index.kind == kind].module
    return [m for m in modules.name if m in set(logged)] or sorted(logged.unique())


def measure_lines(store: Store, run_ids: list[int], module: str, kinds: list[str], kind: str,
                  styles: dict[int, dict]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Shape measures of one module over steps for several runs, with a look per line: each run's cumulative
    and per-task updates where it has them (else the update `kind`), labelled "#4 LoRA r=8 · task". A run keeps
    its colour (`styles`: labels.run_style by run id); its per-task update is dashed. Empty when nothing is
    logged."""
    both = [k for k in ("cumulative", "task") if k in kinds]
    frames, lines = [], {}
    for rid in run_ids:
        for k in both or [kind]:
            df = store.spectra(rid, module=module, kind=k, with_values=False)
            if len(df):
                label = f"{styles[rid]['name']} · {k}"
                frames.append(df.assign(label=label))
                lines[label] = {"name": label, "color": styles[rid]["color"],
                                "dash": "dash" if k == "task" else "solid"}
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), lines


def module_grid(modules: pd.DataFrame, spectra: pd.DataFrame) -> pd.DataFrame:
    """Spectra rows joined with their module's layer and type (for layer x module heatmaps)."""
    if spectra.empty or modules.empty:
        return pd.DataFrame(columns=[*spectra.columns, "layer", "module_type"])
    mods = modules[["name", "layer", "kind"]].rename(columns={"name": "module", "kind": "module_type"})
    return spectra.merge(mods, on="module", how="left")


# -- ranks ----------------------------------------------------------------------------------------
NUMERICAL_RANK = "numerical rank of the update"   # the Ranks page's choice of the spectra's numerical rank
# rank histories a method logs itself besides those named "...rank...": the DualGPM memory (InfLoRA), the stored
# directions (SD-LoRA)
RANK_LIKE = ("memory_dim", "directions")


def rank_scalars(names: pd.DataFrame) -> list[str]:
    """The rank histories a run's method logs itself per module (Store.scalar_names): active ranks (AdaLoRA,
    CoDyRA), the protected basis F (EBLoRA), the DualGPM memory (InfLoRA), the stored directions (SD-LoRA),
    the frozen pairs' rank (O-LoRA)."""
    return [n for n in names[names.per_module].name if "rank" in n or n in RANK_LIKE] if len(names) else []


def rank_series(store: Store, run_id: int, source: str, kind: str | None = None) -> pd.DataFrame:
    """One rank per module over steps (step, module, value): a scalar the method logs, or NUMERICAL_RANK, the
    numerical rank of the update of `kind` ("cumulative" or "task") from its spectra."""
    if source == NUMERICAL_RANK:
        rows = store.spectra(run_id, kind=kind, with_values=False)
        return rows.rename(columns={"numerical_rank": "value"})[["step", "module", "value"]]
    return store.scalars(run_id, names=[source])[["step", "module", "value"]]


def logged_task_ends(run: dict, df: pd.DataFrame) -> list[int]:
    """The steps at which the run's tasks ended that `df` (a series over steps) has reached; its last step
    when it has reached none."""
    return [s for s in boundaries(run) if s <= df.step.max()] or [int(df.step.max())]


def readout_names(names: pd.DataFrame, ranks: list[str]) -> list[str]:
    """The method's own read-outs among a run's scalars (Store.scalar_names): all but the loss, the learning
    rate and the rank histories (`ranks`)."""
    return names[~names.name.isin(["loss", "lr", *ranks])].name.tolist() if len(names) else []


def readout_series(store: Store, run_id: int, name: str) -> pd.DataFrame:
    """A read-out over steps with a "label" column for its lines: the module, or the read-out's name for a
    scalar of the whole run."""
    series = store.scalars(run_id, names=[name])
    series["label"] = series["module"].where(series["module"] != "", name)
    return series


# -- claims --------------------------------------------------------------------------------------
def claims_board(store: Store, regimes: tuple[str, ...], margin: float = claims.GUARD_MARGIN,
                 setting: claims.Setting = claims.OWN) -> tuple[list[dict], int]:
    """Every claim's verdict under these regimes in this setting (the learned-enough guard at `margin`) and how
    many distinct runs are still to launch for all of them (claims share runs), from one read of the store's
    runs."""
    runs = store.runs()
    vs = claims.verdicts(store, regimes, runs, setting, margin=margin)
    return vs, len(claims.distinct_configs(vs))


def claim_seeds(verdict: dict) -> int:
    """The seeds at which every run of the claim has finished (the 'n' of 'n of 3 seeds'; the stopping rule can
    ask for more than the first three)."""
    runs = verdict["runs"]
    seeds = {s for by_seed in runs.values() for s in by_seed}
    return sum(1 for s in seeds if all(s in by_seed for by_seed in runs.values()))


def claim_run_ids(verdict: dict) -> list[int]:
    """The finished runs a verdict rests on, in id order."""
    return sorted(i for by_seed in verdict["runs"].values() for i in by_seed.values())


def claim_values_table(claim: Claim, verdict: dict) -> pd.DataFrame:
    """The metric values behind a verdict: one row per metric and run label, one column per seed, the mean and
    standard deviation over the seeds that have a value, and the run ids (metrics in the order of the claim's
    checks, then the others)."""
    values, run_ids = verdict["values"], verdict["runs"]
    checked = list(dict.fromkeys(c.metric for c in claim.checks))
    metrics = checked + sorted({m for by_metric in values.values() for m in by_metric} - set(checked))
    seeds = sorted(set(claims.SEEDS) | {s for by_metric in values.values() for v in by_metric.values() for s in v})
    rows = []
    for metric in metrics:
        for label in claim.runs:
            by_seed = values.get(label, {}).get(metric, {})
            have = [by_seed[s] for s in seeds if s in by_seed and math.isfinite(by_seed[s])]
            mean = float(np.mean(have)) if have else math.nan
            sd = float(np.std(have, ddof=1)) if len(have) > 1 else math.nan
            rows.append({"metric": metric, "what": claims.METRICS[metric], "run": label,
                         **{f"seed {s}": by_seed.get(s, math.nan) for s in seeds},
                         "mean": mean, "sd": sd,
                         "mean ± sd": "" if not have else f"{mean:.3f}" if sd != sd else f"{mean:.3f} ± {sd:.3f}",
                         "run ids": run_refs(run_ids.get(label, {}).values())})
    return pd.DataFrame(rows, columns=["metric", "what", "run", *[f"seed {s}" for s in seeds], "mean", "sd",
                                       "mean ± sd", "run ids"])


def claim_reported_table(verdict: dict) -> pd.DataFrame:
    """The paper's own numbers beside a verdict (cldash.analysis.reported): quantity, method, value with its unit,
    and where it was read."""
    rows = [{"quantity": r["quantity"], "method": r["method"],
             "value": f"{r['value']:g} {r['unit']}".rstrip(), "where": r["where"]}
            for r in verdict.get("reported") or []]
    return pd.DataFrame(rows, columns=["quantity", "method", "value", "where"])


def _target_key(values: dict) -> str | None:
    """A search target's identity, as a claim matches runs (None where the target no longer resolves)."""
    try:
        return match_key(resolved_config({**values, "seed": 0}))
    except UserError:
        return None


def claim_searches(store: Store, claim: Claim, summaries: list[dict] | None = None,
                   setting: claims.Setting = claims.OWN) -> dict[str, dict | None]:
    """{label: the search of that run of the claim in this setting, or None}: the newest finished search
    whose target is the run's common configuration (and whose budget is the setting's), else the newest one
    still going."""
    summaries = tuning.searches(store) if summaries is None else summaries
    by_key: dict[str, list[dict]] = {}
    for s in summaries:   # newest first
        if s.get("trials_budget", setting.trials) == setting.trials:
            by_key.setdefault(_target_key(s.get("target") or {}), []).append(s)
    out = {}
    for label in claim.runs:
        found = by_key.get(_target_key(claims.run_values(claim, label, setting)), [])
        out[label] = next((s for s in found if s.get("finished")), found[0] if found else None)
    return out


def params_text(params: dict) -> str:
    """A trial's parameters in one line: "lr 0.00123 · lr_schedule cosine"."""
    return " · ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())


def search_trials_table(summary: dict) -> pd.DataFrame:
    """A search's trials: number, parameters, validation ACC, LA, forgetting, state and run id."""
    rows = [{"trial": t["number"], "params": params_text(t.get("params") or {}), "validation ACC": t.get("acc"),
             "LA": t.get("la"), "forgetting": t.get("forgetting"), "state": t.get("state", ""), "run": t.get("run")}
            for t in summary.get("trials") or []]
    return pd.DataFrame(rows, columns=["trial", "params", "validation ACC", "LA", "forgetting", "state", "run"])


def search_spread(summary: dict) -> str:
    """The best configuration's validation ACC over the tuning seeds: "0.812 ± 0.010 over seeds 100, 101, 102"."""
    spread = {int(k): v for k, v in (summary.get("spread") or {}).items() if v is not None and math.isfinite(v)}
    if not spread:
        return ""
    mean = float(np.mean(list(spread.values())))
    sd = summary.get("spread_sd")
    return (f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
            + f" over seed{'s' * (len(spread) != 1)} {', '.join(map(str, sorted(spread)))}")


def search_best_text(summary: dict) -> str:
    """A search's state and best trial in one line."""
    done = len(summary.get("trials") or [])
    state = "finished" if summary.get("finished") else f"running: {done} of {summary.get('trials_budget')} trials"
    best = summary.get("best")
    if not best:
        return f"Search {state}; no trial has completed yet."
    spread = search_spread(summary)
    return (f"Search {state}, {done} trials. Best: trial {best['trial']}, {params_text(best['params'])} · "
            f"validation ACC {best['acc']:.3f}, LA {best['la']:.3f}, forgetting {best['forgetting']:.3f}"
            + (f" · the best again at each tuning seed: {spread}" if spread else ""))


def method_searches_table(summaries: list[dict], method: str) -> pd.DataFrame:
    """The tuned values of one method: a row per search whose target is this method (stream, the options the
    target fixed, its own and the run's such as the length or the task order, the best parameters, validation
    ACC, its spread over the tuning seeds, the trials done)."""
    rows = []
    for s in summaries:
        target = s.get("target") or {}
        if target.get("method") != method:
            continue
        best = s.get("best") or {}
        run = {k: v for k, v in target.items() if k not in ("method", "stream", "method_options")}
        rows.append({"stream": target.get("stream", ""),
                     "fixed options": " · ".join(x for x in (params_text(target.get("method_options") or {}),
                                                             params_text(run)) if x),
                     "tuned": params_text(best.get("params") or {}), "validation ACC": best.get("acc", math.nan),
                     "spread": search_spread(s), "trials": f"{len(s.get('trials') or [])} of {s.get('trials_budget')}"
                     + ("" if s.get("finished") else " (running)")})
    return pd.DataFrame(rows, columns=["stream", "fixed options", "tuned", "validation ACC", "spread", "trials"])


# -- lessons ---------------------------------------------------------------------------------------
def lesson_progress(state: dict, runs: int) -> str:
    """A lesson's runs in one line (cldash.analysis.lessons.progress): "2 of 3 finished · 1 queued or running"."""
    return (f"{state['finished']} of {runs} finished"
            + (f" · {state['active']} queued or running" if state["active"] else "")
            + (f" · {state['failed']} did not finish (launch again to retry them)" if state["failed"] else ""))


def lesson_run_line(label: str, run: dict | None, icons: dict[str, str]) -> str:
    """One of a lesson's runs as a Markdown list item: its status icon (`icons`), label, id, status and share
    done; "not launched" before it is."""
    if run is None:
        return f"- {label}: not launched"
    share = 1.0 if run["status"] == "finished" else float(run["progress"] or 0)
    return f"- {icons.get(run['status'], '')} **{label}** · run #{run['id']} · {run['status']} · {100 * share:.0f} %"


# -- methods ---------------------------------------------------------------------------------------
def method_order(names) -> list[str]:
    """Methods as the pages list them: LoRA and full fine-tuning (the two baselines) first, the others by name."""
    return ["lora", "full"] + sorted(n for n in names if n not in ("lora", "full"))


def method_facts(method, policies: dict[str, str]) -> list[str]:
    """The lines under a method's card (a registered Method class): its default learning rate, its task-boundary
    policies (`policies`: cldash.methods.POLICIES, what each means) and what it trains (Markdown)."""
    facts = [f"default learning rate {method.default_lr:g}"]
    if method.policies:
        facts.append("task-boundary policy: " + ", ".join(f"**{p}** ({method.policy_notes.get(p, policies[p])})"
                                                          for p in method.policies) +
                     f"; default {method.policies[0]}")
    facts.append("trains every backbone weight" if method.trains_backbone else "trains only its adapters")
    return facts


# -- orders ---------------------------------------------------------------------------------------
def order_runs(order: dict, methods: list[str], seed: int) -> tuple[list[dict], list[str], list[str]]:
    """The Orders page's runs of a measured order (Store.orders): one config per method on the stream's tasks in
    the adversarial order, with their launch keys (the same order, methods and seed launched twice is one set of
    runs) and names. Raises ConfigError for a method that does not fit the order's stream or backbone."""
    o = order
    configs = [resolve({"method": m, "stream": o["stream"], "backbone": o["backbone"],
                        "stream_options": o["ordered_options"],
                        "backbone_options": o["config"].get("backbone_options", {}),
                        "targets": o["config"].get("targets", []), "seed": seed,
                        "name": f"{m} · {o['stream']} adversarial order #{o['id']} · seed {seed}"}).to_dict()
               for m in methods]
    keys = [f"order{o['id']}:{c['method']}:{c['seed']}" for c in configs]
    return configs, keys, [c["name"] or describe_run(RunConfig(**c)) for c in configs]
