"""What each dashboard page loads: functions from the store to plain data (no Streamlit).

Pages call these and hand the result to cldash.dashboard.figures; tests and bench/dashboard_load.py call
them directly. Each loads only what its page draws (one module's spectra, the final rows of R,
rows newer than the last step seen), in a few batched queries.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cldash.analysis import claims
from cldash.analysis.claims import Claim
from cldash.measures.metrics import METRICS, summarize
from cldash.store import Store

# Fields that do not change what is being compared: runs differing only in these are seeds of one setting.
NOT_SETTING = ("seed", "name", "checkpoints")


def setting_key(config: dict) -> str:
    """Runs with the same configuration apart from the seed share this key."""
    core = {k: v for k, v in config.items() if k not in NOT_SETTING}
    return hashlib.sha1(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:10]


def setting_label(config: dict) -> str:
    """'lora r=8 single · digits-rotate' (the run label without the seed)."""
    opts = config.get("method_options") or {}
    bits = [config["method"]]
    for key in ("rank", "init_r", "target_r"):
        if key in opts:
            bits.append(f"{key.replace('_', '')}={opts[key]}" if key != "rank" else f"r={opts[key]}")
            break
    if config.get("policy"):
        bits.append(str(config["policy"]))
    from cldash.config import aids_label

    if aids_label(config):   # replay and EWC change what a run is: a fork that switched replay on says so
        bits.append(f"+ {aids_label(config)}")
    return f"{' '.join(bits)} · {config['stream']}"


def run_label(run: dict) -> str:
    return f"#{run['id']} {setting_label(run['config'])} · seed {run['seed']}"


# -- run identity on charts: one colour and one short name per run, the same on every chart and page ---------
# Okabe & Ito's colour-blind-safe palette ("Color Universal Design", 2008; Wong, Nature Methods 8:441, 2011)
# without its yellow (#F0E442), which is too pale against a white page on a projector. Ordered so that
# consecutive run ids get far-apart hues (a blue, then an orange-red, then a green ...) and the two blues, like
# the two oranges, sit three places apart.
RUN_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#56B4E9", "#E69F00", "#CC79A7", "#000000")
# With more runs than colours the marker symbol changes too (#1 and #8 share a colour, not a symbol).
RUN_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")

# The methods' labels as their registry gives them (cldash.methods; imported there with torch, which the
# pages never load), shortened for a legend.
METHOD_NAMES = {"full": "full FT", "lora": "LoRA", "pissa": "PiSSA", "dora": "DoRA", "adalora": "AdaLoRA",
                "loraga": "LoRA-GA", "wegeft": "WeGeFT", "loretta": "LoRETTA", "eblora": "EBLoRA",
                "codyra": "CoDyRA", "slice": "SLICE", "inflora": "InfLoRA", "sdlora": "SD-LoRA", "olora": "O-LoRA"}


def run_color(run_id: int) -> str:
    """The colour of run `run_id` on every chart: RUN_PALETTE by id, so consecutive runs differ."""
    return RUN_PALETTE[(int(run_id) - 1) % len(RUN_PALETTE)]


def run_symbol(run_id: int) -> str:
    """The marker symbol of run `run_id`: changes once the palette has gone round."""
    return RUN_SYMBOLS[((int(run_id) - 1) // len(RUN_PALETTE)) % len(RUN_SYMBOLS)]


def method_name(config: dict) -> str:
    """'LoRA', 'rsLoRA', 'full FT' ... for a run's config."""
    opts = config.get("method_options") or {}
    if config["method"] == "lora" and opts.get("rslora"):
        return "rsLoRA"
    return METHOD_NAMES.get(config["method"], config["method"])


