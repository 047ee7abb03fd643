"""`cldash run|execute|list|show|export|cancel|delete|methods|streams|queue|reconcile|order|pretrain|db`.

Global options (`--db`) go before or after the command: `cldash --db x.db list` and
`cldash list --db x.db` are the same. Bad input gets one sentence on stderr and exit code 2
(an unknown flag names the closest one the command has), and nothing is written to the store
before the whole configuration (including ranks against layer sizes) has been checked.
A run that fails or is interrupted exits with 1 and keeps what it wrote. Every command that reads
runs reconciles the store with the processes and starts the queued runs the concurrency limit
allows, so the queue drains with no dashboard open (`cldash queue` shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import re
import socket
import sys
import time
from pathlib import Path

from cldash.core.errors import ConfigError, UserError
from cldash.core.text import id_ranges as _id_ranges

RUN_FLAGS_SKIP = {"method", "stream", "backbone", "method_options", "stream_options", "backbone_options", "regime"}

# Options every command takes, before or after its name (main moves them in front of it); a new one is
# one row: its flag and add_argument's keywords. No method, stream or backbone option may take these flags.
GLOBAL_OPTIONS = {
    "--db": {"metavar": "PATH", "help": "the run store, a file path or a SQLAlchemy URL "
             "(default: $CLDASH_DB or ./runs.db)"},
}
_TAKES_NO_VALUE = ("store_true", "store_false", "store_const", "count")


def _hoist_global_options(argv: list[str]) -> tuple[list[str], list[str]]:
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


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's convention: a problem is one UserError sentence, never a usage dump.

    `help_command` is what to type to list this parser's options (a run's flags depend on its method,
    stream and backbone, so cmd_run sets one that repeats them).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_command = f"{self.prog} --help"
        self.commands = None   # the subcommands' action, once add_subparsers made one

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
        option = next((token.split("=", 1)[0] for token in extras if token.startswith("-")), None)
        if option is None:
            return f"unexpected argument {extras[0]!r} for {self.prog}; {self.help_command} shows its usage."
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


def _add_options(parser: argparse.ArgumentParser, rows: list[dict], dest_prefix: str, flag_prefix: str = "",
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


def _run_parser(method: str, stream: str, backbone: str | None) -> argparse.ArgumentParser:
    from cldash.config import RunConfig
    from cldash.methods import get_method
    from cldash.core.options import describe

    p = _Parser(prog="cldash run", allow_abbrev=False, description="Train a backbone through a task stream with one "
                                "method and store everything (accuracy matrix, losses, spectra).")
    p.add_argument("--method", default=method, metavar="NAME", help="adapter method (cldash methods)")
    p.add_argument("--stream", default=stream, metavar="NAME", help="task stream (cldash streams)")
    p.add_argument("--backbone", default=backbone or "", metavar="NAME", help="backbone; default: the stream's")
    p.add_argument("--config", metavar="FILE", help="a JSON file with a run configuration; flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    taken = {"--method", "--stream", "--backbone", "--config", "--quiet", "--help"}
    run_rows = [r for r in describe(RunConfig) if r["name"] not in RUN_FLAGS_SKIP]
    _add_options(p.add_argument_group("run"), run_rows, "run", taken=taken)
    mcls = get_method(method)
    _add_options(p.add_argument_group(f"{method} options"), describe(mcls.Config), "method", taken=taken)
    _add_stream_and_backbone_options(p, stream, backbone, taken)
    return p


def _add_stream_and_backbone_options(p: argparse.ArgumentParser, stream: str, backbone: str | None,
                                     taken: set[str]) -> None:
    """The stream's options (--stream-...) and its backbone's (--backbone-...) as argument groups."""
    from cldash.backbones import get_backbone
    from cldash.core.options import describe
    from cldash.streams import get_stream

    scls = get_stream(stream)
    _add_options(p.add_argument_group(f"{stream} options"), describe(scls.Options), "stream", "stream-", taken)
    entry = get_backbone(backbone or scls.default_backbone)
    _add_options(p.add_argument_group(f"{entry.name} options"), describe(entry.Options), "backbone",
                 "backbone-", taken)


def _help_command(prog: str, chosen: argparse.Namespace) -> str:
    """`cldash run --method lora --help`: the help for the method, stream, backbone or config chosen."""
    return " ".join([prog, *(f"--{name} {value}" for name, value in vars(chosen).items() if value), "--help"])


def _given(ns: argparse.Namespace) -> dict:
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


def _collect(ns: argparse.Namespace, base: dict) -> dict:
    values = dict(base)
    given = _given(ns)
    for key in ("method_options", "stream_options", "backbone_options"):
        values[key] = {**(values.get(key) or {}), **given.pop(key, {})}
    values.update(given, method=ns.method, stream=ns.stream, backbone=ns.backbone)
    return values


class ProgressBar:
    """A one-line progress display on stderr (a line per 10 % when stderr is not a terminal)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.last_decile = -1
        self.start = time.perf_counter()

    def __call__(self, p) -> None:
        now = time.perf_counter()
        frac = p.step / max(1, p.total_steps)
        done = p.step == p.total_steps
        if self.tty and (now - self.last < 0.1 and not done):
            return
        if not self.tty and int(frac * 10) == self.last_decile and not done:
            return
        self.last, self.last_decile = now, int(frac * 10)
        bar = "#" * int(frac * 24)
        score = p.scores.get(p.task)
        acc = f" acc(task {p.task}) {score:.3f}" if score is not None else ""
        line = (f"[{bar:<24}] {100 * frac:5.1f}% step {p.step}/{p.total_steps} task {p.task}/{p.num_tasks} "
                f"({p.task_name}) loss {p.loss:.4f}{acc} {now - self.start:.0f}s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def format_matrix(m: dict) -> str:
    """The accuracy matrix as a text table: rows 'before' and 'after task i', general tasks last."""
    names = [f"T{j + 1}" for j in range(len(m["tasks"]))] + [f"G{k}" for k in range(len(m["general"]))]
    lines = ["".ljust(16) + "".join(n.rjust(8) for n in names)]
    generals = list(m["general"].values())
    for i, row_id in enumerate(m["rows"]):
        label = "before" if row_id == 0 else f"after T{row_id}"
        cells = list(m["R"][i]) + [g[i] for g in generals]
        lines.append(label.ljust(16) + "".join(("  n/a" if math.isnan(v) else f"{v:.3f}").rjust(8) for v in cells))
    legend = [f"T{j + 1}: {n}" for j, n in enumerate(m["tasks"])] + [f"G{k}: {n}" for k, n in
                                                                       enumerate(m["general"])]
    return "\n".join(lines) + "\n" + "; ".join(legend)


def format_metrics(summary: dict | None) -> str:
    from cldash.measures.metrics import METRICS, fmt

    if not summary:
        return "(no metrics: the run did not finish)"
    lines = [f"  {info.label:<44} {fmt(summary.get(info.key, float('nan'))):>8}" for info in METRICS]
    for key, value in summary.items():     # each general task's own score and retention
        if key.startswith("general:") or key.startswith("general_retention:"):
            what, name = key.split(":", 1)
            label = ("retention of " if what == "general_retention" else "score of ") + name
            lines.append(f"    {label[:42]:<42} {fmt(value):>8}")
    return "\n".join(lines)


def _read_config_file(name: str) -> dict:
    """The run options of a JSON file, each known field of the right type (flags may still override them)."""
    from cldash.config import RunConfig
    from cldash.core.options import check_types

    path = Path(name)
    if path.is_dir():
        raise UserError(f"the config file {path} is a folder; give a JSON file of run options.")
    if not path.is_file():
        raise UserError(f"the config file {path} does not exist.")
    try:
        base = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"the config file {path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except UnicodeDecodeError:
        raise UserError(f"the config file {path} is not text (JSON is UTF-8 text); give a JSON file of run "
                        "options.") from None
    except OSError as exc:
        raise UserError(f"cannot read the config file {path}: {exc.strerror or exc}.") from None
    if not isinstance(base, dict):
        raise UserError(f"the config file {path} must hold a JSON object of run options.")
    return check_types(RunConfig, base)


def _default_backbone(stream: str) -> str:
    from cldash.streams import STREAMS

    return STREAMS[stream].default_backbone if stream in STREAMS else ""


def cmd_run(args, rest: list[str]) -> int:
    from cldash.config import check_against_model, describe_run, resolve
    from cldash.core.options import flag_worded
    from cldash.runs.execute import execute
    from cldash.store import Store

    pre = _Parser(prog="cldash run", add_help=False, allow_abbrev=False)
    pre.add_argument("--method")
    pre.add_argument("--stream")
    pre.add_argument("--backbone")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(rest)
    base = _read_config_file(known.config) if known.config else {}
    wants_help = any(a in ("-h", "--help") for a in rest)
    method = known.method or base.get("method") or ("lora" if wants_help else None)
    if not method:
        raise UserError("choose a method with --method (cldash methods lists them).")
    stream = known.stream or base.get("stream") or "digits-rotate"
    backbone = known.backbone or base.get("backbone") or ""
    parser = _run_parser(method, stream, backbone)
    parser.help_command = _help_command("cldash run", known)
    if wants_help:
        parser.print_help()
        return 0
    ns = parser.parse_args(rest)
    ns.method, ns.stream, ns.backbone = method, stream, backbone
    try:
        resolved = resolve(_collect(ns, base))
        check_against_model(resolved)
    except ConfigError as exc:   # named as this command line names the options: --rank, --lr
        owners = {"run": "", "method": method, "stream": stream, "backbone": backbone or _default_backbone(stream)}
        raise ConfigError(flag_worded(str(exc), parser, owners), exc.field) from None
    store = Store(args.db)
    config = resolved.to_dict()
    # owned by this process from its INSERT: the scheduler never starts it, reconcile ends it if we die first
    run_id = store.create_run(config, status="queued", name=config["name"] or describe_run(resolved.config),
                              launcher="cli", pid=os.getpid(), host=socket.gethostname())
    print(f"run {run_id}: {describe_run(resolved.config)} -> {store.display}", file=sys.stderr)
    status = execute(store, run_id, progress=None if ns.quiet else ProgressBar())
    return _report(store, run_id, status)


def _order_parser(stream: str, backbone: str | None) -> argparse.ArgumentParser:
    p = _Parser(prog="cldash order", allow_abbrev=False, description="Measure the gradient conflict (cosine of "
                                "accumulated full-weight gradients per targeted module) between every pair of a "
                                "stream's tasks on the pre-trained backbone, store it, and print the adversarial "
                                "order (the most opposing consecutive gradients, as in SLICE) with the command "
                                "that runs it.")
    p.add_argument("--stream", default=stream, metavar="NAME", help="task stream (cldash streams)")
    p.add_argument("--backbone", default=backbone or "", metavar="NAME", help="backbone; default: the stream's")
    p.add_argument("--targets", default=None, metavar="LIST",
                   help="comma-separated target patterns; default: the backbone's")
    p.add_argument("--batches", type=int, default=4, metavar="N", help="batches whose gradients are accumulated "
                   "per task")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="examples per batch")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the batches drawn")
    p.add_argument("--method", default="lora", metavar="NAME", help="method named in the printed run command")
    p.add_argument("--list", action="store_true", help="list the stored orders instead of measuring")
    p.add_argument("--show", type=int, default=None, metavar="ID", help="print one stored order")
    taken = {"--stream", "--backbone", "--targets", "--batches", "--batch-size", "--seed", "--method", "--list",
             "--show", "--help"}
    _add_stream_and_backbone_options(p, stream, backbone, taken)
    return p


