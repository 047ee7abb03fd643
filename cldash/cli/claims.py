"""`cldash claims`: the seed papers' claims with their verdicts computed from the stored runs (the same
verdicts as the Claims page and bench/); --launch queues the runs they still need."""

from __future__ import annotations

from cldash.analysis import claims as C
from cldash.cli.waiting import store_reconciled
from cldash.core.text import id_ranges


def add_claims_arguments(p) -> None:
    p.add_argument("--regime", choices=("common", "paper", "both"), default="both",
                   help="common: every method on the shared defaults; paper: each claim in its paper's regime")
    p.add_argument("--claim", action="append", metavar="KEY", help="only this claim (repeatable)")
    p.add_argument("--launch", action="store_true", help="queue the missing runs (3 seeds each) and start them")


def cmd_claims(args) -> int:
    """The seed papers' claims with their verdicts from the store; --launch queues the runs they still need."""
    chosen = tuple(C.get_claim(k) for k in args.claim) if args.claim else C.CLAIMS   # before opening the store
    store = store_reconciled(args.db)
    regimes = C.REGIMES if args.regime == "both" else (args.regime,)
    if args.launch:
        ids = C.launch_missing(store, chosen, regimes)
        print(f"queued {len(ids)} run(s)" + (f": {id_ranges(ids)}" if ids else ": every run the claims need is "
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
