"""Typed, documented options for methods and streams.

A method's or stream's hyper-parameters are a dataclass whose fields are declared with
`option(...)`: the default, a one-line explanation, where the default comes from (a paper's
arXiv id or its code), and the allowed range. The same metadata drives validation, the CLI's
flags, the dashboard's form and the method cards, so none of them can drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, get_type_hints

from cldash.core.errors import ConfigError
from cldash.core.text import has_control_characters


def option(default: Any, help: str, *, source: str = "", low: float | None = None,
           high: float | None = None, low_open: bool = False, choices: tuple | None = None):
    """A dataclass field with its documentation and allowed range.

    `low`/`high` bound numbers (inclusive unless `low_open`), `choices` lists allowed values.
    """
    meta = {"help": help, "source": source, "low": low, "high": high, "low_open": low_open,
            "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def describe(cls) -> list[dict]:
    """The options of an options dataclass as dicts (name, type, default, help, range)."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append({"name": f.name, "type": hints[f.name], "default": default, **f.metadata})
    return rows


def _range_text(meta: dict) -> str:
    low, high = meta.get("low"), meta.get("high")
    if meta.get("choices"):
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    if low is not None and high is not None:
        if meta.get("low_open"):
            return f"> {low} and <= {high}"
        return f"between {low} and {high}"
    if low is not None:
        return f"{'>' if meta.get('low_open') else '>='} {low}"
    if high is not None:
        return f"<= {high}"
    return ""


def _coerce(value: Any, typ: Any, label: str, meta: dict) -> Any:
    """Turn a value (possibly a string from the CLI or a form) into `typ`, or raise one sentence."""
    expect = _range_text(meta)
    hint = f" ({expect})" if expect else ""
    args = getattr(typ, "__args__", ())
    if type(None) in args:  # Optional[X]: None or an empty string mean "not set"
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        (typ,) = [a for a in args if a is not type(None)]
    origin = getattr(typ, "__origin__", None)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{label} must be true or false (got {value!r}).", label)
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{label} must be an integer{hint} (got {value!r}).", label)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(f"{label} must be an integer{hint} (got {value!r}).", label) from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{label} must be a number{hint} (got {value!r}).", label)
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{label} must be a number{hint} (got {value!r}).", label) from None
        if not math.isfinite(out):
            raise ConfigError(f"{label} must be a finite number{hint} (got {value!r}).", label)
        return out
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be text{hint} (got {value!r}).", label)
        if has_control_characters(value):   # an escape or a line break would reach terminals (cldash.core.text)
            raise ConfigError(f"{label} must be plain text, without control characters such as escapes, tabs or "
                              f"line breaks (got {value!r}).", label)
        return value
    if typ is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{label} must be a mapping of option names to values, a JSON object "
                              f"(got {value!r}).", label)
        return value
    if origin in (list, tuple):
        (inner,) = set(typ.__args__) - {Ellipsis} or {str}
        if not isinstance(value, (str, list, tuple)):
            items = {int: "integers", float: "numbers"}.get(inner, "text values")
            raise ConfigError(f"{label} must be a list of {items}, or {items} separated by commas "
                              f"(got {value!r}).", label)
        items = value.split(",") if isinstance(value, str) else list(value)
        items = [i.strip() if isinstance(i, str) else i for i in items]
        items = [i for i in items if i != ""]
        return [_coerce(i, inner, label, {}) for i in items]
    return value


def _kind(typ: Any) -> str:
    """'an integer' / 'a number' / 'numbers'... for messages."""
    args = [a for a in getattr(typ, "__args__", ()) if a is not type(None)]
    if getattr(typ, "__origin__", None) in (list, tuple):
        return {"an integer": "integers", "a number": "numbers"}.get(_kind(args[0]), "")
    if len(args) == 1:   # Optional[X]
        typ = args[0]
    return {int: "an integer", float: "a number"}.get(typ, "")


def _check_range(value: Any, label: str, meta: dict, kind: str = "") -> None:
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{label} must be one of {', '.join(map(str, choices))} (got {value!r}).", label)
    low, high = meta.get("low"), meta.get("high")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        too_low = low is not None and (v <= low if meta.get("low_open") else v < low)
        too_high = high is not None and v > high
        if too_low or too_high:
            what = f"{kind} {_range_text(meta)}" if kind else _range_text(meta)
            raise ConfigError(f"{label} must be {what} (got {v!r}).", label)


