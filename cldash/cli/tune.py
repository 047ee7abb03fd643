"""`cldash tune`: the tuned regime's search for one run configuration, or for every run of a claim
(cldash.analysis.tuning): trials on validation data, the same budget for every method, the best configuration
printed (and kept in the store, where `cldash claims --regime tuned` and the pages read it)."""

from __future__ import annotations

import os
import sys

from cldash.analysis import claims as C, tuning as T
from cldash.cli.waiting import store_reconciled
from cldash.config import resolve
from cldash.core.errors import UserError
from cldash.runs.launchers import parse


def add_tune_arguments(p) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--claim", metavar="KEY", help="tune every run of this claim (see `cldash claims`)")
    what.add_argument("--method", metavar="NAME", help="tune this method (with --stream)")
    p.add_argument("--stream", metavar="NAME", help="the stream (default: the claim's, or digits-rotate)")
    p.add_argument("--backbone", default="", metavar="NAME", help="backbone; default: the stream's")
    p.add_argument("--trials", type=int, default=T.TRIALS, metavar="N",
                   help=f"trials per search, the same for every method (default {T.TRIALS})")
    p.add_argument("--steps-per-task", type=int, metavar="K", help="steps on each task (default: the common 300)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the sampler's seed: the same seed gives the "
                   "same best configuration (default 0)")
    p.add_argument("--launcher", default=os.environ.get("CLDASH_LAUNCHER", "local"), metavar="WHERE",
                   help="where the trials run: local (default; env CLDASH_LAUNCHER) or a Ray cluster address")


def targets(args) -> list[tuple[str, dict]]:
    """(label, values) of each configuration to tune, checked before anything is written."""
    if args.trials < 1:
        raise UserError(f"--trials must be at least 1 (got {args.trials}).")
    if args.steps_per_task is not None and args.steps_per_task < 1:
        raise UserError(f"--steps-per-task must be at least 1 (got {args.steps_per_task}).")
    setting = C.Setting(stream=args.stream, backbone=args.backbone or None, steps_per_task=args.steps_per_task)
    if args.claim:
        claim = C.get_claim(args.claim)
        refusal = setting.refusal(claim)
        if refusal:
            raise UserError(refusal)
        out = [(label, C.run_values(claim, label, setting)) for label in claim.runs]
    else:
        values = {"method": args.method, "stream": args.stream or "digits-rotate"}
        if args.backbone:
            values["backbone"] = args.backbone
        if args.steps_per_task:
            values["steps_per_task"] = args.steps_per_task
        out = [(args.method, values)]
    for _, values in out:
        resolve(values)   # a bad method, stream or option: one sentence before any search starts
    return out


def cmd_tune(args) -> int:
    """Run (or resume) the searches and print each best configuration."""
    chosen = targets(args)
    launcher = parse(args.launcher)
    store = store_reconciled(args.db)
    for label, values in chosen:
        name = T.study_name(values, args.trials, args.seed)
        print(f"{label}: search {name}, {args.trials} trials over " + "; ".join(p.text() for p in T.space(values)),
              flush=True)
        s = T.search(store, values, trials=args.trials, seed=args.seed, launcher=launcher,
                     progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
        print(best_line(label, s), flush=True)
    return 0


def best_line(label: str, s: dict) -> str:
    best = s["best"]
    if best is None:
        return f"{label}: no trial finished ({len(s['trials'])} tried)"
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    spread = f" (sd {s['spread_sd']:.3f} over seeds {', '.join(s['spread'])})" if s.get("spread_sd") is not None else ""
    return (f"{label}: best {params} · validation ACC {best['acc']:.3f}{spread}, LA {best['la']:.3f}, forgetting "
            f"{best['forgetting']:.3f} (trial {best['trial']} of {s['trials_budget']})")
