"""Regimes: the common one every comparison shares, and each method's authors' ("paper") regime.

The common regime is RunConfig's defaults: AdamW, each method's default learning rate, constant
schedule, every linear adapted, every class in the loss; it keeps side-by-side comparisons fair.
A `paper` preset is the training regime a method's authors published (optimizer, learning rate,
schedule, warm-up, weight decay, dropout, targets, steps per task, loss masking and the method's
own options), each value with the file of the authors' repository or the section of the paper it
comes from, and a note wherever a value had to be translated to the small backbones (epochs of a
data set we do not have, a batch size for a 7B model). Each paper preset is data beside the method
it describes (the ``PAPER_PRESET`` at the bottom of its module, `cldash.core.presets`), collected by
`cldash.methods.paper_presets()`.

A run names its regime in ``RunConfig.preset``:

- ``""`` (or ``"common"``): the common regime;
- ``"paper"``: the run's own method's authors' regime;
- ``"paper:METHOD"``: METHOD's authors' *training* regime (its run-level values only) applied to
  the run's method, so that a baseline trains on the same schedule as the method it is compared
  with (a claim of the CoDyRA paper compares CoDyRA with LoRA on CoDyRA's schedule).

`apply()` fills the preset's values into a raw configuration wherever the user did not set the
field, and returns the record a run keeps of it: which values came from where. What the user set
explicitly wins over the preset, and the record says so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cldash.config.run_config import RunConfig
from cldash.core.errors import ConfigError
from cldash.core.presets import Cited, PaperPreset

# Attention and MLP roles, as the linear-module names the backbones use. GPT-2 fuses q, k and v into
# one c_attn projection, so a preset that adapts only some of them adapts c_attn there (a translation).
ROLE_PATTERNS: dict[str, tuple[str, ...]] = {
    "q": ("q_proj", "query", "q_lin", "c_attn"),
    "k": ("k_proj", "key", "k_lin", "c_attn"),
    "v": ("v_proj", "value", "v_lin", "c_attn"),
    "o": ("o_proj", "out_proj", "attention\\.output\\.dense", "out_lin", "attn\\.c_proj"),
    "mlp": ("fc1", "fc2", "c_fc", "mlp\\.c_proj", "intermediate\\.dense", "output\\.dense"),
}


def role_patterns(roles: tuple[str, ...] | list[str]) -> list[str]:
    """One target pattern that matches the linear modules of these roles on any of our backbones."""
    unknown = [r for r in roles if r not in ROLE_PATTERNS]
    if unknown:
        raise ValueError(f"unknown module role {unknown[0]!r}; roles: {', '.join(ROLE_PATTERNS)}")
    names: list[str] = []
    for r in roles:
        names += [n for n in ROLE_PATTERNS[r] if n not in names]
    return ["|".join(names)]


# -- the aids' presets --------------------------------------------------------------------------
# `AIDS` holds TRACE's settings (arXiv 2310.06762, code BeyonderXX/TRACE) for the two run options that
# are not methods, replay and EWC, keyed "replay" and "ewc". Their ``values`` are only the aid's own
# RunConfig fields, so that they combine with any method's regime; TRACE's training regime (full
# fine-tuning of LLaMA-2-7B) is in their notes.

_TRACE = "BeyonderXX/TRACE/"

_TRACE_REGIME = ("TRACE's own training regime is full fine-tuning of LLaMA-2-7B: Adam with betas (0.9, 0.95) at "
                 "lr 1e-5 (training/main.py, training/replay.py: FusedAdam), a constant rate with 0 warm-up "
                 "(get_constant_schedule_with_warmup, although the scripts pass --lr_scheduler_type cosine), "
                 "weight decay 0 and clipping at 1.0 (utils/ds_utils.py: gradient_clipping 1.0); it belongs to "
                 "that baseline, not to the aid, so it is not set here.")

AIDS: dict[str, PaperPreset] = {
    "replay": PaperPreset(
        paper="TRACE (Wang et al.), arXiv 2310.06762",
        code="BeyonderXX/TRACE",
        values={
            "replay": Cited(200, _TRACE + "scripts/train_replay.sh: --past_task_ratio 0.1 (training/replay.py "
                            "keeps that share of each finished task's training set)",
                            note="our buffer has one fixed size shared by the finished tasks: 200 examples are "
                                 "10 % of a 2,000-example task of the skills and hf streams (about 16 % of a "
                                 "digits task), the share TRACE holds after the second task"),
            "replay_rule": Cited("balanced", _TRACE + "training/replay.py: replay concatenates the same share of "
                                 "every finished task"),
        },
        notes=(
            "TRACE replays in a separate pass of one epoch after each task (training/replay.py: replay(i_task, 1)), "
            "over the finished tasks' samples and the general Lima data (--replay_dataset_name Lima); ours mixes "
            "one replayed batch into every step of the next tasks, and has no general replay set.",
            _TRACE_REGIME,
        ),
    ),
    "ewc": PaperPreset(
        paper="TRACE (Wang et al.), arXiv 2310.06762",
        code="BeyonderXX/TRACE",
        values={
            "ewc_lambda": Cited(400.0, _TRACE + "model/Regular/EWC.py: EWC(..., lambda_ewc=400), which "
                                "training/main.py constructs without the argument; the penalty is "
                                "0.5 lambda sum F (p - p_old)^2"),
            "ewc_online": Cited(True, _TRACE + "model/Regular/EWC.py: one Fisher accumulated over every task and "
                                "never reset (_regular_fisher is commented out), anchored at the last task's "
                                "parameters (_update_previous_params)"),
            "ewc_gamma": Cited(1.0, _TRACE + "model/Regular/EWC.py: _update_fisher adds each task's squared "
                               "gradients to the running Fisher without decay"),
        },
        notes=(
            "TRACE's Fisher adds grad^2 / len(dataloader) after every training step of every epoch "
            "(model/Regular/EWC.py: _update_fisher), so each task contributes its epochs (3 to 7) times the mean "
            "squared gradient, of the training loss with the penalty in it; ours averages ewc_batches batches of "
            "the task loss once per task, so TRACE's lambda weighs 3 to 7 times more than the same lambda here.",
            _TRACE_REGIME,
        ),
    ),
}


COMMON = ("", "common")


def preset_names(method: str) -> list[str]:
    """The regimes a run of `method` can name: common, and paper where its authors published one."""
    from cldash.methods import paper_presets  # deferred: imports torch; pages import presets at start-up

    papers = paper_presets()
    return ["common"] + (["paper"] + [f"paper:{m}" for m in sorted(papers) if m != method]
                         if method in papers else [f"paper:{m}" for m in sorted(papers)])


def regime_label(name: str) -> str:
    """A regime's name in words, for a select box or a legend."""
    if name in COMMON:
        return "common (the shared defaults)"
    if name == "paper":
        return "paper (each method's authors' regime)"
    owner = name.split(":", 1)[1]
    return f"{name} ({owner}'s authors' training regime for every method)"