def setting_name(config: dict) -> str:
    """A setting as a legend names it: the method and its key options, 'LoRA r=8', 'AdaLoRA r=8 merge',
    'LoRA r=4 + replay 200 (balanced)' (the stream and the seed left out; setting_label has them)."""
    opts = config.get("method_options") or {}
    bits = [method_name(config)]
    for key in ("rank", "target_r", "init_r"):
        if key in opts:
            bits.append(f"r={opts[key]}")
            break
    if config.get("policy") and config["policy"] != "single":
        bits.append(str(config["policy"]))
    if config.get("preset") not in (None, "", "common"):
        bits.append(f"[{config['preset']}]")
    from cldash.config import aids_label

    if aids_label(config):
        bits.append(f"+ {aids_label(config)}")
    return " ".join(bits)


def run_name(run: dict) -> str:
    """A run as every chart names it: '#4 LoRA r=8' (run_label is the long form, with stream and seed)."""
    return f"#{run['id']} {setting_name(run['config'])}"


def run_style(run: dict) -> dict:
    """The name, colour and marker symbol of a run on every chart."""
    return {"name": run_name(run), "color": run_color(run["id"]), "symbol": run_symbol(run["id"])}


# Readable names of the scalars methods log (Ranks page read-outs, axis and colour-bar titles).
SCALAR_LABELS = {
    "loss": "training loss", "lr": "learning rate", "active_rank": "active rank",
    "active_rank_total": "active rank, all modules", "active_rank_share": "share of ranks still active",
    "budget": "rank budget", "lambda_abs_max": "largest |λ| (AdaLoRA singular value)",
    "codyra_threshold": "gate threshold κ", "gate_abs_mean": "mean |gate|",
    "task_update_norm": "norm of the task's update",
    "F_rank": "rank of the protected basis F", "F_leakage": "leakage into the protected basis F",
    "U_orthogonality_error": "orthogonality error of U", "V_orthogonality_error": "orthogonality error of V",
    "magnitude": "magnitude", "spectrum_flatness": "spectrum flatness σ₁ / σᵣ",
    "lora_A_norm": "norm of A", "lora_B_norm": "norm of B", "init_subspace_drift": "drift from the initial subspace",
    "gradient_top2r_energy": "gradient energy in the top 2r directions", "memory_dim": "memory dimension",
    "memory_fraction": "memory share of the input space", "interference": "interference",
    "old_rank": "rank of the frozen old adapters", "directions": "stored directions",
    "gram_offdiag_abs_cos": "mean |cos| between stored directions",
    "current_max_abs_cos": "largest |cos| of the new direction", "phi_norm": "norm of φ",
    "delta_m": "magnitude change Δm", "delta_d": "direction change Δd",
    "magnitude_ratio_median": "magnitude ratio, median", "magnitude_ratio_q10": "magnitude ratio, 10th percentile",
    "magnitude_ratio_q90": "magnitude ratio, 90th percentile", "gradient_conflict_cos": "gradient conflict (cosine)",
    "reconciled_grad_norm_ratio": "reconciled / raw gradient norm", "numerical_rank": "numerical rank",
}


# Scalars that count something (ranks, dimensions, directions): drawn with whole-number ticks.
COUNT_SCALARS = frozenset({"active_rank", "active_rank_total", "budget", "F_rank", "memory_dim", "old_rank",
                           "directions", "numerical_rank"})


def scalar_label(name: str) -> str:
    """A logged scalar's readable name ('active_rank_share' -> 'share of ranks still active'); an unknown one
    with its underscores as spaces."""
    return SCALAR_LABELS.get(name, name.replace("_", " "))


