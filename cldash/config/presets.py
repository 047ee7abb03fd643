"""Regimes: the common one every comparison shares, and each method's authors' ("paper") regime.

The common regime is RunConfig's defaults: AdamW, each method's default learning rate, constant
schedule, every linear adapted, every class in the loss; it keeps side-by-side comparisons fair.
A `paper` preset is the training regime a method's authors published (optimizer, learning rate,
schedule, warm-up, weight decay, dropout, targets, steps per task, loss masking and the method's
own options), each value with the file of the authors' repository or the section of the paper it
comes from, and a note wherever a value had to be translated to the small backbones (epochs of a
data set we do not have, a batch size for a 7B model). The table itself is data, in
`cldash.config.paper_presets`.

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

from dataclasses import dataclass
from typing import Any

from cldash.core.errors import ConfigError

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


@dataclass(frozen=True)
class Cited:
    """One value of a preset and where it comes from (a file of the authors' repository, a section
    of the paper); `note` says how it was translated to the small backbones, where it was."""

    value: Any
    source: str
    note: str = ""


@dataclass(frozen=True)
class PaperPreset:
    """A method's authors' regime. `values` keys are RunConfig fields, or ``method.OPTION`` for the
    method's own options; ``targets`` holds module roles (ROLE_PATTERNS), not patterns."""

    paper: str                       # "CoDyRA, arXiv 2412.01004"
    code: str                        # the authors' repository, "Artificer-AI-Lab/CoDyRA", or "" (none public)
    values: dict[str, Cited]
    notes: tuple[str, ...] = ()      # what did not carry over at all, in sentences

    def training(self) -> dict[str, Cited]:
        """The run-level part (no method options): what ``paper:METHOD`` lends another method."""
        return {k: v for k, v in self.values.items() if not k.startswith("method.")}


COMMON = ("", "common")


def preset_names(method: str) -> list[str]:
    """The regimes a run of `method` can name: common, and paper where its authors published one."""
    from cldash.config.paper_presets import PAPER

    return ["common"] + (["paper"] + [f"paper:{m}" for m in sorted(PAPER) if m != method]
                         if method in PAPER else [f"paper:{m}" for m in sorted(PAPER)])


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
    from cldash.config.paper_presets import PAPER

    if name in COMMON:
        return "", None, False
    if name == "paper":
        if method not in PAPER:
            raise ConfigError(f"{method} has no paper preset (its authors published no settings we could carry "
                              f"over); the methods with one are: {', '.join(sorted(PAPER))}.", "preset")
        return method, PAPER[method], False
    if name.startswith("paper:"):
        owner = name.split(":", 1)[1]
        if owner not in PAPER:
            raise ConfigError(f"preset {name!r} names no method with a paper preset; choose paper:METHOD with one "
                              f"of: {', '.join(sorted(PAPER))}.", "preset")
        return owner, PAPER[owner], owner != method
    raise ConfigError(f"preset must be common, paper or paper:METHOD (got {name!r}).", "preset")


def _fill(out: dict, items: dict[str, Cited], record: dict) -> None:
    """Fill `items` into the raw configuration `out` where the user set nothing, noting it in `record`."""
    for key, cited in items.items():
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


def apply(raw: dict, method: str) -> tuple[dict, dict]:
    """`raw` (a run configuration as given) with the named preset's values filled in where it sets
    nothing, and the record of the regime: {"preset", "owner", "paper", "code", "values", "sources",
    "notes", "overridden", "aid"} (no values for the common regime without an aid preset).

    ``aid_preset`` (replay or ewc) adds TRACE's settings for that aid (`cldash.config.paper_presets.AIDS`) on top
    of any regime."""
    from cldash.config.paper_presets import AIDS

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
        _fill(out, preset.training() if training_only else preset.values, record)
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
    import dataclasses

    from cldash.config import RunConfig
    from cldash.methods import get_method
    from cldash.config.paper_presets import PAPER

    if method not in PAPER:
        return []
    cls = get_method(method)
    run_defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                    for f in dataclasses.fields(RunConfig)}
    run_defaults["lr"] = cls.default_lr
    run_defaults["targets"] = "every linear module"
    run_defaults["policy"] = cls.policies[0] if cls.policies else ""
    option_defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
    rows = []
    for key, cited in PAPER[method].values.items():
        common = option_defaults.get(key.split(".", 1)[1]) if key.startswith("method.") else run_defaults.get(key)
        rows.append({"option": key, "common": _shown(common), "paper": _shown(cited.value), "source": cited.source,
                     "note": cited.note})
    return rows