def get_preset(name: str, method: str) -> tuple[str, PaperPreset | None, bool]:
    """(the preset's owner method, its PaperPreset, whether only its training part applies), or a
    ConfigError in one sentence."""
    from cldash.methods import paper_presets  # deferred: imports torch; pages import presets at start-up

    papers = paper_presets()
    if name in COMMON:
        return "", None, False
    if name == "paper":
        if method not in papers:
            raise ConfigError(f"{method} has no paper preset (its authors published no settings we could carry "
                              f"over); the methods with one are: {', '.join(sorted(papers))}.", "preset")
        return method, papers[method], False
    if name.startswith("paper:"):
        owner = name.split(":", 1)[1]
        if owner not in papers:
            raise ConfigError(f"preset {name!r} names no method with a paper preset; choose paper:METHOD with one "
                              f"of: {', '.join(sorted(papers))}.", "preset")
        return owner, papers[owner], owner != method
    raise ConfigError(f"preset must be common, paper or paper:METHOD (got {name!r}).", "preset")


def _fill(out: dict, items: dict[str, Cited], record: dict) -> None:
    """Fill `items` into the raw configuration `out` where the user set nothing, noting it in `record`."""
    for key, cited in items.items():
        if key == "epochs":
            continue   # translated once the batch size is known (_epochs_to_steps)
        if key.startswith("method."):
            opt, target = key.split(".", 1)[1], out["method_options"]
        else:
            opt, target = key, out
        value = role_patterns(cited.value) if key == "targets" else cited.value
        if opt in target and target[opt] not in (None, "", [], {}):
            record["overridden"].append(key)      # the user's own value wins
            continue
        target[opt] = value
        record["values"][key] = list(cited.value) if key == "targets" else value
        record["sources"][key] = cited.source
        if cited.note:
            record["notes"].append(f"{key}: {cited.note}")


