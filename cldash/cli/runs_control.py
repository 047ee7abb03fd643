"""The commands that act on one stored run: `cldash cancel`, `delete`, `resume` (from its last task-end
checkpoint), `fork` (a new run from one of its checkpoints, with changed options) and `logs` (its output,
from wherever it ran)."""

from __future__ import annotations

import sys

from cldash.cli.arguments import Parser, add_run_id, as_flags, given, run_id, run_parser
from cldash.cli.waiting import start_queued, store_reconciled, wait_for
from cldash.core.errors import ConfigError, UserError
from cldash.runs.launch import cancel
from cldash.runs.launchers import logs
from cldash.runs.lineage import fork, resume
from cldash.store import Store


def cmd_cancel(args) -> int:
    store = store_reconciled(args.db)
    print(f"run {args.run}: {cancel(store, args.run)}")
    start_queued(store)   # its slot goes to the next queued run
    return 0


def add_delete_arguments(p) -> None:
    add_run_id(p)
    p.add_argument("--yes", action="store_true", help="confirm the deletion")


def cmd_delete(args) -> int:
    store = store_reconciled(args.db)
    run = store.get_run(args.run)
    if run["status"] in ("queued", "running"):
        raise UserError(f"run {args.run} is {run['status']}; cancel it before deleting it.")
    if not args.yes:
        raise UserError(f"deleting run {args.run} removes all its rows; repeat with --yes to confirm.")
    store.delete_run(args.run)
    print(f"run {args.run} deleted")
    return 0


def add_resume_arguments(p) -> None:
    add_run_id(p)
    p.add_argument("--wait", action="store_true", help="wait until the run has ended")


def cmd_resume(args) -> int:
    store = store_reconciled(args.db)
    run = store.get_run(args.run)
    task = resume(store, args.run)
    steps = run["config"]["steps_per_task"]
    print(f"run {args.run}: continues after task {task} of {run['num_tasks'] or '?'}" + (
        f" from its checkpoint (step {task * steps}); what it wrote after that step was removed" if task else
        ": it has no checkpoint, so it starts again from the first task"))
    return wait_for(store, [args.run]) if args.wait else 0


def cmd_fork(args, rest: list[str]) -> int:
    pre = Parser(prog="cldash fork", add_help=False, allow_abbrev=False)
    pre.add_argument("run", type=run_id, nargs="?")
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
    parser = run_parser(method, parent["stream"], parent["backbone"])
    parser.prog = "cldash fork RUN --after-task K"
    parser.description = ("Start a new run from RUN's checkpoint after task K, with the options given here "
                          "changed (every other value is RUN's). Another method starts on RUN's merged weights.")
    if wants_help:
        parser.print_help()
        return 0
    if known.after_task is None:
        raise UserError(f"say after which task to fork: cldash fork {known.run} --after-task K.")
    ns = parser.parse_args(options)
    changes: dict = {**({"method": method} if known.method else {}), **given(ns)}
    if ns.stream != parent["stream"]:
        changes["stream"] = ns.stream
    try:
        new = fork(store, known.run, known.after_task, changes)
    except ConfigError as exc:   # named as this command line names the options: --rank, --lr
        raise as_flags(exc, parser, method, ns.stream, parent["backbone"]) from None
    child = store.get_run(new)
    changed = ", ".join(f"{k}={v}" for k, v in changes.items()) or "nothing changed"
    print(f"run {new}: fork of run {known.run} after task {known.after_task} ({changed})" + (
        f"; {child['method']} starts on run {known.run}'s merged weights" if child["method"] != parent["method"]
        else ""))
    return wait_for(store, [new]) if known.wait else 0


def add_logs_arguments(p) -> None:
    add_run_id(p)
    p.add_argument("--tail", type=int, default=200, metavar="N", help="the last N lines (default 200)")


def cmd_logs(args) -> int:
    store = store_reconciled(args.db)
    text = logs(store, store.get_run(args.run), tail=args.tail)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