def format_order(o: dict, method: str = "lora") -> str:
    """A stored order as text: the conflict matrix, the adversarial order and the command that runs it."""
    from cldash.analysis.orders import stream_flags

    tasks, C = o["tasks"], o["matrix"]
    lines = [f"order {o.get('id', '?')}: {o['stream']} on {o['backbone']}; gradient cosine C[i][j] "
             f"(mean over {len(o['config'].get('modules', [])) or 'the targeted'} modules):",
             "".ljust(6) + "".join(f"T{j + 1}".rjust(8) for j in range(len(tasks)))]
    for i, row in enumerate(C):
        lines.append(f"T{i + 1}".ljust(6) + "".join(f"{v:8.3f}" for v in row))
    lines.append("; ".join(f"T{j + 1}: {n}" for j, n in enumerate(tasks)))
    lines.append(f"adversarial order: {' -> '.join(f'T{i + 1}' for i in o['order'])} (sum of consecutive cosines "
                 f"{o['cost']:.3f}; configured order {o['natural_cost']:.3f})")
    lines.append(f"run it: cldash run --method {method} --stream {o['stream']} --backbone {o['backbone']} "
                 + stream_flags(o["ordered_options"]))
    return "\n".join(lines)


def cmd_order(args, rest: list[str]) -> int:
    from cldash.analysis.orders import measure
    from cldash.store import Store

    pre = _Parser(prog="cldash order", add_help=False, allow_abbrev=False)
    pre.add_argument("--stream", default="skills")
    pre.add_argument("--backbone", default="")
    known, _ = pre.parse_known_args(rest)
    parser = _order_parser(known.stream, known.backbone)
    parser.help_command = _help_command("cldash order", known)
    if any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        return 0
    ns = parser.parse_args(rest)
    for name, value in (("--batches", ns.batches), ("--batch-size", ns.batch_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1 (got {value}).")
    store = Store(args.db)
    if ns.list:
        orders = store.orders()
        if not orders:
            print(f"no orders in {store.display}")
        for o in orders:
            print(f"{o['id']:>4}  {o['stream']:<16} {o['backbone']:<12} "
                  f"{' -> '.join(str(i + 1) for i in o['order'])}  cost {o['cost']:.3f} "
                  f"(configured {o['natural_cost']:.3f})")
        return 0
    if ns.show is not None:
        print(format_order(store.get_order(ns.show), ns.method))
        return 0
    values = _collect(ns, {})
    values.pop("method", None)
    if ns.targets:
        values["targets"] = ns.targets
    result = measure(values, batches=ns.batches, batch_size=ns.batch_size, seed=ns.seed)
    result["id"] = store.save_order(result)
    result["config"] = {"modules": result["modules"]}
    print(format_order(result, ns.method))
    return 0


def _pretrain_parser(backbone: str) -> argparse.ArgumentParser:
    from cldash.backbones import get_backbone
    from cldash.core.options import describe

    p = _Parser(prog="cldash pretrain", allow_abbrev=False, description="Pre-train one of cldash's own backbones with "
                                "the project's recipe (on one CPU thread) and print its scores. With --out, write "
                                "NAME.safetensors and NAME.json there (how the shipped default weights are made); "
                                "without, into the local cache that runs with these options use.")
    p.add_argument("--backbone", default=backbone, metavar="NAME", help="an in-project backbone (vit-tiny, gpt2-tiny)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder to write NAME.safetensors and NAME.json into")
    p.add_argument("--force", action="store_true", help="pre-train again even if the cache has these weights")
    entry = get_backbone(backbone)
    _add_options(p.add_argument_group(f"{entry.name} options"), describe(entry.Options), "backbone", "backbone-",
                 {"--backbone", "--out", "--force", "--help"})
    return p


def cmd_pretrain(args, rest: list[str]) -> int:
    from cldash.backbones import BACKBONES, get_backbone
    from cldash.backbones import weights as W
    from cldash.core.options import build

    pre = _Parser(prog="cldash pretrain", add_help=False, allow_abbrev=False)
    pre.add_argument("--backbone", default="vit-tiny")
    known, _ = pre.parse_known_args(rest)
    entry = get_backbone(known.backbone)
    if entry.pretrain is None:
        own = ", ".join(n for n, e in BACKBONES.items() if e.pretrain is not None)
        raise UserError(f"{entry.name} is not one of cldash's own backbones, which are pre-trained in-project; "
                        f"choose one of: {own}.")
    parser = _pretrain_parser(entry.name)
    parser.help_command = _help_command("cldash pretrain", known)
    if any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        return 0
    ns = parser.parse_args(rest)
    given = {d.split(":", 1)[1]: v for d, v in vars(ns).items() if d.startswith("backbone:") and v is not None}
    options = build(entry.Options, given, prefix=entry.name)
    if ns.out:
        out = Path(ns.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder to write {entry.name}.safetensors into.")
        path = out / f"{entry.name}.safetensors"
        state_dict, record = entry.pretrain(options)
        try:
            record = W.write_weights(path, state_dict, record)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}.") from None
    else:
        path = W.cache_path(entry.name, options, entry.recipe)
        if ns.force:
            W.remove(path)
        record = W.cached(entry.name, path, lambda: entry.pretrain(options)).record
    scores = ", ".join(f"{k} {v:.4f}" for k, v in record["scores"].items())
    print(f"{entry.name}: {scores} ({record['seconds']:.1f} s of pre-training, recipe {record['recipe']})")
    print(f"  weights  {path} (sha256 {record['sha256'][:16]}...)")
    ship = W.shipped(entry.name, options, entry.recipe)
    if ship is not None:
        same = ship.record["sha256"] == record["sha256"]
        print(f"  shipped  {'bit-identical to' if same else 'differs from'} the shipped weights {ship.path}"
              + ("" if same else f" (made with {json.dumps(ship.record.get('versions', {}))})"))
    else:
        print("  shipped  none for these options: runs with them use the locally pre-trained weights")
    return 0


def _report(store, run_id: int, status: str) -> int:
    from cldash.core.text import printable

    run = store.get_run(run_id)
    if status == "finished":
        print(f"\nrun {run_id} finished. Accuracy matrix R[i][j] ({run['primary_metric']}):")
        print(format_matrix(store.accuracy_matrix(run_id)))
        print("\nmetrics:")
        print(format_metrics(run["summary"]))
        return 0
    print(_end_line(store, run, status), file=sys.stderr)
    return 1


def _end_line(store, run: dict, status: str) -> str:
    """'run 3 failed: REASON', from the store, or from the run's end file where the store could not take it."""
    from cldash.runs.processes import end_path, recorded_end
    from cldash.store import ACTIVE

    error, kept = run["error"], ""
    end = recorded_end(store, run) if run["status"] in ACTIVE else None
    if end:   # a full disk, a read-only store: the reason is in the end file until reconcile records it
        error = end.get("error")
        kept = f" (the store could not record this; it is kept in {end_path(store, run['id'])}, and any cldash " \
               "command records it once the store can be written)"
    from cldash.core.text import printable

    return f"run {run['id']} {status}: {printable(error.splitlines()[0]) if error else ''}{kept}"


class LogLines:
    """A background run's progress in its log: a line at every tenth of its steps."""

    def __init__(self):
        self.tenth = 0

    def __call__(self, p) -> None:
        tenth = 10 * p.step // max(1, p.total_steps)
        if tenth != self.tenth:
            print(f"step {p.step}/{p.total_steps} · task {p.task}/{p.num_tasks} ({p.task_name}) · loss {p.loss:.4f}",
                  flush=True)
        self.tenth = tenth


def cmd_execute(args) -> int:
    from cldash.runs.execute import execute
    from cldash.store import Store

    from cldash.runs.queue import schedule

    store = Store(args.db)
    run = store.get_run(args.run)
    if run["status"] == "queued":   # else execute says in one sentence why it cannot run
        print(f"run {args.run} ({run['name'] or run['method']}) on host {socket.gethostname()}, pid {os.getpid()}, "
              f"store {store.display}", flush=True)
    try:
        status = execute(store, args.run, progress=LogLines())
        if status != "finished":   # the reason, in one line, also in the run's log
            print(_end_line(store, store.get_run(args.run), status), file=sys.stderr)
    finally:
        schedule(store)   # hand this run's slot to the next queued run, with or without a dashboard
    return 0 if status == "finished" else 1


def _store_reconciled(db):
    """The store, reconciled with the processes, with the queued runs the limit allows started: a queue
    moves on after a killed run whenever any command reads the store, dashboard or not."""
    from cldash.store import Store

    store = Store(db)
    _start_queued(store)
    return store


def _start_queued(store) -> None:
    from cldash.runs.queue import schedule

    try:
        schedule(store)
    except UserError as exc:   # a run that cannot be started (its log cannot be written) does not stop a listing
        print(f"cldash: {exc}", file=sys.stderr)


def cmd_list(args) -> int:
    from cldash.measures.metrics import fmt
    from cldash.core.text import printable

    store = _store_reconciled(args.db)
    runs = store.runs(status=[args.status] if args.status else None, method=args.method, stream=args.stream)
    if not runs:
        print(f"no runs in {store.display}" + (" matching the filters" if args.status or args.method else ""))
        return 0
    header = f"{'id':>4}  {'status':<11} {'progress':>8}  {'method':<10} {'stream':<16} {'seed':>4}  " \
             f"{'acc':>6} {'bwt':>7} {'forget':>6} {'general':>7}  name"
    print(header)
    for r in runs:
        s = r["summary"] or {}
        # what users typed is printed escaped: a store written by an older cldash may hold control characters
        print(f"{r['id']:>4}  {r['status']:<11} {100 * (r['progress'] or 0):7.1f}%  {printable(r['method']):<10} "
              f"{printable(r['stream']):<16} {r['seed']:>4}  {fmt(s.get('acc', math.nan)):>6} "
              f"{fmt(s.get('bwt', math.nan)):>7} {fmt(s.get('forgetting', math.nan)):>6} "
              f"{fmt(s.get('general_retention', math.nan)):>7}  {printable(r['name'])}")
    return 0


def cmd_show(args) -> int:
    from cldash.config import aids_label
    from cldash.store import count_rows
    from cldash.dashboard.tables import weights_label
    from cldash.core.text import printable

    store = _store_reconciled(args.db)
    run = store.get_run(args.run)
    cfg = run["config"]
    print(f"run {run['id']}: {printable(run['name'])}")
    print(f"  status    {run['status']} ({100 * (run['progress'] or 0):.1f}%, step {run['step']}/{run['total_steps']})")
    if run["error"]:
        print(f"  reason    {printable(run['error'].splitlines()[0])}")
    print(f"  method    {printable(cfg['method'])} {json.dumps(cfg['method_options'])}" +
          (f" policy={printable(cfg['policy'])}" if cfg.get("policy") else ""))
    print(f"  stream    {printable(cfg['stream'])} {json.dumps(cfg['stream_options'])}")
    print(f"  backbone  {printable(cfg['backbone'])} {json.dumps(cfg['backbone_options'])}")
    print(f"  training  {cfg['steps_per_task']} steps/task, batch {cfg['batch_size']}, "
          f"{cfg.get('optimizer', 'adamw')} lr {cfg['lr']:g} {cfg.get('lr_schedule', 'constant')}, "
          f"seed {cfg['seed']}, device {run['device']}")
    regime = cfg.get("regime") or {}
    if regime.get("values"):
        print(f"  regime    {printable(cfg['preset'])}: {printable(regime['paper'])}"
              + (f" (code {printable(regime['code'])})" if regime.get("code") else ""))
        for key, value in regime["values"].items():
            print(f"            {key} = {printable(str(value))}  <- {printable(regime['sources'][key])}")
        if regime.get("overridden"):
            print(f"            yours instead of the preset's: {', '.join(regime['overridden'])}")
    else:
        print(f"  regime    {printable(cfg.get('preset') or 'common')}")
    if aids_label(cfg):
        print(f"  aids      {aids_label(cfg)}")
    print(f"  weights   {weights_label(run.get('weights'))}")
    print(f"  process   pid {run['pid']} on {run['host']}")
    from cldash.engine.checkpoints import available

    lineage = [f"fork of run {run['parent_id']} after task {run['fork_task']}"] if run.get("parent_id") else []
    if run.get("resumes"):
        lineage.append(f"resumed {run['resumes']} time{'s' * (run['resumes'] != 1)}")
    kept = available(store, run["id"])
    lineage.append(f"checkpoints after task {', '.join(map(str, kept))}" if kept else "no checkpoint kept")
    print(f"  lineage   {'; '.join(lineage)}")
    print(f"  stored    " + ", ".join(f"{v} {k}" for k, v in count_rows(store, run["id"]).items()))
    m = store.accuracy_matrix(run["id"])
    if m["rows"]:
        print(f"\naccuracy matrix R[i][j] ({m['metric']}):")
        print(format_matrix(m))
    print("\nmetrics:")
    print(format_metrics(run["summary"]))
    return 0


EXPORTS = ("matrix", "evaluations", "scalars", "spectra", "config")


def export_tables(store, run_id: int, what: list[str]) -> dict:
    """The run's tables as pandas DataFrames (or a dict for the config)."""
    from cldash.dashboard.tables import matrix_table

    out = {}
    for name in what:
        if name == "matrix":
            out[name] = matrix_table(store.accuracy_matrix(run_id))
        elif name == "evaluations":
            out[name] = store.evaluations(run_id)
        elif name == "scalars":
            out[name] = store.scalars(run_id)
        elif name == "spectra":
            df = store.spectra(run_id)
            if len(df):
                df["values"] = [" ".join(f"{v:.6g}" for v in vals) for vals in df["values"]]
            out[name] = df
        elif name == "config":
            out[name] = store.get_run(run_id)
    return out


def cmd_export(args) -> int:
    store = _store_reconciled(args.db)
    store.get_run(args.run)
    if args.format == "peft":
        return export_peft(store, args)
    what = list(EXPORTS) if args.what == "all" else [w.strip() for w in args.what.split(",")]
    bad = [w for w in what if w not in EXPORTS]
    if bad:
        raise UserError(f"cannot export {bad[0]!r}; choose from {', '.join(EXPORTS)} or all.")
    if args.out == "-" and len(what) != 1:
        raise UserError("exporting to standard output takes one table; name it with --what (e.g. --what matrix).")
    tables = export_tables(store, args.run, what)
    if args.out != "-":
        out_dir = Path(args.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out {out_dir} is a file; give a folder to write the tables into.")
        with _writing(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if name == "config":
            text = json.dumps(table, indent=2, default=str)
            suffix = "json"
        elif args.format == "csv":
            text, suffix = table.to_csv(index=False), "csv"
        else:
            text, suffix = table.to_json(orient="records", indent=1), "json"
        if args.out == "-":
            sys.stdout.write(text)
        else:
            path = Path(args.out) / f"run-{args.run}-{name}.{suffix}"
            with _writing(path):
                path.write_text(text)
            print(path)
    return 0


@contextlib.contextmanager
def _writing(path: Path):
    """An export that cannot be written (no such place, no permission, a full or read-only disk) is one sentence."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or path} ({exc.strerror or exc}); give --out a folder that "
                        "you can write to.") from None


def export_peft(store, args) -> int:
    """The run's final adapters as a PEFT LoRA adapter folder (adapter_model.safetensors + adapter_config.json)."""
    from cldash.engine.adapters import load_adapted_model
    from cldash.methods.peft_format import save_peft

    if args.out == "-":
        raise UserError("a PEFT adapter is a folder of files; give one with --out (e.g. --out adapter/).")
    resolved, _, _, method = load_adapted_model(store, args.run)
    folder = Path(args.out) / f"run-{args.run}-peft" if args.out == "." else Path(args.out)
    with _writing(folder):
        save_peft(method, folder, base_model=f"cldash {resolved.config.backbone} "
                  f"{json.dumps(resolved.config.backbone_options)}")
    print(folder)
    return 0


def cmd_cancel(args) -> int:
    from cldash.runs.launch import cancel

    store = _store_reconciled(args.db)
    print(f"run {args.run}: {cancel(store, args.run)}")
    _start_queued(store)   # its slot goes to the next queued run
    return 0


def _grid_values(text: str) -> list:
    """A grid's values: ``4,8,16``, or a JSON list for values that hold commas (``[[45,90],[90,180]]``)."""
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"the grid values {text!r} are not a JSON list ({exc.msg}).") from None
        if not isinstance(values, list) or not values:
            raise UserError(f"the grid values {text!r} must be a non-empty JSON list.")
        return values
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise UserError(f"give the grid's values separated by commas, e.g. rank=4,8,16 (got {text!r}).")
    return values


def cmd_sweep(args) -> int:
    from cldash.runs.launchers import Resources, parse
    from cldash.runs.sweeps import Sweep, launch_sweep, parse_list, parse_seeds, plan, split_option

    grid, fixed = {}, {}
    for text in args.grid or []:
        name, values = split_option(text)
        if name in grid:
            raise UserError(f"--grid {name} is given twice; give its values once, separated by commas.")
        grid[name] = _grid_values(values)
    for text in args.set or []:
        name, value = split_option(text)
        fixed[name] = value
    sweep = Sweep(methods=parse_list(args.methods, "method"), seeds=parse_seeds(args.seeds),
                  presets=parse_list(args.presets, "preset"), grid=grid, fixed=fixed, stream=args.stream,
                  backbone=args.backbone, name=args.name or "")
    from cldash.store import sqlite_path, to_url

    launcher = parse(args.launcher)
    Resources(cpus=args.cpus_per_run, gpus=args.gpus_per_run or 0.0).check()
    p = plan(None, sweep)   # every value checked before the store is opened (or created)
    url = to_url(args.db)
    if args.dry_run:
        if not (sqlite_path(url) and not sqlite_path(url).exists()):   # a dry run creates no store
            p.existing = _store_reconciled(args.db).run_ids_for_launch_keys(p.keys)
        print(p.summary())
        return 0
    launcher.check_store(url)
    gpus = args.gpus_per_run if args.gpus_per_run is not None else \
        launcher.default_gpus(sorted({c["backbone"] for c in p.configs}))
    resources = Resources(cpus=args.cpus_per_run, gpus=gpus).check()
    store = _store_reconciled(args.db)
    p.existing = store.run_ids_for_launch_keys(p.keys)
    print(p.summary())
    p, ids = launch_sweep(store, p, launcher=launcher, resources=resources)
    where = "this machine" if launcher.name == "local" else f"the Ray cluster at {launcher.address}"
    if ids:
        print(f"queued {len(ids)} run{'s' * (len(ids) != 1)} (ids {_id_ranges(ids)}) on {where}, "
              f"{resources.cpus:g} CPU{'s' * (resources.cpus != 1)}"
              + (f" and {resources.gpus:g} GPU" if resources.gpus else "") + " each; group "
              f"{p.sweep.group} (the Runs and Compare pages filter by it)")
    else:
        print(f"nothing to queue: every run of sweep {p.sweep.key()} is in the store already")
    if args.wait:
        return _wait_for(store, [*p.existing.values(), *ids])
    return 0


def _until_ended(store, ids: list[int], show, poll: float = 1.0) -> list[dict]:
    """Read these runs every `poll` seconds (reconciling every 5 s, so a killed run ends too), hand them to
    `show` each time, and return them once all have ended."""
    from cldash.runs.queue import reconcile
    from cldash.store import ENDED

    last = 0.0
    while True:
        if time.monotonic() - last > 5:
            reconcile(store)
            last = time.monotonic()
        runs = store.runs(ids=ids)
        show(runs)
        if all(r["status"] in ENDED for r in runs):
            return runs
        time.sleep(poll)


def _why(run: dict) -> str:
    """': the first line of its error' for a run that did not finish, else ''."""
    from cldash.core.text import printable

    return f": {printable(run['error'].splitlines()[0])}" if run["error"] and run["status"] != "finished" else ""


def _wait_for(store, ids: list[int], poll: float = 1.0) -> int:
    """Wait until these runs have all ended, printing a line as each ends; 0 if all finished, else 1."""
    from cldash.store import ENDED

    told: list[int] = []

    def ends(runs):
        for r in runs:
            if r["status"] in ENDED and r["id"] not in told:
                told.append(r["id"])
                print(f"run {r['id']} {r['status']}{_why(r)} ({len(told)}/{len(ids)})", flush=True)

    runs = _until_ended(store, ids, ends, poll)
    return 0 if all(r["status"] == "finished" for r in runs) else 1


def cmd_logs(args) -> int:
    from cldash.runs.launchers import logs

    store = _store_reconciled(args.db)
    text = logs(store, store.get_run(args.run), tail=args.tail)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_resume(args) -> int:
    from cldash.runs.lineage import resume

    store = _store_reconciled(args.db)
    run = store.get_run(args.run)
    task = resume(store, args.run)
    steps = run["config"]["steps_per_task"]
    print(f"run {args.run}: continues after task {task} of {run['num_tasks'] or '?'}" + (
        f" from its checkpoint (step {task * steps}); what it wrote after that step was removed" if task else
        ": it has no checkpoint, so it starts again from the first task"))
    return _wait_for(store, [args.run]) if args.wait else 0


def cmd_fork(args, rest: list[str]) -> int:
    from cldash.runs.lineage import fork
    from cldash.core.options import flag_worded
    from cldash.store import Store

    pre = _Parser(prog="cldash fork", add_help=False, allow_abbrev=False)
    pre.add_argument("run", type=_run_id, nargs="?")
    pre.add_argument("--after-task", type=int)
    pre.add_argument("--method")
    pre.add_argument("--wait", action="store_true")
    known, options = pre.parse_known_args(rest)
    wants_help = any(a in ("-h", "--help") for a in rest)
    if known.run is None and not wants_help:
        raise UserError("name the run to fork: cldash fork RUN --after-task K [options to change].")
    store = Store(args.db) if known.run is not None else None
    parent = store.get_run(known.run) if store else {"method": known.method or "lora", "stream": "digits-rotate",
                                                      "backbone": "", "config": {}}
    method = known.method or parent["method"]
    parser = _run_parser(method, parent["stream"], parent["backbone"])
    parser.prog = "cldash fork RUN --after-task K"
    parser.description = ("Start a new run from RUN's checkpoint after task K, with the options given here "
                          "changed (every other value is RUN's). Another method starts on RUN's merged weights.")
    if wants_help:
        parser.print_help()
        return 0
    if known.after_task is None:
        raise UserError(f"say after which task to fork: cldash fork {known.run} --after-task K.")
    ns = parser.parse_args(options)
    changes: dict = {**({"method": method} if known.method else {}), **_given(ns)}
    if ns.stream != parent["stream"]:
        changes["stream"] = ns.stream
    try:
        new = fork(store, known.run, known.after_task, changes)
    except ConfigError as exc:   # named as this command line names the options: --rank, --lr
        owners = {"run": "", "method": method, "stream": ns.stream,
                  "backbone": parent["backbone"] or _default_backbone(ns.stream)}
        raise ConfigError(flag_worded(str(exc), parser, owners), exc.field) from None
    child = store.get_run(new)
    changed = ", ".join(f"{k}={v}" for k, v in changes.items()) or "nothing changed"
    print(f"run {new}: fork of run {known.run} after task {known.after_task} ({changed})" + (
        f"; {child['method']} starts on run {known.run}'s merged weights" if child["method"] != parent["method"]
        else ""))
    return _wait_for(store, [new]) if known.wait else 0


def cmd_report(args) -> int:
    """One self-contained HTML handout of these runs (or a group's), opened offline: cldash.dashboard.report."""
    from cldash.dashboard.report import handout_file_name, parse_run_ids, size_text, write_handout

    store = _store_reconciled(args.db)
    group = store.group_run_ids(args.group) if args.group else []
    if args.group and not group:
        groups = ", ".join(key for key, _ in store.run_groups()) or "none in this store"
        raise UserError(f"there is no group {args.group!r} in {store.display}; the groups are: {groups}.")
    ids = parse_run_ids(args.runs) + group
    if not ids:
        raise UserError("name the runs to put in the handout, e.g. cldash report 3-6 --out handout.html "
                        "(or --group KEY); `cldash list` shows the runs.")
    out = Path(args.out or handout_file_name(ids))
    size = write_handout(store, ids, out, title=args.title)
    print(f"{out} ({size_text(size)}, {len(set(ids))} run{'s' * (len(set(ids)) != 1)})")
    return 0


def cmd_delete(args) -> int:
    store = _store_reconciled(args.db)
    run = store.get_run(args.run)
    if run["status"] in ("queued", "running"):
        raise UserError(f"run {args.run} is {run['status']}; cancel it before deleting it.")
    if not args.yes:
        raise UserError(f"deleting run {args.run} removes all its rows; repeat with --yes to confirm.")
    store.delete_run(args.run)
    print(f"run {args.run} deleted")
    return 0


def cmd_methods(args) -> int:
    from cldash.methods import REGISTRY, marked_label
    from cldash.core.options import describe

    for name, cls in sorted(REGISTRY.items()):
        print(f"{name:<10} {marked_label(cls)} — {cls.paper}")
        if cls.policies:
            print(f"{'':<10}   policies: {', '.join(cls.policies)} (default {cls.policies[0]}); "
                  f"default lr {cls.default_lr:g}")
            for policy, note in cls.policy_notes.items():
                print(f"{'':<10}     {policy}: {note}")
        for row in describe(cls.Config):
            print(f"{'':<10}   --{row['name'].replace('_', '-')} {row['default']!s:<10} {row['help']}")
    return 0


def cmd_presets(args) -> int:
    """Each method's two regimes side by side: the common value, the authors', and where it comes from."""
    from cldash.methods import get_method, paper_presets
    from cldash.config.presets import AIDS, regime_table

    PAPER = paper_presets()
    names = [args.method] if args.method else sorted(PAPER) + sorted(AIDS)
    for name in names:
        if name not in AIDS:
            get_method(name)   # an unknown name gets its one sentence
        if name not in PAPER and name not in AIDS:
            raise UserError(f"{name} has no paper preset; the methods with one are: {', '.join(sorted(PAPER))}.")
        if name in AIDS:
            preset = AIDS[name]
            print(f"{name}: --aid-preset {name}, from {preset.paper} (code: {preset.code})")
            for key, cited in preset.values.items():
                print(f"  {key:<22} {str(cited.value):>14}  {cited.source}")
            for note in preset.notes:
                print(f"  note: {note}")
            print()
            continue
        preset = PAPER[name]
        print(f"{name}: --preset paper, from {preset.paper}" + (f" (code: {preset.code})" if preset.code else ""))
        print(f"  {'option':<22} {'common':>14} {'paper':>14}  source")
        for row in regime_table(name):
            print(f"  {row['option']:<22} {row['common'][:14]:>14} {row['paper'][:14]:>14}  {row['source']}")
            if row["note"]:
                print(f"  {'':<22} {'':>14} {'':>14}  translated: {row['note']}")
        for note in preset.notes:
            print(f"  note: {note}")
        print()
    return 0


def cmd_claims(args) -> int:
    """The seed papers' claims with their verdicts from the store; --launch queues the runs they still need."""
    from cldash.analysis import claims as C
    from cldash.store import Store

    chosen = tuple(C.get_claim(k) for k in args.claim) if args.claim else C.CLAIMS   # before opening the store
    store = _store_reconciled(args.db)
    regimes = C.REGIMES if args.regime == "both" else (args.regime,)
    if args.launch:
        ids = C.launch_missing(store, chosen, regimes)
        print(f"queued {len(ids)} run(s)" + (f": {_id_ranges(ids)}" if ids else ": every run the claims need is "
                                             "finished, queued or running") + f" -> {store.display}")
        return 0
    runs = store.runs()
    for claim in chosen:
        print(f"{claim.key} ({claim.paper})\n  {claim.statement}")
        for regime in regimes:
            v = C.verdict(store, claim, regime, [r for r in runs if r["stream"] == claim.stream])
            todo = (f"; {v['missing']} run(s) to launch (cldash claims --launch --claim {claim.key} --regime {regime})"
                    if v["missing"] else "") + (f"; {v['pending']} queued or running" if v["pending"] else "")
            print(f"  {regime:<7} {v['verdict'].upper()}{todo}")
            for c in v["checks"]:
                mark = {"holds": "+", "does not hold": "-"}.get(c["verdict"], "?")
                print(f"    {mark} {c['check']}: {c['verdict']} ({c['why']})")
            for caveat in v["caveats"]:
                print(f"    ! {caveat}")
        print(f"  look at: {claim.look[0]} page, {claim.look[1]}\n")
    return 0


def cmd_lessons(args) -> int:
    """The classroom lessons; --launch NAME queues one (at --steps-per-task N) and --wait waits for its runs."""
    from cldash.analysis import lessons as L

    if not args.launch:
        for lesson in L.LESSONS:
            print(f"{lesson.key:<11} {lesson.title}\n{'':<11} {lesson.question}\n{'':<11} {L.summary(lesson)}: "
                  f"{'; '.join(lesson.runs)}\n")
        print("cldash lessons --launch NAME [--steps-per-task N] [--wait] queues one; the Lessons page shows its "
              "reading")
        return 0
    lesson = L.get_lesson(args.launch)   # before opening the store
    L.check_length(args.steps_per_task)
    store = _store_reconciled(args.db)
    ids = L.launch_lesson(store, lesson.key, args.steps_per_task)
    print(f"lesson {lesson.key}: runs {_id_ranges(ids)} ({'; '.join(lesson.runs)}) -> {store.display}; the "
          f"Lessons page (?lesson={lesson.key}) shows them and the reading")
    return _wait_for(store, ids) if args.wait else 0


def cmd_demo(args) -> int:
    """Queue the demo comparison (--full: every method, full length) and wait, a progress line per run."""
    import uuid

    from cldash.runs.demo import launch_demo

    store = _store_reconciled(args.db)
    ids = launch_demo(store, f"demo-{uuid.uuid4().hex[:8]}", full=args.full)
    print(f"{'full' if args.full else 'quick'} demo: runs {_id_ranges(ids)} -> {store.display}", flush=True)
    return _watch(store, ids, sys.stdout.isatty())


def _watch(store, ids: list[int], tty: bool, poll: float = 1.0) -> int:
    """Wait until these runs have ended, one progress line per run: on a terminal redrawn in place every `poll`
    seconds, otherwise a line whenever a run starts, moves to another task or ends. 0 if all finished, else 1."""
    from cldash.runs.demo import demo_line

    seen: dict[int, tuple] = {}
    drawn = [0]

    def lines(runs):
        if tty:
            print(("\x1b[F\x1b[K" * drawn[0]) + "\n".join(demo_line(r) for r in runs), flush=True)
            drawn[0] = len(runs)
            return
        for r in runs:
            state = (r["status"], r["task"] if r["status"] == "running" else None)
            if seen.get(r["id"]) != state:
                seen[r["id"]] = state
                print(demo_line(r), flush=True)

    runs = _until_ended(store, ids, lines, poll)
    for r in runs:
        if _why(r):   # why, in one line, as `cldash sweep --wait` says it
            print(f"run {r['id']} {r['status']}{_why(r)}")
    failed = ", ".join(f"#{r['id']} {r['status']}" for r in runs if r["status"] != "finished")
    done = sum(r["status"] == "finished" for r in runs)
    print(f"{done} of {len(runs)} runs finished" + (f"; {failed}" if failed else
          "; `cldash list` shows their metrics and the Compare page their matrices"))
    return 1 if failed else 0


def cmd_streams(args) -> int:
    from cldash.core.options import describe
    from cldash.streams import STREAMS

    for name, cls in sorted(STREAMS.items()):
        print(f"{name:<16} {cls.summary}")
        for row in describe(cls.Options):
            print(f"{'':<16}   --stream-{row['name'].replace('_', '-')} {row['default']!s:<12} {row['help']}")
    return 0


def cmd_reconcile(args) -> int:
    from cldash.runs.queue import reconcile, schedule
    from cldash.store import Store

    store = Store(args.db)
    changed = reconcile(store)
    print(f"{len(changed)} run(s) whose process is gone marked as ended"
          + (f": {', '.join(map(str, changed))}" if changed else ""))
    started = schedule(store)
    if started:
        print(f"started queued run(s): {', '.join(map(str, started))}")
    return 0


def cmd_queue(args) -> int:
    """The runs holding a slot and the runs waiting, in the order they start, and the limit; starts
    what the limit allows first (unless --no-start)."""
    from cldash.runs.launchers.local import queue
    from cldash.runs.processes import gpu_count, max_concurrent
    from cldash.runs.queue import reconcile, schedule
    from cldash.store import Store

    from cldash.runs.recovery import AUTO_RESUME_SETTING

    store = Store(args.db)
    if args.auto_resume:
        store.set_setting(AUTO_RESUME_SETTING, args.auto_resume)
    if args.no_start:
        reconcile(store)
    started = [] if args.no_start else schedule(store)
    active, waiting = queue(store)
    limit = max_concurrent(store)
    source = "set in the store" if store.get_setting("max_concurrent") else \
        f"the default: one per {'GPU' if gpu_count() else 'CPU core'}"
    print(f"{store.display}: {len(active)} active, {len(waiting)} waiting; at most {limit} run(s) at once ({source}); "
          f"automatic resume {store.get_setting(AUTO_RESUME_SETTING) or 'off'}")
    if active or waiting:
        print(f"{'position':>8}  {'id':>4}  {'status':<9} {'progress':>8}  {'pid':>7}  {'method':<10} name")
    for position, r in [("active", r) for r in active] + list(enumerate(waiting, start=1)):
        status = "starting" if position == "active" and r["status"] == "queued" else r["status"]
        print(f"{position:>8}  {r['id']:>4}  {status:<9} {100 * (r['progress'] or 0):7.1f}%  {r['pid'] or '-':>7}  "
              f"{r['method']:<10} {r['name']}" + ("  (cldash run)" if r["launcher"] == "cli" else ""))
    if started:
        print(f"started run(s) {', '.join(map(str, started))} in the free slot(s)")
    if store.refused and waiting:
        print(f"cldash: {store.refused}; no queued run can start.", file=sys.stderr)
    return 0


def cmd_db(args) -> int:
    """`db current`: the store's schema revision against this cldash's; `db upgrade`: apply what is pending."""
    from cldash import __version__
    from cldash.store import migrations
    from cldash.store import Store

    store = Store(args.db, migrate=False)
    if args.action == "upgrade":
        print(migrations.upgrade(store) or f"the run store {store.display} is at revision {migrations.HEAD}, "
              f"the head of this cldash {__version__}; nothing to upgrade.")
        return 0
    at = migrations.current(store)
    if not at["known"]:
        pending = "none: the store is newer than this cldash; upgrade cldash (pip install -U cldash) to open it"
    elif at["pending"]:
        pending = ", ".join(at["pending"]) + ": `cldash db upgrade` (or any command) applies " + \
            ("them" if len(at["pending"]) > 1 else "it") + (f", after copying the file to {at['backup']}"
                                                             if at["backup"] else "")
    else:
        pending = "none"
    print(f"store     {at['store']}")
    print(f"revision  {at['revision'] or 'none (an empty database)'}")
    print(f"head      {at['head']} (this cldash {__version__})")
    print(f"cldash    {at['cldash'] + ' last created or upgraded it' if at['cldash'] else 'not recorded'}")
    print(f"pending   {pending}")
    return 0


def _run_id(text: str) -> int:
    """A run id as argparse's type: anything but a whole number is one sentence."""
    try:
        return int(text)
    except ValueError:
        raise UserError(f"a run id is a whole number (got {text!r}); cldash list shows the stored runs.") from None


RUN_ID = {"type": _run_id, "metavar": "RUN_ID", "help": "the run's id (cldash list shows them)"}


def build_parser() -> argparse.ArgumentParser:
    # Global options are exact (no abbreviations), as they are wherever they stand in argv.
    p = _Parser(prog="cldash", description="Continual low-rank adaptation, side by side.", allow_abbrev=False)
    for flag, kwargs in GLOBAL_OPTIONS.items():
        p.add_argument(flag, **kwargs)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("run", help="train and store one run (cldash run --method lora --help for its options)",
                   add_help=False)
    e = sub.add_parser("execute", help="execute a queued run (what the dashboard's launcher calls)")
    e.add_argument("run", **RUN_ID)
    ls = sub.add_parser("list", help="list the stored runs")
    ls.add_argument("--status", help="only runs in this state (queued, running, finished, failed, cancelled, "
                    "interrupted)")
    ls.add_argument("--method", metavar="NAME", help="only runs of this method")
    ls.add_argument("--stream", metavar="NAME", help="only runs on this stream")
    for name, text in (("show", "one run: config, status, accuracy matrix, metrics"),
                       ("cancel", "stop a running run"), ("delete", "remove a run and all its rows")):
        c = sub.add_parser(name, help=text)
        c.add_argument("run", **RUN_ID)
        if name == "delete":
            c.add_argument("--yes", action="store_true", help="confirm the deletion")
    rp = sub.add_parser("report", help="one self-contained HTML handout of a comparison, that opens offline")
    rp.add_argument("runs", nargs="*", metavar="RUN", help="run ids or ranges: 3 5 or 3-6 or 3,5,9")
    rp.add_argument("--group", metavar="KEY", help="every run of a group (a sweep:NAME, a demo's or a lesson's key)")
    rp.add_argument("--out", metavar="FILE.html", help="where to write it (default: cldash-handout-runs-....html)")
    rp.add_argument("--title", metavar="TEXT", help="the handout's title (default: the runs' ids)")
    x = sub.add_parser("export", help="write a run's tables as CSV or JSON, or its adapters in PEFT's format")
    x.add_argument("run", **RUN_ID)
    x.add_argument("--format", choices=("csv", "json", "peft"), default="csv",
                   help="csv or json: the run's tables; peft: its final adapters as a PEFT LoRA adapter folder")
    x.add_argument("--what", default="all", metavar="LIST", help=f"comma-separated: {', '.join(EXPORTS)}, or all")
    x.add_argument("--out", default=".", metavar="DIR", help="folder to write into, or - for standard output")
    sub.add_parser("methods", help="list the registered methods and their options")
    sub.add_parser("streams", help="list the task streams and their options")
    cl = sub.add_parser("claims", help="the seed papers' claims, with verdicts computed from the stored runs; "
                        "--launch queues the runs they still need")
    cl.add_argument("--regime", choices=("common", "paper", "both"), default="both",
                    help="common: every method on the shared defaults; paper: each claim in its paper's regime")
    cl.add_argument("--claim", action="append", metavar="KEY", help="only this claim (repeatable)")
    cl.add_argument("--launch", action="store_true", help="queue the missing runs (3 seeds each) and start them")
    ln = sub.add_parser("lessons", help="the classroom lessons (a question, runs that take about a minute, what to "
                        "look at); --launch NAME queues one")
    ln.add_argument("--launch", metavar="NAME", help="queue this lesson's runs (a finished one is reused)")
    ln.add_argument("--steps-per-task", type=int, metavar="N", help="train N steps a task instead of the lesson's own")
    ln.add_argument("--wait", action="store_true", help="wait until its runs have ended, a line each")
    dm = sub.add_parser("demo", help="launch the quick demo (4 methods, under 90 s on 2 CPU cores) and wait for it, a "
                        "progress line per run; --full: every method at full length")
    dm.add_argument("--full", action="store_true", help="the full comparison: every method, 5 tasks of 300 steps")
    pr = sub.add_parser("presets", help="each method's paper preset next to the common regime, with the source of "
                        "every value (cldash run --preset paper)")
    pr.add_argument("--method", metavar="NAME", help="only this method")
    sub.add_parser("reconcile", help="mark runs whose process is gone as ended (and start queued runs)")
    q = sub.add_parser("queue", help="the runs running and waiting, in order, and the concurrency limit; starts "
                       "the queued runs the limit allows")
    q.add_argument("--no-start", action="store_true", help="only show the queue; start nothing")
    q.add_argument("--auto-resume", choices=("on", "off"), help="on: the scheduler resumes interrupted runs from "
                   "their checkpoints by itself (a reboot or a lost node costs at most one task; at most 3 times a "
                   "run); the store keeps the setting")
    sub.add_parser("order", help="measure gradient conflict between a stream's tasks and store the adversarial order "
                   "(cldash order --stream skills --help)", add_help=False)
    sub.add_parser("pretrain", help="pre-train one of cldash's own backbones and print its scores "
                   "(cldash pretrain --backbone gpt2-tiny --help)", add_help=False)
    rs = sub.add_parser("resume", help="continue an interrupted, failed or cancelled run from its last task-end "
                        "checkpoint (its rows after that task are replaced)")
    rs.add_argument("run", **RUN_ID)
    rs.add_argument("--wait", action="store_true", help="wait until the run has ended")
    sub.add_parser("fork", help="start a new run from a run's checkpoint after task K with changed options "
                   "(cldash fork RUN --after-task K --replay 200; --help for the options)", add_help=False)
    sw = sub.add_parser("sweep", help="queue the cross product of methods x presets x seeds x option lists as one "
                        "group, locally or on a Ray cluster; repeating a sweep queues only what is not stored yet")
    sw.add_argument("--methods", required=True, metavar="LIST", help="comma-separated methods (cldash methods)")
    sw.add_argument("--seeds", default="0", metavar="SEEDS", help="seeds: 0-4, 0,1,2 or 0-2,7 (default 0)")
    sw.add_argument("--presets", default="common", metavar="LIST",
                    help="comma-separated regimes: common, paper, paper:METHOD (default common); a method without "
                    "a paper preset is skipped under paper")
    sw.add_argument("--grid", action="append", metavar="NAME=V1,V2", help="an option and its values, crossed with "
                    "the rest (repeatable): a run option (lr, steps_per_task...), else the method's (rank...), else "
                    "the stream's; a JSON list for values with commas")
    sw.add_argument("--set", action="append", metavar="NAME=VALUE", help="an option with one value for every run "
                    "(repeatable), e.g. --set steps_per_task=100")
    sw.add_argument("--stream", default="digits-rotate", metavar="NAME", help="task stream (default digits-rotate)")
    sw.add_argument("--backbone", default="", metavar="NAME", help="backbone; default: the stream's")
    sw.add_argument("--name", metavar="NAME", help="the sweep's name (its group is sweep:NAME); default: a hash of "
                    "what it sweeps, so the same command is the same sweep")
    sw.add_argument("--launcher", default=os.environ.get("CLDASH_LAUNCHER", "local"), metavar="WHERE",
                    help="local (default; env CLDASH_LAUNCHER), or a Ray cluster: ray://HEAD:10001 or "
                    "http://HEAD:8265 (needs a PostgreSQL store on a cluster of several nodes)")
    sw.add_argument("--cpus-per-run", type=float, default=1.0, metavar="N", help="CPUs each run asks for (default 1)")
    sw.add_argument("--gpus-per-run", type=float, default=None, metavar="F",
                    help="GPUs each run asks for on a Ray cluster (0.125 lets eight runs share one GPU); default: "
                    "none on a cluster without GPUs, else 0.125 for cldash's tiny backbones and 1 for an hf: model")
    sw.add_argument("--dry-run", action="store_true", help="only print how many runs the sweep has and would queue")
    sw.add_argument("--wait", action="store_true", help="wait until every run of the sweep has ended, a line each; "
                    "exit 1 if any did not finish")
    lg = sub.add_parser("logs", help="a run's output, from wherever it ran (this machine or a Ray cluster)")
    lg.add_argument("run", **RUN_ID)
    lg.add_argument("--tail", type=int, default=200, metavar="N", help="the last N lines (default 200)")
    d = sub.add_parser("db", help="the store's schema: `db current` shows its revision, `db upgrade` applies "
                       "pending upgrades (any command applies them on opening the store)")
    d.add_argument("action", choices=("current", "upgrade"),
                   help="current: the store's revision against this cldash's; upgrade: apply the pending ones")
    return p


STAGED = {"run": cmd_run, "order": cmd_order, "pretrain": cmd_pretrain, "fork": cmd_fork}   # their flags depend on their values
COMMANDS = {"execute": cmd_execute, "list": cmd_list, "show": cmd_show, "export": cmd_export,
            "cancel": cmd_cancel, "delete": cmd_delete, "methods": cmd_methods, "streams": cmd_streams,
            "presets": cmd_presets, "claims": cmd_claims, "lessons": cmd_lessons, "demo": cmd_demo,
            "queue": cmd_queue, "reconcile": cmd_reconcile, "db": cmd_db, "sweep": cmd_sweep, "logs": cmd_logs,
            "resume": cmd_resume, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        front, rest = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
        first = rest[0] if rest else ""
        if first.startswith("-") and first not in ("-h", "--help"):
            raise UserError(parser.unrecognized(rest))
        if first and not first.startswith("-") and first not in parser.commands.choices:
            raise UserError(parser.unknown("command", first, list(parser.commands.choices)))
        if first in STAGED:
            args = parser.parse_args(front + [first])
            return STAGED[first](args, rest[1:])
        args = parser.parse_args(front + rest)
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:   # --help printed what was asked for
        return exc.code
    except BrokenPipeError:
        return 0
