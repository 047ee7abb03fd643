"""What the commands share to read their command line: argparse with one-sentence errors, the global
options (`--db`, `--artifacts`) that stand anywhere in argv, a command's row in the table, run ids, and the option rows
(cldash.core.options) of a run, its method, stream and backbone turned into flags (`--rank`, `--stream-angles`).

A problem is a UserError sentence, never a usage dump; an unknown flag names the closest one the command has.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cldash.config import RunConfig
from cldash.core.errors import ConfigError, UserError
from cldash.core.options import describe, flag_worded

RUN_FLAGS_SKIP = {"method", "stream", "backbone", "method_options", "stream_options", "backbone_options", "regime"}

# Options every command takes, before or after its name (main moves them in front of it); a new one is
# one row: its flag and add_argument's keywords. No method, stream or backbone option may take these flags.
GLOBAL_OPTIONS = {
    "--db": {"metavar": "PATH", "help": "the run store, a file path or a SQLAlchemy URL "
             "(default: $CLDASH_DB or ./runs.db)"},
    "--artifacts": {"metavar": "URL", "help": "where new runs keep their checkpoints and adapters, a folder or an "
                    "fsspec URL such as s3://bucket/prefix (default: $CLDASH_ARTIFACTS, else the store's setting, "
                    "else next to a SQLite store)"},
}
_TAKES_NO_VALUE = ("store_true", "store_false", "store_const", "count")


@dataclass(frozen=True)
class Command:
    """One row of the CLI's table (cldash.cli.COMMANDS): `cldash NAME` is described by `help` and runs
    `handler(args)` once `add_arguments` has added its arguments to its parser. Both are named as
    "module:function" inside cldash.cli and imported only when that command runs, so `cldash --help` and a
    mistyped command answer without loading the store or the engine. A `staged` command's flags depend on
    its values (a run's on its method, stream and backbone): it reads the rest of argv itself, as
    `handler(args, rest)`."""
    name: str
    help: str
    add_arguments: str | None
    handler: str
    staged: bool = False

    def function(self, spec: str) -> Callable:
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(f"cldash.cli.{module}"), name)


def hoist_global_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """argv split into its global options (`--db X`, `--db=X`, wherever they stand) and the rest.

    Only whole tokens count and nothing after `--`; a value never starts with "-", since argparse
    would not have read such a token as a value either."""
    front, rest = [], []
    tokens = iter(argv)
    for token in tokens:
        flag = token.split("=", 1)[0]
        if token == "--":
            rest += [token, *tokens]
        elif flag not in GLOBAL_OPTIONS:
            rest.append(token)
        elif "=" in token or GLOBAL_OPTIONS[flag].get("action") in _TAKES_NO_VALUE:
            front.append(token)
        else:
            value = next(tokens, None)
            if value is None or value.startswith("-"):
                raise UserError(f"{flag} needs a value: {GLOBAL_OPTIONS[flag]['help']}.")
            front += [token, value]
    return front, rest


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's convention: a problem is one UserError sentence, never a usage dump.

    `help_command` is what to type to list this parser's options (a run's flags depend on its method,
    stream and backbone, so cmd_run sets one that repeats them).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_command = f"{self.prog} --help"
        self.commands = None   # the subcommands' action, once add_subparsers made one
        # (flag, its value or None) -> how to say what an unknown flag meant, or None (cldash sweep: set_hint)
        self.option_hint: Callable[[str, str | None], str | None] | None = None

    def add_subparsers(self, **kwargs):
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def flags(self) -> list[str]:
        return [flag for action in self._actions for flag in action.option_strings]

    def unknown(self, what: str, name: str, known: list[str]) -> str:
        """'unknown option --rnak for cldash run; did you mean --rank? (... --help lists them)'."""
        stripped = {k.lstrip("-"): k for k in known}   # compare names: the dashes would make any two flags alike
        close = difflib.get_close_matches(name.lstrip("-"), list(stripped), n=1)
        text = f"unknown {what} {name}" + (f" for {self.prog}" if what == "option" else "")
        if close:
            return f"{text}; did you mean {stripped[close[0]]}? ({self.help_command} lists them)"
        return f"{text}; {self.help_command} lists the {what}s."

    def unrecognized(self, extras: list[str]) -> str:
        at = next((i for i, token in enumerate(extras) if token.startswith("-")), None)
        if at is None:
            return f"unexpected argument {extras[0]!r} for {self.prog}; {self.help_command} shows its usage."
        option, eq, value = extras[at].partition("=")
        if not eq:   # `--flag VALUE`: argparse left both tokens over
            value = extras[at + 1] if at + 1 < len(extras) and not extras[at + 1].startswith("-") else None
        hint = self.option_hint(option, value) if self.option_hint else None
        if hint:
            return f"unknown option {option} for {self.prog}; {hint}"
        return self.unknown("option", option, self.flags() + list(GLOBAL_OPTIONS))

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:   # a subcommand's own unknown flags surface here, at the top parser
            command = getattr(ns, self.commands.dest, None) if self.commands else None
            raise UserError((self.commands.choices[command] if command else self).unrecognized(extras))
        return ns

    def error(self, message: str):
        raise UserError(self.sentence(message))

    def sentence(self, message: str) -> str:
        """argparse's (English) message as one of ours; anything unforeseen keeps its text, on one line."""
        if m := re.fullmatch(r"argument (\S+): expected .*argument.*", message):
            return f"{m[1]} needs a value."
        if m := re.fullmatch(r"argument (\S+): invalid (int|float) value: (.*)", message):
            return f"{m[1]} must be {'an integer' if m[2] == 'int' else 'a number'} (got {m[3]})."
        if m := re.fullmatch(r"argument (\S+): invalid choice: (.*) \(choose from (.*)\)", message):
            return f"{m[1]} must be one of {m[3].replace(chr(39), '')} (got {m[2]})."
        if m := re.fullmatch(r"argument (\S+): ignored explicit argument (.*)", message):
            return f"{m[1]} takes no value (got {m[2]})."
        if m := re.fullmatch(r"ambiguous option: (\S+) could match (.*)", message):
            return f"{m[1]} is ambiguous for {self.prog}: it could be {m[2]}; write the option out."
        if m := re.fullmatch(r"the following arguments are required: (.*)", message):
            if self.commands is not None and m[1].split(", ")[0] in (self.commands.dest, self.commands.metavar):
                return f"choose a command: {', '.join(self.commands.choices)} ({self.help_command} describes them)."
            helps = {a.metavar or a.dest: a.help for a in self._actions}
            needs = ", ".join(f"{name}, {helps[name]}" if helps.get(name) else name for name in m[1].split(", "))
            return f"{self.prog} needs {needs}."
        return f"{self.prog}: {message}."


def run_id(text: str) -> int:
    """A run id as argparse's type: anything but a whole number is one sentence."""
    try:
        return int(text)
    except ValueError:
        raise UserError(f"a run id is a whole number (got {text!r}); cldash list shows the stored runs.") from None


RUN_ID = {"type": run_id, "metavar": "RUN_ID", "help": "the run's id (cldash list shows them)"}


def add_run_id(p: argparse.ArgumentParser) -> None:
    """The one argument of the commands that act on one run (cldash execute 3, cldash cancel 3, ...)."""
    p.add_argument("run", **RUN_ID)


# -- option rows as flags ------------------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _metavar(row: dict) -> str:
    """How an option's value reads in --help: its choices as {a,b}, or N, X, LIST, BOOL, TEXT by type."""
    if row.get("choices"):
        return "{" + ",".join(map(str, row["choices"])) + "}"
    typ = row["type"]
    args = getattr(typ, "__args__", ())
    if type(None) in args:   # X | None
        (typ,) = [a for a in args if a is not type(None)]
    if getattr(typ, "__origin__", None) in (list, tuple):
        return "LIST"
    return {int: "N", float: "X", bool: "BOOL"}.get(typ, "TEXT")


def add_options(parser: argparse.ArgumentParser, rows: list[dict], dest_prefix: str, flag_prefix: str = "",
                taken: set[str] | None = None) -> None:
    """Add one flag per option row; values stay strings and are validated by the options' builder."""
    taken = taken if taken is not None else set()
    for row in rows:
        flag = _flag(flag_prefix + row["name"])
        if flag in taken or flag in GLOBAL_OPTIONS:
            flag = _flag(f"{dest_prefix}-{row['name']}")
        taken.add(flag)
        default = row["default"]
        text = f"{row['help']} (default: {default})" + (f" [{row['source']}]" if row.get("source") else "")
        kwargs = {"dest": f"{dest_prefix}:{row['name']}", "default": None, "help": text.replace("%", "%%"),
                  "metavar": _metavar(row)}
        if kwargs["metavar"] == "BOOL":
            kwargs.update(nargs="?", const="true")
        parser.add_argument(flag, **kwargs)


def set_hint(flag: str, value: str | None) -> str | None:
    """For a command that takes run options as ``--set NAME=VALUE`` (cldash sweep): an unknown flag that names a
    RunConfig field or a method's option, as that option ('--steps-per-task 100' -> '--set steps_per_task=100');
    None for any other flag. The fields such a command has flags for (method, stream, seed, preset, name ...) are
    left out."""
    name = flag.lstrip("-").replace("-", "_")
    if not flag.startswith("--") or not name:
        return None
    rows = {r["name"]: (r, "a run option") for r in describe(RunConfig)
            if r["name"] not in RUN_FLAGS_SKIP | {"seed", "preset", "name"}}
    if name not in rows:
        from cldash.methods import REGISTRY  # deferred: imports torch; only for a flag that is not a run option

        owners = [m for m, cls in REGISTRY.items() if name in {f.name for f in dataclasses.fields(cls.Config)}]
        if not owners:
            return None
        row = next(r for r in describe(REGISTRY[owners[0]].Config) if r["name"] == name)
        rows[name] = (row, f"an option of {', '.join(owners[:3])}{' ...' * (len(owners) > 3)}")
    row, what = rows[name]
    shown = value if value is not None else _metavar(row)
    return (f"{name} is {what}: give it to every run with --set {name}={shown}, or several values with "
            f"--grid {name}=V1,V2.")


def run_parser(method: str, stream: str, backbone: str | None) -> argparse.ArgumentParser:
    """`cldash run`'s parser for this method, stream and backbone: their options are its flags."""
    from cldash.methods import get_method  # deferred: imports torch

    p = Parser(prog="cldash run", allow_abbrev=False, description="Train a backbone through a task stream with one "
                               "method and store everything (accuracy matrix, losses, spectra).")
    p.add_argument("--method", default=method, metavar="NAME", help="adapter method (cldash methods)")
    p.add_argument("--stream", default=stream, metavar="NAME", help="task stream (cldash streams)")
    p.add_argument("--backbone", default=backbone or "", metavar="NAME", help="backbone; default: the stream's")
    p.add_argument("--config", metavar="FILE", help="a JSON file with a run configuration; flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    taken = {"--method", "--stream", "--backbone", "--config", "--quiet", "--help"}
    run_rows = [r for r in describe(RunConfig) if r["name"] not in RUN_FLAGS_SKIP]
    add_options(p.add_argument_group("run"), run_rows, "run", taken=taken)
    mcls = get_method(method)
    add_options(p.add_argument_group(f"{method} options"), describe(mcls.Config), "method", taken=taken)
    add_stream_and_backbone_options(p, stream, backbone, taken)
    return p


def add_stream_and_backbone_options(p: argparse.ArgumentParser, stream: str, backbone: str | None,
                                    taken: set[str]) -> None:
    """The stream's options (--stream-...) and its backbone's (--backbone-...) as argument groups."""
    from cldash.backbones import get_backbone  # deferred: imports torch
    from cldash.streams import get_stream  # deferred: imports torch

    scls = get_stream(stream)
    add_options(p.add_argument_group(f"{stream} options"), describe(scls.Options), "stream", "stream-", taken)
    entry = get_backbone(backbone or scls.default_backbone)
    add_options(p.add_argument_group(f"{entry.name} options"), describe(entry.Options), "backbone",
                "backbone-", taken)


def help_command(prog: str, chosen: argparse.Namespace) -> str:
    """`cldash run --method lora --help`: the help for the method, stream, backbone or config chosen."""
    return " ".join([prog, *(f"--{name} {value}" for name, value in vars(chosen).items() if value), "--help"])


def given(ns: argparse.Namespace) -> dict:
    """The options given on the command line (flags left out stay out), run options at the top level and
    method, stream and backbone options under their ``*_options`` keys."""
    values: dict = {}
    for dest, value in vars(ns).items():
        if value is None or ":" not in dest:
            continue
        group, name = dest.split(":", 1)
        if group == "run":
            values[name] = value
        else:
            values.setdefault(f"{group}_options", {})[name] = value
    return values


def collect(ns: argparse.Namespace, base: dict) -> dict:
    """`base` (a config file's run options) with the options given on the command line over it."""
    values = dict(base)
    flags = given(ns)
    for key in ("method_options", "stream_options", "backbone_options"):
        values[key] = {**(values.get(key) or {}), **flags.pop(key, {})}
    values.update(flags, method=ns.method, stream=ns.stream, backbone=ns.backbone)
    return values


def default_backbone(stream: str) -> str:
    from cldash.streams import STREAMS  # deferred: imports torch

    return STREAMS[stream].default_backbone if stream in STREAMS else ""


def as_flags(exc: ConfigError, parser: argparse.ArgumentParser, method: str, stream: str,
             backbone: str | None) -> ConfigError:
    """A configuration error named as this command line names the options: --rank, --lr."""
    owners = {"run": "", "method": method, "stream": stream, "backbone": backbone or default_backbone(stream)}
    return ConfigError(flag_worded(str(exc), parser, owners), exc.field)
