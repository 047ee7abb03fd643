"""`cldash sweep`: the cross product of methods x presets x seeds x option lists queued as one group
(cldash.runs.sweeps), on this machine or a Ray cluster; repeating a sweep queues only what is not stored
yet. Every value is checked before the store is opened, and a dry run creates no store."""

from __future__ import annotations

import os

from cldash.cli.arguments import set_hint
from cldash.cli.waiting import store_reconciled, wait_for
from cldash.config.grid import parse_grid, split_option
from cldash.core.text import id_ranges
from cldash.runs.launchers import Resources, parse
from cldash.runs.sweeps import Sweep, launch_sweep, parse_list, parse_seeds, plan
from cldash.store import sqlite_path, to_url


def add_sweep_arguments(p) -> None:
    p.option_hint = set_hint   # --steps-per-task 100 is refused with the --set that gives it
    p.add_argument("--methods", required=True, metavar="LIST", help="comma-separated methods (cldash methods)")
    p.add_argument("--seeds", default="0", metavar="SEEDS", help="seeds: 0-4, 0,1,2 or 0-2,7 (default 0)")
    p.add_argument("--presets", default="common", metavar="LIST",
                   help="comma-separated regimes: common, paper, paper:METHOD (default common); a method without "
                   "a paper preset is skipped under paper")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2", help="an option and its values, crossed with "
                   "the rest (repeatable): a run option (lr, steps_per_task...), else the method's (rank...), else "
                   "the stream's; a JSON list for values with commas")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="an option with one value for every run "
                   "(repeatable), e.g. --set steps_per_task=100")
    p.add_argument("--stream", default="digits-rotate", metavar="NAME", help="task stream (default digits-rotate)")
    p.add_argument("--backbone", default="", metavar="NAME", help="backbone; default: the stream's")
    p.add_argument("--name", metavar="NAME", help="the sweep's name (its group is sweep:NAME); default: a hash of "
                   "what it sweeps, so the same command is the same sweep")
    p.add_argument("--launcher", default=os.environ.get("CLDASH_LAUNCHER", "local"), metavar="WHERE",
                   help="local (default; env CLDASH_LAUNCHER), or a Ray cluster: ray://HEAD:10001 or "
                   "http://HEAD:8265 (needs a PostgreSQL store on a cluster of several nodes)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, metavar="N", help="CPUs each run asks for (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="F",
                   help="GPUs each run asks for on a Ray cluster (0.125 lets eight runs share one GPU); default: "
                   "none on a cluster without GPUs, else 0.125 for cldash's tiny backbones and 1 for an hf: model")
    p.add_argument("--dry-run", action="store_true", help="only print how many runs the sweep has and would queue")
    p.add_argument("--wait", action="store_true", help="wait until every run of the sweep has ended, a line each; "
                   "exit 1 if any did not finish")


def _sweep_of(args) -> Sweep:
    """The sweep the command line describes (its names and values read, not yet checked against the options)."""
    grid = parse_grid(args.grid or [], twice="--grid {name} is given twice; give its values once, separated by "
                      "commas.")
    fixed = {}
    for text in args.set or []:
        name, value = split_option(text)
        fixed[name] = value
    return Sweep(methods=parse_list(args.methods, "method"), seeds=parse_seeds(args.seeds),
                 presets=parse_list(args.presets, "preset"), grid=grid, fixed=fixed, stream=args.stream,
                 backbone=args.backbone, name=args.name or "")


def cmd_sweep(args) -> int:
    sweep = _sweep_of(args)
    launcher = parse(args.launcher)
    Resources(cpus=args.cpus_per_run, gpus=args.gpus_per_run or 0.0).check()
    p = plan(None, sweep)   # every value checked before the store is opened (or created)
    url = to_url(args.db)
    if args.dry_run:
        if not (sqlite_path(url) and not sqlite_path(url).exists()):   # a dry run creates no store
            p.existing = store_reconciled(args.db).run_ids_for_launch_keys(p.keys)
        print(p.summary())
        return 0
    launcher.check_store(url)
    gpus = args.gpus_per_run if args.gpus_per_run is not None else \
        launcher.default_gpus(sorted({c["backbone"] for c in p.configs}))
    resources = Resources(cpus=args.cpus_per_run, gpus=gpus).check()
    store = store_reconciled(args.db)
    p.existing = store.run_ids_for_launch_keys(p.keys)
    print(p.summary())
    p, ids = launch_sweep(store, p, launcher=launcher, resources=resources)
    where = launcher.title if launcher.address is None else f"{launcher.title} at {launcher.address}"
    if ids:
        print(f"queued {len(ids)} run{'s' * (len(ids) != 1)} (ids {id_ranges(ids)}) on {where}, "
              f"{resources.cpus:g} CPU{'s' * (resources.cpus != 1)}"
              + (f" and {resources.gpus:g} GPU" if resources.gpus else "") + " each; group "
              f"{p.sweep.group} (the Runs and Compare pages filter by it)")
    else:
        print(f"nothing to queue: every run of sweep {p.sweep.key()} is in the store already")
    if args.wait:
        return wait_for(store, [*p.existing.values(), *ids])
    return 0
