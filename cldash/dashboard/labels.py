"""How the dashboard names things: a run (long and short, its colour and marker on charts), a setting (a run
without its seed), a run group, a run's lineage and weights, an adapted module, a logged scalar or shape measure,
a measured task order.

The one home for these names: every page, figure builder and the handout call them, so a run reads the same
everywhere. (cldash.config.describe_run names a run once, when it is created: the name the store keeps and the
CLI prints.) Plain functions of store rows: importing this module loads neither torch nor plotly (method_name
reads the method registry, and with it torch, on its first call).
"""

from __future__ import annotations

import hashlib
import json
import math
import re

from cldash.config import aids_label

# Fields that do not change what is being compared: runs differing only in these are seeds of one setting.
NOT_SETTING = ("seed", "name", "checkpoints")
ENDED = "finished"


# -- settings and runs, in words ------------------------------------------------------------------------------
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
    if aids_label(config):   # replay and EWC change what a run is: a fork that switched replay on says so
        bits.append(f"+ {aids_label(config)}")
    return f"{' '.join(bits)} · {config['stream']}"


def run_refs(ids) -> str:
    """Runs by their ids, as the pages' messages list them: "#3, #5, #9"."""
    return ", ".join(f"#{i}" for i in ids)


def run_label(run: dict) -> str:
    """'#4 lora r=8 single · digits-rotate · seed 0': a run in pickers, matrix titles and the handout's lists."""
    return f"#{run['id']} {setting_label(run['config'])} · seed {run['seed']}"


def run_caption(run: dict) -> str:
    """'#4 lora r=8 single · digits-rotate · seed 0', with ' · unfinished (running, step 40/300)' when it has
    not finished (the handout's matrix titles and config headings)."""
    label = run_label(run)
    if run["status"] != ENDED:
        label += f" · unfinished ({run['status']}, step {run.get('step') or 0}/{run.get('total_steps') or '?'})"
    return label


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
    for _label, settings in by_label.items():
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


# -- run identity on charts: one colour and one short name per run, the same on every chart and page ---------
# Okabe & Ito's colour-blind-safe palette ("Color Universal Design", 2008; Wong, Nature Methods 8:441, 2011)
# without its yellow (#F0E442), which is too pale against a white page on a projector. Ordered so that
# consecutive run ids get far-apart hues (a blue, then an orange-red, then a green ...) and the two blues, like
# the two oranges, sit three places apart.
RUN_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#56B4E9", "#E69F00", "#CC79A7", "#000000")
# With more runs than colours the marker symbol changes too (#1 and #8 share a colour, not a symbol).
RUN_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")


def run_color(run_id: int) -> str:
    """The colour of run `run_id` on every chart: RUN_PALETTE by id, so consecutive runs differ."""
    return RUN_PALETTE[(int(run_id) - 1) % len(RUN_PALETTE)]