def _epochs_to_steps(out: dict, epochs: Cited, stream: str, record: dict) -> None:
    """The authors' epochs on a named benchmark as steps per task: epochs x the benchmark's mean training images a
    task / the batch size (rounded up), unless the user set steps_per_task."""
    from cldash.streams import get_stream  # deferred: imports torch; pages import presets at start-up

    if out.get("steps_per_task") not in (None, "") and "steps_per_task" not in record["values"]:
        record["overridden"].append("steps_per_task")   # the user's own
        return
    sizes = get_stream(stream).train_sizes()
    batch = int(out.get("batch_size") or RunConfig.batch_size)
    mean = sum(sizes) / len(sizes)
    out["steps_per_task"] = steps = math.ceil(epochs.value * mean / batch)
    record["values"]["steps_per_task"] = steps
    record["sources"]["steps_per_task"] = epochs.source
    record["notes"].append(f"steps_per_task: {epochs.value:g} epochs of {stream}'s {mean:,.0f} training images a "
                           f"task (mean over its {len(sizes)} tasks) at batch {batch}")


def apply(raw: dict, method: str) -> tuple[dict, dict]:
    """`raw` (a run configuration as given) with the named preset's values filled in where it sets
    nothing, and the record of the regime: {"preset", "owner", "paper", "code", "values", "sources",
    "notes", "overridden", "aid"} (no values for the common regime without an aid preset).

    ``aid_preset`` (replay or ewc) adds TRACE's settings for that aid (`AIDS`) on top of any regime."""
    name = raw.get("preset") or ""
    owner, preset, training_only = get_preset(name, method)
    aid = raw.get("aid_preset") or ""
    if aid and aid not in AIDS:
        raise ConfigError(f"aid_preset must be one of {', '.join(sorted(AIDS))}, or empty (got {aid!r}).",
                          "aid_preset")
    record = {"preset": name if preset is not None else "common", "owner": owner,
              "paper": preset.paper if preset else "", "code": preset.code if preset else "", "values": {},
              "sources": {}, "notes": list(preset.notes) if preset else [], "overridden": [], "aid": aid}
    if preset is None and not aid:
        return raw, record
    out = dict(raw)
    out["method_options"] = dict(raw.get("method_options") or {})
    if preset is not None:
        stream = str(raw.get("stream") or "")
        items = preset.training(stream) if training_only else preset.for_stream(stream)
        _fill(out, items, record)
        if "epochs" in items:
            _epochs_to_steps(out, items["epochs"], stream, record)
    if aid:
        record["notes"] += [f"{aid} ({AIDS[aid].paper}): {n}" for n in AIDS[aid].notes]
        _fill(out, AIDS[aid].values, record)
    return out, record


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value))
    return str(value)


def regime_table(method: str) -> list[dict]:
    """The two regimes of `method` side by side, one row per value the paper preset sets:
    {"option", "common", "paper", "source", "note"} (no rows when it has no paper preset)."""
    from cldash.methods import get_method, paper_presets  # deferred: imports torch; pages import presets at start-up

    papers = paper_presets()
    if method not in papers:
        return []
    cls = get_method(method)
    run_defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                    for f in dataclasses.fields(RunConfig)}
    run_defaults["lr"] = cls.default_lr
    run_defaults["targets"] = "every linear module"
    run_defaults["policy"] = cls.policies[0] if cls.policies else ""
    option_defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
    rows = []
    for key, cited in papers[method].values.items():
        common = option_defaults.get(key.split(".", 1)[1]) if key.startswith("method.") else run_defaults.get(key)
        rows.append({"option": key, "common": _shown(common), "paper": _shown(cited.value), "source": cited.source,
                     "note": cited.note})
    return rows