def is_default(row: dict, value: Any) -> bool:
    """Whether `value` (possibly a form's string) is the option row's default (cldash.core.options.describe)."""
    if value == row["default"]:
        return True
    try:
        return _coerce(value, row["type"], row["name"], row) == row["default"]
    except ConfigError:
        return False


def check_types(cls, values: dict, prefix: str = "") -> dict:
    """`values` with each of `cls`'s fields turned into its type, or one sentence naming the field and
    the type it needs; ranges and unknown keys are left to `build` (for values that others may still
    override, such as a JSON config file's under the command line's flags)."""
    hints = get_type_hints(cls)
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
    return {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name, meta[name])
            if name in hints else value for name, value in values.items()}


def build(cls, values: dict | None, prefix: str):
    """Build an options dataclass from a dict of (possibly string) values, validating each field.

    Unknown keys are rejected with the list of known ones. `prefix` names the owner in
    messages ("lora.rank must be an integer >= 1 (got 0).").
    """
    values = dict(values or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        owner = prefix or "a run configuration"
        raise ConfigError(f"{owner} has no option {unknown[0]!r}; its options are: {known}.",
                          f"{prefix}.{unknown[0]}" if prefix else unknown[0])
    kwargs = {}
    for name, value in values.items():
        label = f"{prefix}.{name}" if prefix else name
        meta = fields[name].metadata
        value = _coerce(value, hints[name], label, meta)
        _check_range(value, label, meta, _kind(hints[name]))
        kwargs[name] = value
    obj = cls(**kwargs)
    for name, f in fields.items():  # defaults must satisfy the ranges too (guards typos in code)
        if name not in kwargs:
            _check_range(getattr(obj, name), f"{prefix}.{name}" if prefix else name, f.metadata,
                         _kind(hints[name]))
    check = getattr(obj, "check", None)
    if check is not None:
        check(prefix)
    return obj


def field_errors(cls, values: dict | None, prefix: str) -> dict[str, ConfigError]:
    """Every field of `values` that `build` would refuse on its own (unknown name, type, range), each error
    under its field's name ('lora.rank', 'steps_per_task'), so that a form can show all of them at once.
    Checks across fields (a method's `check`) need the whole set and are left to `build`."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors: dict[str, ConfigError] = {}
    for name, value in dict(values or {}).items():
        label = f"{prefix}.{name}" if prefix else name
        try:
            if name not in fields:
                build(cls, {name: value}, prefix)    # the unknown-option sentence, with the known ones
            value = _coerce(value, hints[name], label, fields[name].metadata)
            _check_range(value, label, fields[name].metadata, _kind(hints[name]))
        except ConfigError as exc:
            errors.setdefault(exc.field or label, exc)
    return errors


def option_label(name: str) -> str:
    """What a form calls an option: its name in words ('steps_per_task' -> 'steps per task')."""
    return name.replace("_", " ")


def worded(message: str, names: dict[str, str]) -> str:
    """`message` with every option name of `names` that it mentions ('lora.rank', 'lr', 'steps_per_task', as
    errors name them) replaced by what a surface calls the option: a form's label ('rank', 'learning rate')
    or a command line's flag ('--rank', '--lr'). Only whole names are replaced: 'lr' in 'lr_schedule' or
    in 'lora.lr' is not 'lr'."""
    if not names:
        return message
    pattern = re.compile(r"(?<![\w.\-])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
                         + r")(?![\w\-])")
    return pattern.sub(lambda m: names[m.group(1)], message)


def flag_worded(message: str, parser, owners: dict[str, str]) -> str:
    """A command line's error: `message` with the options it names as the run configuration does ('lora.rank',
    'lr', 'steps_per_task') replaced by the flags `parser` reads them from ('--rank', '--lr',
    '--steps-per-task'). The parser's options have dests KIND:NAME (run:lr, method:rank), and `owners` maps
    each KIND to the prefix its errors use ('' for run options, else the method's, stream's or backbone's
    name). A plain word (seed, preset, device) is the flag only where it starts the message: "seed must be
    ..." is about --seed, "a paper preset" is not about --preset."""
    anywhere, first = {}, {}
    for action in getattr(parser, "_actions", []):
        kind, _, name = (action.dest or "").partition(":")
        if kind not in owners or not name or not action.option_strings:
            continue
        field = f"{owners[kind]}.{name}" if owners[kind] else name
        (anywhere if owners[kind] or "_" in name or name == "lr" else first)[field] = action.option_strings[0]
    message = worded(message, anywhere)
    word = message.split(" ", 1)[0]
    return first[word] + message[len(word):] if word in first else message


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj or {})