def module_label(module: str, layer=None, kind: str | None = None) -> str:
    """'layer 0 · q_proj' for vit.layers.0.attention.q_proj (from the modules table's layer and kind), else the
    module's last two name parts."""
    if kind and layer is not None and not (isinstance(layer, float) and math.isnan(layer)):
        return f"layer {int(layer)} · {kind}"
    return ".".join(str(module).split(".")[-2:])


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


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def setting_labels(configs: list[dict]) -> list[str]:
    """`setting_label` of each config, made distinct where different settings share one: a sweep over an
    option the short label leaves out (lr, alpha, a stream option) gets that option's values appended
    ("lora r=8 single · digits-rotate · lr=0.003"), so the rows of one sweep can be told apart.

    The recorded regime (config["regime"]) is left out of the comparison: it describes the preset, which
    is itself compared. Settings that still look alike get the start of their setting key."""
    labels = [setting_label(c) for c in configs]
    keys = [setting_key(c) for c in configs]
    by_label: dict[str, dict[str, dict]] = {}
    for label, key, config in zip(labels, keys, configs):
        by_label.setdefault(label, {})[key] = config
    extra: dict[str, str] = {}
    for label, settings in by_label.items():
        if len(settings) < 2:
            continue
        flat = {key: _flat({k: v for k, v in c.items() if k not in NOT_SETTING and k != "regime"})
                for key, c in settings.items()}
        fields = sorted(set().union(*flat.values()))
        differing = [f for f in fields if len({json.dumps(d.get(f), default=str) for d in flat.values()}) > 1]
        for key, d in flat.items():
            bits = [f"{f.rsplit('.', 1)[-1]}={d.get(f)}" for f in differing]
            extra[key] = " · " + (", ".join(bits) if bits else f"setting {key[:6]}")
    return [label + extra.get(key, "") for label, key in zip(labels, keys)]


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
        # the setting's short chart name keeps what setting_labels appended to tell a sweep's settings apart
        short = setting_name(r["config"]) + setting[len(setting_label(r["config"])):]
        rows.append({"id": r["id"], "label": run_label(r), "setting": setting,
                     "setting_key": setting_key(r["config"]), "method": r["method"], "seed": r["seed"],
                     "status": r["status"], **{k.key: m.get(k.key, math.nan) for k in METRICS},
                     "name": run_name(r), "setting_name": short, "color": run_color(r["id"]),
                     "symbol": run_symbol(r["id"])})
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


# -- lineage: resumed runs and forks --------------------------------------------------------------
def fork_note(run: dict) -> str:
    """"fork of #3 after task 1" for a fork (runs.parent_id, fork_task), "" for any other run."""
    if not run.get("parent_id"):
        return ""
    return f"fork of #{run['parent_id']} after task {run.get('fork_task')}"


def lineage_label(run: dict) -> str:
    """Where a run comes from, for the Runs table: "fork of #3 after task 1", "resumed 2×", and, while a
    resumed run waits in the queue, the task it continues after ("continues after task 1"); "" for a run
    that started from scratch and was never resumed."""
    bits = [fork_note(run)] if run.get("parent_id") else []
    if run.get("resumes"):
        bits.append(f"resumed {run['resumes']}×")
        if run.get("status") == "queued" and run.get("resume_task") is not None:
            bits.append(f"continues after task {run['resume_task']}" if run["resume_task"]
                        else "starts over (no checkpoint)")
    return " · ".join(bits)


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


def fork_changes(parent: dict, fields: dict, other: str = "") -> dict:
    """The changes a "What if…" form asks for, as checkpoints.fork takes them: each field of `fields` (run
    options: method, lr, replay, ewc_lambda, seed ...) whose value differs from the parent's config, then
    the options of `other`, a JSON object (which win over the fields; "method_options": {...} too). An
    empty lr keeps the parent's (or, for another method, that method's default). Raises ConfigError (one
    sentence, its field "other") for text that is not a JSON object."""
    from cldash.core.errors import ConfigError

    config = parent["config"]
    changes = {}
    for key, value in fields.items():
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                continue
            try:   # "0.001" from a text field equals a stored 0.001; anything else goes to validation as is
                number = float(value)
            except ValueError:
                number = None
            if number is not None and config.get(key) is not None and number == config.get(key):
                continue
        if value != config.get(key):
            changes[key] = value
    if other.strip():
        try:
            extra = json.loads(other)
        except ValueError as exc:
            raise ConfigError(f"other options must be a JSON object such as {{\"batch_size\": 32}}; this text "
                              f"is not JSON ({exc.msg} at character {exc.pos}).", "other") from None
        if not isinstance(extra, dict):
            raise ConfigError(f"other options must be a JSON object such as {{\"batch_size\": 32}} (got "
                              f"{type(extra).__name__}).", "other")
        changes.update(extra)
    return changes


