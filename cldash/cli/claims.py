"""`cldash claims`: the seed papers' claims with their verdicts computed from the stored runs (the same
verdicts as the Claims page and bench/), in any setting; --launch queues the runs they still need: the first
seeds, then more where a check is undecided, by the fixed stopping rule (cldash.analysis.evidence)."""

from __future__ import annotations

import sys

from cldash.analysis import claims as C
from cldash.analysis.evidence import SEED_SCHEDULE
from cldash.cli.waiting import store_reconciled
from cldash.config import resolve
from cldash.core.errors import UserError
from cldash.core.text import id_ranges
from cldash.runs.pace import estimate

REGIME_CHOICES = {"common": ("common",), "paper": ("paper",), "tuned": ("tuned",), "both": ("common", "paper"),
                  "all": C.REGIMES}
MARK = {"holds": "+", "opposite": "-", "equivalent": "=", "undecided": "?", "not comparable": "x"}


def add_claims_arguments(p) -> None:
    p.add_argument("--regime", choices=tuple(REGIME_CHOICES), default="all",
                   help="common: every method on the shared defaults; paper: each claim in its paper's regime; "
                        "tuned: each method's best values from `cldash tune`; both: common and paper; all (default)")
    p.add_argument("--claim", action="append", metavar="KEY", help="only this claim (repeatable)")
    p.add_argument("--launch", action="store_true",
                   help="queue the runs still needed (3 seeds, then up to "
                        f"{' -> '.join(map(str, SEED_SCHEDULE))} while a check is undecided) and start them")
    p.add_argument("--yes", "-y", action="store_true",
                   help="with --launch: queue without asking (a terminal is asked first, with the number of runs and "
                        "the time they will take; a script's stdin is not a terminal and is never asked)")
    p.add_argument("--stream", metavar="NAME", help="read or queue the claims on this stream instead of their own")
    p.add_argument("--backbone", metavar="NAME", help="... with this backbone (default: the stream's)")
    p.add_argument("--steps-per-task", type=int, metavar="N", help="... with this many steps a task")
    p.add_argument("--trials", type=int, default=C.TRIALS, metavar="N",
                   help=f"the tuned regime: read the searches of N trials (`cldash tune --trials N`; default "
                        f"{C.TRIALS})")
    p.add_argument("--guard-margin", type=float, default=C.GUARD_MARGIN, metavar="M",
                   help=f"the learned-enough guard: a run whose learning accuracy is more than M below the claim's "
                        f"best is not compared (default {C.GUARD_MARGIN:g})")


def _setting(args) -> C.Setting:
    if args.steps_per_task is not None and args.steps_per_task < 1:
        raise UserError(f"--steps-per-task must be at least 1 (got {args.steps_per_task}).")
    if args.trials < 1:
        raise UserError(f"--trials must be at least 1 (got {args.trials}).")
    if not 0 <= args.guard_margin <= 1:
        raise UserError(f"--guard-margin must be between 0 and 1 (got {args.guard_margin:g}).")
    return C.Setting(stream=args.stream, backbone=args.backbone, steps_per_task=args.steps_per_task,
                     trials=args.trials)


def confirmed(store, chosen, regimes, setting, args) -> bool:
    """Say how many runs --launch queues and how long they take here; in a terminal, ask first (unless --yes)."""
    configs = C.to_launch(store, chosen, regimes, setting=setting, margin=args.guard_margin)
    if not configs:
        return True
    forecast = estimate(store, configs)
    print(f"to queue: {forecast.text()} (estimated from {forecast.source}); as a batch, behind any lesson, demo or "
          "Launch page run queued meanwhile")
    if args.yes or not sys.stdin.isatty():
        return True
    try:
        return input(f"queue the {forecast.runs} run(s)? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_claims(args) -> int:
    """The seed papers' claims with their verdicts from the store; --launch queues the runs they still need."""
    chosen = tuple(C.get_claim(k) for k in args.claim) if args.claim else C.CLAIMS   # before opening the store
    setting = _setting(args)
    if setting.stream:
        resolve({"stream": setting.stream, **({"backbone": setting.backbone} if setting.backbone else {})})
    store = store_reconciled(args.db)
    regimes = REGIME_CHOICES[args.regime]
    if args.launch:
        if not confirmed(store, chosen, regimes, setting, args):
            print("nothing queued")
            return 0
        ids = C.launch_missing(store, chosen, regimes, setting=setting, margin=args.guard_margin)
        print(f"queued {len(ids)} run(s)" + (f": {id_ranges(ids)}" if ids else ": every run the claims need is "
                                             "finished, queued or running") + f" -> {store.display}")
        if "tuned" in regimes:
            untuned = [c.key for c in chosen if C.verdict(store, c, "tuned", setting=setting)["verdict"] ==
                       "not tuned yet"]
            if untuned:
                print(f"not tuned yet, so not launched in the tuned regime: {', '.join(untuned)} "
                      f"(cldash tune --claim KEY first)")
        return 0
    runs = store.runs()
    for claim in chosen:
        print(f"{claim.key} ({claim.paper})\n  {claim.statement}")
        for regime in regimes:
            v = C.verdict(store, claim, regime, runs, setting, args.guard_margin)
            print_verdict(v, claim)
        if v["reported"]:
            print("  the paper's own numbers: " + "; ".join(f"{r['method']} {r['value']:g}{r['unit']} ({r['quantity']})"
                                                        for r in v["reported"]))
            print(f"  its setting: {v['paper_setting']}")
        print(f"  look at: {claim.look[0]} page, {claim.look[1]}\n")
    return 0


def print_verdict(v: dict, claim: C.Claim) -> None:
    regime = v["regime"]
    if v.get("same_as"):
        print(f"  {regime:<7} the same runs as {v['same_as']} (no paper preset applies): not decided twice")
        return
    if "why" in v:   # not tuned yet, not in this setting
        print(f"  {regime:<7} {v['verdict'].upper()}: {v['why']}")
        return
    todo = (f"; {v['missing']} run(s) to launch (cldash claims --launch --claim {claim.key} --regime {regime})"
            if v["missing"] else "") + (f"; {v['pending']} queued or running" if v["pending"] else "")
    print(f"  {regime:<7} {v['verdict'].upper()} on {v['setting']}{todo}")
    for c in v["checks"]:
        print(f"    {MARK.get(c['state'], '?')} {c['check']}: {c['verdict']} ({c['why']})")
