"""`cldash queue` (the runs holding a slot and the runs waiting, in the order they start: interactive before
batch, cldash.runs.priority; and the concurrency limit) and `cldash reconcile` (mark runs whose process is gone
as ended). Both start the queued runs the limit allows."""

from __future__ import annotations

import sys

from cldash.core.errors import UserError
from cldash.runs.launchers.local import queue
from cldash.runs.priority import priority_name
from cldash.runs.processes import RUNS_PER_GPU_SETTING, gpu_count, max_concurrent, runs_per_gpu
from cldash.runs.queue import reconcile, schedule
from cldash.runs.recovery import AUTO_RESUME_SETTING
from cldash.store import Store


def cmd_reconcile(args) -> int:
    store = Store(args.db)
    changed = reconcile(store)
    print(f"{len(changed)} run(s) whose process is gone marked as ended"
          + (f": {', '.join(map(str, changed))}" if changed else ""))
    started = schedule(store)
    if started:
        print(f"started queued run(s): {', '.join(map(str, started))}")
    return 0


def add_queue_arguments(p) -> None:
    p.add_argument("--no-start", action="store_true", help="only show the queue; start nothing")
    p.add_argument("--auto-resume", choices=("on", "off"), help="on: the scheduler resumes interrupted runs from "
                   "their checkpoints by itself (a reboot or a lost node costs at most one task; at most 3 times a "
                   "run); the store keeps the setting")
    p.add_argument("--runs-per-gpu", type=int, metavar="N", help="how many local runs share one GPU (default 1; "
                   "small runs leave a large GPU mostly idle); each run sees only its GPU; the store keeps the setting")


def cmd_queue(args) -> int:
    """The runs holding a slot and the runs waiting, in the order they start, and the limit; starts
    what the limit allows first (unless --no-start)."""
    if args.runs_per_gpu is not None and not 1 <= args.runs_per_gpu <= 64:   # before the store: nothing written
        raise UserError(f"--runs-per-gpu must be between 1 and 64 (got {args.runs_per_gpu}).")
    store = Store(args.db)
    if args.auto_resume:
        store.set_setting(AUTO_RESUME_SETTING, args.auto_resume)
    if args.runs_per_gpu is not None:
        store.set_setting(RUNS_PER_GPU_SETTING, str(args.runs_per_gpu))
    if args.no_start:
        reconcile(store)
    started = [] if args.no_start else schedule(store)
    active, waiting = queue(store)
    limit = max_concurrent(store)
    source = "set in the store" if store.get_setting("max_concurrent") else \
        f"the default: {runs_per_gpu(store)} per GPU" if gpu_count() else "the default: one per CPU core"
    print(f"{store.display}: {len(active)} active, {len(waiting)} waiting; at most {limit} run(s) at once ({source}); "
          f"automatic resume {store.get_setting(AUTO_RESUME_SETTING) or 'off'}")
    if active or waiting:
        print(f"{'position':>8}  {'id':>4}  {'status':<9} {'progress':>8}  {'pid':>7}  {'priority':<11} {'method':<10} "
              "name")
    for position, r in [("active", r) for r in active] + list(enumerate(waiting, start=1)):
        status = "starting" if position == "active" and r["status"] == "queued" else r["status"]
        print(f"{position:>8}  {r['id']:>4}  {status:<9} {100 * (r['progress'] or 0):7.1f}%  {r['pid'] or '-':>7}  "
              f"{priority_name(r):<11} {r['method']:<10} {r['name']}"
              + ("  (cldash run)" if r["launcher"] == "cli" else ""))
    if any(r.get("priority") for r in waiting) and not all(r.get("priority") for r in waiting):
        print("interactive runs (a lesson, the demo, the Launch page) start before batch runs (claims, sweeps, "
              "searches); a running run is never stopped for one")
    if started:
        print(f"started run(s) {', '.join(map(str, started))} in the free slot(s)")
    if store.refused and waiting:
        print(f"cldash: {store.refused}; no queued run can start.", file=sys.stderr)
    return 0
