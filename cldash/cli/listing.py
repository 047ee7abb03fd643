"""`cldash list` (the stored runs, a line each, with their key metrics, launcher and host) and `cldash show` (one
run: its configuration, status, where it ran and what launched it, lineage, accuracy matrix and metrics)."""

from __future__ import annotations

import json
import math

from cldash.cli.results import format_matrix, format_metrics
from cldash.cli.waiting import store_reconciled
from cldash.config import aids_label
from cldash.core.text import printable
from cldash.dashboard.labels import launch_place, launcher_label, runtime_label, weights_label
from cldash.engine.checkpoints import available
from cldash.measures.metrics import fmt
from cldash.store import count_rows


def add_list_arguments(p) -> None:
    p.add_argument("--status", help="only runs in this state (queued, running, finished, failed, cancelled, "
                   "interrupted)")
    p.add_argument("--method", metavar="NAME", help="only runs of this method")
    p.add_argument("--stream", metavar="NAME", help="only runs on this stream")


def cmd_list(args) -> int:
    store = store_reconciled(args.db)
    runs = store.runs(status=[args.status] if args.status else None, method=args.method, stream=args.stream)
    if not runs:
        print(f"no runs in {store.display}" + (" matching the filters" if args.status or args.method else ""))
        return 0
    header = f"{'id':>4}  {'status':<11} {'progress':>8}  {'method':<10} {'stream':<16} {'seed':>4}  " \
             f"{'acc':>6} {'bwt':>7} {'forget':>6} {'general':>7}  {'launcher':<8} {'host':<16} name"
    print(header)
    for r in runs:
        s = r["summary"] or {}
        # what users typed is printed escaped: a store written by an older cldash may hold control characters
        print(f"{r['id']:>4}  {r['status']:<11} {100 * (r['progress'] or 0):7.1f}%  {printable(r['method']):<10} "
              f"{printable(r['stream']):<16} {r['seed']:>4}  {fmt(s.get('acc', math.nan)):>6} "
              f"{fmt(s.get('bwt', math.nan)):>7} {fmt(s.get('forgetting', math.nan)):>6} "
              f"{fmt(s.get('general_retention', math.nan)):>7}  {printable(launcher_label(r)):<8} "
              f"{printable(r['host'] or '-'):<16} {printable(r['name'])}")
    return 0


def cmd_show(args) -> int:
    store = store_reconciled(args.db)
    run = store.get_run(args.run)
    _print_config(run)
    print(f"  lineage   {'; '.join(_lineage(store, run))}")
    print("  stored    " + ", ".join(f"{v} {k}" for k, v in count_rows(store, run["id"]).items()))
    m = store.accuracy_matrix(run["id"])
    if m["rows"]:
        print(f"\naccuracy matrix R[i][j] ({m['metric']}):")
        print(format_matrix(m))
    print("\nmetrics:")
    print(format_metrics(run["summary"]))
    return 0


def _print_config(run: dict) -> None:
    """What `cldash show` prints of a run before its lineage: its name, status, configuration and process."""
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
    print(f"  runtime   {printable(runtime_label(run.get('runtime')))}")
    print(f"  launcher  {printable(launch_place(run))}")
    host = f"{printable(run['host'])}, pid {run['pid']}" if run["host"] else "none yet (not started)"
    print(f"  host      {host}")


def _lineage(store, run: dict) -> list[str]:
    """Where the run comes from (a fork's parent, its resumes) and which checkpoints it keeps."""
    lineage = [f"fork of run {run['parent_id']} after task {run['fork_task']}"] if run.get("parent_id") else []
    if run.get("resumes"):
        lineage.append(f"resumed {run['resumes']} time{'s' * (run['resumes'] != 1)}")
    kept = available(store, run["id"])
    lineage.append(f"checkpoints after task {', '.join(map(str, kept))}" if kept else "no checkpoint kept")
    return lineage
