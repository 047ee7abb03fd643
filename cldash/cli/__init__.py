"""The command line, `cldash COMMAND`: one module per command (or small family of commands), each with
its arguments beside its handler, collected in one table, COMMANDS, from which both `cldash --help`
and the list of commands at the end of this docstring are made.

Global options (`--db`, `--artifacts`) go before or after the command: `cldash --db x.db list` and
`cldash list --db x.db` are the same. Bad input gets one sentence on stderr and exit code 2
(an unknown flag names the closest one the command has), and nothing is written to the store
before the whole configuration (including ranks against layer sizes) has been checked.
A run that fails or is interrupted exits with 1 and keeps what it wrote. Every command that reads
runs reconciles the store with the processes and starts the queued runs the concurrency limit
allows, so the queue drains with no dashboard open (`cldash queue` shows it).
"""

from __future__ import annotations

import os
import sys
import textwrap

from cldash.cli.arguments import GLOBAL_OPTIONS, Command, Parser, hoist_global_options
from cldash.core.errors import UserError

# In the order `cldash --help` lists them. A staged command's flags depend on its values (a run's on its
# method): it takes no arguments here, and reads the rest of the command line itself.
COMMANDS = (
    Command("run", "train and store one run (cldash run --method lora --help for its options)",
            None, "run:cmd_run", staged=True),
    Command("execute", "execute a queued run (what the dashboard's launcher calls)", "arguments:add_run_id",
            "run:cmd_execute"),
    Command("list", "list the stored runs", "listing:add_list_arguments", "listing:cmd_list"),
    Command("show", "one run: config, status, accuracy matrix, metrics", "arguments:add_run_id", "listing:cmd_show"),
    Command("cancel", "stop a running run", "arguments:add_run_id", "runs_control:cmd_cancel"),
    Command("delete", "remove a run and all its rows", "runs_control:add_delete_arguments", "runs_control:cmd_delete"),
    Command("report", "one self-contained HTML handout of a comparison, that opens offline",
            "report:add_report_arguments", "report:cmd_report"),
    Command("export", "write a run's tables as CSV or JSON, its adapters in PEFT's format, or TensorBoard event files",
            "export:add_export_arguments", "export:cmd_export"),
    Command("methods", "list the registered methods and their options", None, "catalog:cmd_methods"),
    Command("streams", "list the task streams and their options", None, "catalog:cmd_streams"),
    Command("data", "the named image benchmarks: `data list` shows what is cached, `data fetch NAME` downloads and "
            "decodes one ahead of a run (and says how much disk it needs)", "data:add_data_arguments", "data:cmd_data"),
    Command("claims", "the seed papers' claims, with verdicts computed from the stored runs; --launch queues the "
            "runs they still need", "claims:add_claims_arguments", "claims:cmd_claims"),
    Command("tune", "the tuned regime's search: the best learning rate and method options on validation data, the "
            "same number of trials for every method (--claim KEY, or --method M --stream S)",
            "tune:add_tune_arguments", "tune:cmd_tune"),
    Command("lessons", "the classroom lessons (a question, runs that take about a minute, what to look at); "
            "--launch NAME queues one", "lessons:add_lessons_arguments", "lessons:cmd_lessons"),
    Command("demo", "launch the quick demo (4 methods, under 90 s on 2 CPU cores) and wait for it, a progress line "
            "per run; --full: every method at full length", "lessons:add_demo_arguments", "lessons:cmd_demo"),
    Command("presets", "each method's paper preset next to the common regime, with the source of every value "
            "(cldash run --preset paper)", "catalog:add_presets_arguments", "catalog:cmd_presets"),
    Command("reconcile", "mark runs whose process is gone as ended (and start queued runs)", None,
            "queue:cmd_reconcile"),
    Command("queue", "the runs running and waiting, in order, and the concurrency limit; starts the queued runs "
            "the limit allows", "queue:add_queue_arguments", "queue:cmd_queue"),
    Command("order", "measure gradient conflict between a stream's tasks and store the adversarial order "
            "(cldash order --stream skills --help)", None, "order:cmd_order", staged=True),
    Command("pretrain", "pre-train one of cldash's own backbones and print its scores "
            "(cldash pretrain --backbone gpt2-tiny --help)", None, "run:cmd_pretrain", staged=True),
    Command("resume", "continue an interrupted, failed or cancelled run from its last task-end checkpoint (its "
            "rows after that task are replaced)", "runs_control:add_resume_arguments", "runs_control:cmd_resume"),
    Command("fork", "start a new run from a run's checkpoint after task K with changed options "
            "(cldash fork RUN --after-task K --replay 200; --help for the options)", None, "runs_control:cmd_fork",
            staged=True),
    Command("sweep", "queue the cross product of methods x presets x seeds x option lists as one group, locally "
            "or on a Ray cluster; repeating a sweep queues only what is not stored yet",
            "sweep:add_sweep_arguments", "sweep:cmd_sweep"),
    Command("logs", "a run's output, from wherever it ran (this machine or a Ray cluster)",
            "runs_control:add_logs_arguments", "runs_control:cmd_logs"),
    Command("db", "the store's schema: `db current` shows its revision, `db upgrade` applies pending upgrades "
            "(any command applies them on opening the store)", "db:add_db_arguments", "db:cmd_db"),
)
BY_NAME = {command.name: command for command in COMMANDS}

# (python -OO strips docstrings: the list is then the whole of it)
__doc__ = (__doc__ or "") + "\nThe commands:\n\n" + "\n".join(
    textwrap.fill(c.help, 100, initial_indent=f"  {c.name:<11}", subsequent_indent=" " * 13) for c in COMMANDS) + "\n"


def build_parser(command: str | None = None) -> Parser:
    """The parser of every command's name and help, and of `command`'s arguments (all of them when None)."""
    # Global options are exact (no abbreviations), as they are wherever they stand in argv.
    p = Parser(prog="cldash", description="Continual low-rank adaptation, side by side.", allow_abbrev=False)
    for flag, kwargs in GLOBAL_OPTIONS.items():
        p.add_argument(flag, **kwargs)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for row in COMMANDS:
        c = sub.add_parser(row.name, help=row.help, add_help=not row.staged)
        if row.add_arguments is not None and command in (None, row.name):
            row.function(row.add_arguments)(c)
    return p


def _handle(handler, args, *rest) -> int:
    """Run a command's handler, with the artifact location `--artifacts` names for its new runs; it and
    $CLDASH_ARTIFACTS are checked first."""
    if args.artifacts is None and not os.environ.get("CLDASH_ARTIFACTS"):
        return handler(args, *rest)
    from cldash.store.artifacts import given  # deferred: cldash.store loads SQLAlchemy, which --help does without

    with given(args.artifacts):
        return handler(args, *rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        front, rest = hoist_global_options(argv)
        first = rest[0] if rest else ""
        parser = build_parser(first if first in BY_NAME else "")
        if first.startswith("-") and first not in ("-h", "--help"):
            raise UserError(parser.unrecognized(rest))
        if first and not first.startswith("-") and first not in parser.commands.choices:
            raise UserError(parser.unknown("command", first, list(parser.commands.choices)))
        if first in BY_NAME and BY_NAME[first].staged:
            args = parser.parse_args(front + [first])
            return _handle(BY_NAME[first].function(BY_NAME[first].handler), args, rest[1:])
        args = parser.parse_args(front + rest)
        return _handle(BY_NAME[args.command].function(BY_NAME[args.command].handler), args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:   # --help printed what was asked for
        return exc.code
    except BrokenPipeError:
        return 0