def starts_on_merged_weights(parent: dict, changes: dict) -> bool:
    """Whether a fork with these changes starts a new method on the parent's merged weights (another
    method, other method options or another policy) instead of continuing the parent's method."""
    config = parent["config"]
    if changes.get("method", config["method"]) != config["method"]:
        return True
    options = {**(config.get("method_options") or {}), **(changes.get("method_options") or {})}
    return options != (config.get("method_options") or {}) or \
        ("policy" in changes and changes["policy"] != config.get("policy"))


def fork_launch_key(parent_id: int, after_task: int, changes: dict) -> str:
    """One key per parent, fork point and changes: the same fork asked for twice (a double click) is one run."""
    digest = hashlib.sha1(json.dumps(changes, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"fork:{parent_id}:{after_task}:{digest}"


# -- groups --------------------------------------------------------------------------------------
def group_label(group_key: str | None) -> str:
    """A run group as the pages name it: "sweep NAME" for a `cldash sweep` (group_key "sweep:NAME"),
    "launch KEY" for a launch from the Launch page, the key itself for the others ("claims", a demo's
    "demo-xxxxxxxx", an order's), "" for a run in no group."""
    if not group_key:
        return ""
    if group_key.startswith("sweep:"):
        return f"sweep {group_key[len('sweep:'):]}"
    if re.fullmatch(r"[0-9a-f]{12}", group_key):     # the Launch page keys a launch by 12 hex digits of a uuid4
        return f"launch {group_key}"
    return group_key


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


def filter_runs(runs: list[dict], status=(), method=(), stream=(), regime=(), group=()) -> list[dict]:
    """The runs passing every filter that has values (an empty one passes all); in `group`, "" stands for
    the runs in no group."""
    return [r for r in runs if (not status or r["status"] in status) and (not method or r["method"] in method)
            and (not stream or r["stream"] in stream) and (not regime or run_regime(r) in regime)
            and (not group or (r.get("group_key") or "") in group)]


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

    def update(self, store: Store) -> "LiveCache":
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


# -- spectra -------------------------------------------------------------------------------------
def module_grid(modules: pd.DataFrame, spectra: pd.DataFrame) -> pd.DataFrame:
    """Spectra rows joined with their module's layer and type (for layer x module heatmaps)."""
    if spectra.empty or modules.empty:
        return pd.DataFrame(columns=[*spectra.columns, "layer", "module_type"])
    mods = modules[["name", "layer", "kind"]].rename(columns={"name": "module", "kind": "module_type"})
    return spectra.merge(mods, on="module", how="left")


# -- claims --------------------------------------------------------------------------------------
def claims_board(store: Store, regimes: tuple[str, ...]) -> tuple[list[dict], int]:
    """Every claim's verdict under these regimes and how many distinct runs are still to launch for all of
    them (claims share runs), from one read of the store's runs."""
    runs = store.runs()
    return claims.verdicts(store, regimes, runs), len(claims.to_launch(store, claims.CLAIMS, regimes, runs))


def claim_seeds(verdict: dict) -> int:
    """The seeds of cldash.analysis.claims.SEEDS at which every run of the claim has finished (the 'n' of 'n of 3 seeds')."""
    runs = verdict["runs"]
    return sum(1 for s in claims.SEEDS if runs and all(s in by_seed for by_seed in runs.values()))


def paper_is_common(claim: Claim) -> bool:
    """Whether a claim's paper regime runs every one of its runs in the common regime (none of its methods has a
    paper preset that applies), so that the same runs decide both regimes."""
    return all(claims.run_preset(claim, spec.method, "paper") == "common" for spec in claim.runs.values())


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
                         "run ids": ", ".join(f"#{i}" for i in run_ids.get(label, {}).values())})
    return pd.DataFrame(rows, columns=["metric", "what", "run", *[f"seed {s}" for s in seeds], "mean", "sd",
                                       "mean ± sd", "run ids"])
