"""`cldash run` (train and store one run, in this process, with a progress bar), `cldash execute` (the
run process that the launchers start for a queued run) and `cldash pretrain` (one of cldash's own
backbones, pre-trained in-project).

`run` and `pretrain` are staged: their flags depend on the method, stream and backbone chosen, so they
read those first and then build the parser that has the flags of that choice.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from cldash.cli.arguments import (
    Parser,
    add_options,
    as_flags,
    collect,
    help_command,
    run_parser,
)
from cldash.cli.results import format_matrix, format_metrics
from cldash.config import RunConfig, check_against_model, check_inputs, describe_run, resolve
from cldash.core.errors import ConfigError, UserError
from cldash.core.options import build, check_types, describe
from cldash.core.text import printable
from cldash.runs.processes import end_path, recorded_end
from cldash.runs.queue import schedule
from cldash.store import ACTIVE, Store


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


def _read_config_file(name: str) -> dict:
    """The run options of a JSON file, each known field of the right type (flags may still override them)."""
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


def cmd_run(args, rest: list[str]) -> int:
    from cldash.runs.execute import execute  # deferred: imports torch

    pre = Parser(prog="cldash run", add_help=False, allow_abbrev=False)
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
    parser = run_parser(method, stream, backbone)
    parser.help_command = help_command("cldash run", known)
    if wants_help:
        parser.print_help()
        return 0
    ns = parser.parse_args(rest)
    ns.method, ns.stream, ns.backbone = method, stream, backbone
    try:
        resolved = resolve(collect(ns, base))
        check_against_model(resolved)
        check_inputs(resolved)
    except ConfigError as exc:   # named as this command line names the options: --rank, --lr
        raise as_flags(exc, parser, method, stream, backbone) from None
    store = Store(args.db)
    config = resolved.to_dict()
    # owned by this process from its INSERT: the scheduler never starts it, reconcile ends it if we die first
    run_id = store.create_run(config, status="queued", name=config["name"] or describe_run(resolved.config),
                              launcher="cli", pid=os.getpid(), host=socket.gethostname())
    print(f"run {run_id}: {describe_run(resolved.config)} -> {store.display}", file=sys.stderr)
    status = execute(store, run_id, progress=None if ns.quiet else ProgressBar())
    return _report(store, run_id, status)


def _report(store, run_id: int, status: str) -> int:
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
    error, kept = run["error"], ""
    end = recorded_end(store, run) if run["status"] in ACTIVE else None
    if end:   # a full disk, a read-only store: the reason is in the end file until reconcile records it
        error = end.get("error")
        kept = f" (the store could not record this; it is kept in {end_path(store, run['id'])}, and any cldash " \
               "command records it once the store can be written)"
    return f"run {run['id']} {status}: {printable(error.splitlines()[0]) if error else ''}{kept}"


def cmd_execute(args) -> int:
    from cldash.runs.execute import execute  # deferred: imports torch

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


def _pretrain_parser(backbone: str) -> argparse.ArgumentParser:
    from cldash.backbones import get_backbone  # deferred: imports torch

    p = Parser(prog="cldash pretrain", allow_abbrev=False, description="Pre-train one of cldash's own backbones with "
                               "the project's recipe (on one CPU thread) and print its scores. With --out, write "
                               "NAME.safetensors and NAME.json there (how the shipped default weights are made); "
                               "without, into the local cache that runs with these options use.")
    p.add_argument("--backbone", default=backbone, metavar="NAME", help="an in-project backbone (vit-tiny, gpt2-tiny)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder to write NAME.safetensors and NAME.json into")
    p.add_argument("--force", action="store_true", help="pre-train again even if the cache has these weights")
    entry = get_backbone(backbone)
    add_options(p.add_argument_group(f"{entry.name} options"), describe(entry.Options), "backbone", "backbone-",
                {"--backbone", "--out", "--force", "--help"})
    return p


def cmd_pretrain(args, rest: list[str]) -> int:
    from cldash.backbones import (  # deferred: imports torch
        BACKBONES,
        get_backbone,
        weights as W,
    )

    pre = Parser(prog="cldash pretrain", add_help=False, allow_abbrev=False)
    pre.add_argument("--backbone", default="vit-tiny")
    known, _ = pre.parse_known_args(rest)
    entry = get_backbone(known.backbone)
    if entry.pretrain is None:
        own = ", ".join(n for n, e in BACKBONES.items() if e.pretrain is not None)
        raise UserError(f"{entry.name} is not one of cldash's own backbones, which are pre-trained in-project; "
                        f"choose one of: {own}.")
    parser = _pretrain_parser(entry.name)
    parser.help_command = help_command("cldash pretrain", known)
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