def run_symbol(run_id: int) -> str:
    """The marker symbol of run `run_id`: changes once the palette has gone round."""
    return RUN_SYMBOLS[((int(run_id) - 1) // len(RUN_PALETTE)) % len(RUN_SYMBOLS)]


def method_name(config: dict) -> str:
    """'LoRA', 'rsLoRA', 'full FT' ... for a run's config: its method's display_name (the short form of the
    method's label, for a legend), or the method as the config names it when no method of that name is
    registered (a store written by another version of cldash)."""
    from cldash.methods import REGISTRY  # deferred: cldash.methods imports torch

    opts = config.get("method_options") or {}
    if config["method"] == "lora" and opts.get("rslora"):
        return "rsLoRA"
    method = REGISTRY.get(config["method"])
    return (method.display_name or method.label) if method is not None else config["method"]


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
    if aids_label(config):
        bits.append(f"+ {aids_label(config)}")
    return " ".join(bits)


def short_setting_name(config: dict, setting: str) -> str:
    """A setting's chart name that keeps what setting_labels appended to its `setting` label to tell a sweep's
    settings apart: 'LoRA r=8 · lr=0.01'."""
    return setting_name(config) + setting[len(setting_label(config)):]


def run_name(run: dict) -> str:
    """A run as every chart names it: '#4 LoRA r=8' (run_label is the long form, with stream and seed)."""
    return f"#{run['id']} {setting_name(run['config'])}"


def run_style(run: dict) -> dict:
    """The name, colour and marker symbol of a run on every chart."""
    return {"name": run_name(run), "color": run_color(run["id"]), "symbol": run_symbol(run["id"])}


def runs_in(ids: list[int]) -> str:
    """The runs of a chart for its PNG's name: "run-4", "runs-1-2-5" (the first six, then how many more)."""
    ids = sorted(ids)
    return f"run-{ids[0]}" if len(ids) == 1 else "runs-" + "-".join(map(str, ids[:6])) + \
        (f"-and-{len(ids) - 6}-more" if len(ids) > 6 else "")


# -- where a run comes from, what it ran on -----------------------------------------------------------------
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


def launcher_label(run: dict) -> str:
    """Which launcher started a run: cli (a foreground `cldash run`), local (this machine's scheduler), ray (a Ray
    cluster's job) ...; local for a run stored before runs recorded their launcher (store revision 0003)."""
    return run.get("launcher") or "local"


def launch_place(run: dict) -> str:
    """Where a run's launcher sent it, for `cldash show`: "ray (ray://head:10001, job cldash-run-1a2b)", "local"."""
    info = run.get("launcher_info") or {}
    bits = [str(info[key]) if key == "address" else f"{key} {info[key]}" for key in ("address", "job")
            if info.get(key)]
    return launcher_label(run) + (f" ({', '.join(bits)})" if bits else "")


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


def weights_label(weights: dict | None, short: bool = False) -> str:
    """Which backbone weights a run used (runs.weights): the shipped files, weights pre-trained on
    the run's machine, or a Hugging Face model."""
    if not weights:
        return "" if short else "not recorded (the run started before cldash 0.2 recorded it)"
    source, sha = weights.get("source"), (weights.get("sha256") or "")[:12]
    if source == "shipped":
        return "shipped" if short else f"shipped {weights.get('name')} weights (sha256 {sha})"
    if source == "local":
        return "pre-trained locally" if short else \
            f"{weights.get('name')} pre-trained on the run's machine (sha256 {sha}, {weights.get('file')})"
    if source == "hugging-face":
        revision = weights.get("revision")
        return "Hugging Face" if short else f"Hugging Face model {weights.get('name')}" + \
            (f" at revision {revision[:12] if len(revision) == 40 else revision}" if revision else "")
    return str(source)


def runtime_label(runtime: dict | None) -> str:
    """What a run actually used (runs.runtime): its precision (and the one asked for, where it fell back), compile,
    the anytime evaluations' subset, and its data's source, revision and split file."""
    if not runtime:
        return "not recorded (the run started before cldash 0.4 recorded it)"
    bits = [runtime.get("precision", "fp32")]
    if runtime.get("precision_requested"):
        bits[0] += f" (asked for {runtime['precision_requested']}: {runtime.get('precision_note', '')})"
    bits.append("compiled" if runtime.get("compile") else "not compiled" + (
        f" ({runtime['compile_note']})" if runtime.get("compile_note") else ""))
    if runtime.get("deterministic"):
        bits.append("deterministic GPU kernels")
    if runtime.get("eval_subset"):
        bits.append(f"anytime scores on {runtime['eval_subset']} test examples a task")
    data = runtime.get("stream") or {}
    if data.get("source") or data.get("hub"):
        revision = str(data.get("revision") or "unknown")
        bits.append(f"data {data.get('source') or data.get('hub')} at revision "
                    f"{revision[:12] if len(revision) == 40 else revision}")
    if data.get("split_file"):
        bits.append(f"split {data['split_file']} (sha256 {str(data.get('split_sha256'))[:12]})")
    return " · ".join(bits)


# -- modules, scalars and shape measures ------------------------------------------------------------------
def module_label(module: str, layer=None, kind: str | None = None) -> str:
    """'layer 0 · q_proj' for vit.layers.0.attention.q_proj (from the modules table's layer and kind), else the
    module's last two name parts."""
    if kind and layer is not None and not (isinstance(layer, float) and math.isnan(layer)):
        return f"layer {int(layer)} · {kind}"
    return ".".join(str(module).split(".")[-2:])


def task_label(position: int, name: str) -> str:
    """A task by its place in the stream: "T1 · rotate 45°" (its number as on the task-start lines of the step
    charts); a general task (position 0 or below) by its name alone."""
    return f"T{position} · {name}" if position > 0 else str(name)


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


def scalar_label(name: str) -> str:
    """A logged scalar's readable name ('active_rank_share' -> 'share of ranks still active'); an unknown one
    with its underscores as spaces."""
    return SCALAR_LABELS.get(name, name.replace("_", " "))


# The shape measures of a spectrum, in plain text (they also label the pages' pickers): no underscores, no markup.
MEASURE_LABELS = {"erank": "effective rank", "top1_energy": "top-1 energy share", "stable_rank": "stable rank",
                  "frobenius": "Frobenius norm ‖ΔW‖", "condition": "condition number",
                  "numerical_rank": "numerical rank",
                  "entropy": "normalised spectral entropy", "w0_energy": "energy in W0's top directions"}


def order_label(order: dict) -> str:
    """A measured task order (Store.orders): "#2 · digits-rotate on vit-tiny · 5 tasks"."""
    return f"#{order['id']} · {order['stream']} on {order['backbone']} · {len(order['tasks'])} tasks"


def short_title(label: str, limit: int = 24) -> str:
    """A chart title that fits a matrix a quarter of a projector wide: the label up to its first " · "
    ('#4 lora r=8 single' of '#4 lora r=8 single · digits-rotate · seed 0'), cut to `limit` characters
    with an ellipsis; the chart keeps the whole label in its hover."""
    head = str(label).split(" · ")[0].strip()
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


def title_status(label: str) -> str:
    """The part of a run_caption that says the run has not finished ('unfinished (running, step 30/40)'), or
    '': a short title drops it, and a chart shows it under its title, since a half-trained run's numbers must
    not pass for final ones."""
    return next((part.strip() for part in str(label).split(" · ")[1:] if part.strip().startswith("unfinished")), "")
