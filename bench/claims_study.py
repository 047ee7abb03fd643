"""The seed papers' claims, checked through cldash.analysis.claims in both regimes, 3 seeds each.

The runs are the claims' own (cldash.analysis.claims.CLAIMS: methods, options, stream, regime), queued with
`launch_missing` into a store and run by cldash's launcher; the verdicts are `cldash.analysis.claims.verdict` on that
store, so this table, `cldash claims` and the Claims page agree. Re-running the script launches only what is
missing (a crashed study resumes); the store is bench/out/claims.db (not committed).

    python bench/claims_study.py [--claim KEY ...] [--regime common|paper|both] [--workers 2] [--render]

Writes bench/results/claims_study.md (verdicts, evidence, learning accuracy beside forgetting) and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine  # noqa: E402

from cldash.analysis import claims as C  # noqa: E402
from cldash.runs.queue import reconcile, schedule  # noqa: E402
from cldash.store import Store  # noqa: E402

DB = Path(__file__).resolve().parent / "out" / "claims.db"


def wait(store: Store) -> None:
    while True:
        reconcile(store)
        schedule(store)
        active = store.runs(status=["queued", "running"])
        if not active:
            return
        done = len(store.runs(status=["finished"]))
        print(f"  {len(active)} queued or running, {done} finished", file=sys.stderr, flush=True)
        time.sleep(20)


def mean_sd(values: dict) -> str:
    xs = [v for v in values.values() if v == v]
    if not xs:
        return "n/a"
    import statistics

    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.3f} ± {sd:.3f}"


def render(store: Store, claims: tuple, regimes: tuple, seconds: float | None) -> tuple[str, list]:
    out = []
    runs = store.runs()
    ends = [r["finished_at"] for r in runs if r.get("finished_at")]
    span = max(ends) - min(r["created_at"] for r in runs) if ends else None
    lines = ["# The seed papers' claims, checked from the store\n",
             f"Produced by `python bench/claims_study.py` ({len(runs)} runs in the store"
             + (f", {span / 60:.0f} minutes from the first queued to the last finished, 2 at a time on a machine "
                "other work shared" if span else "")
             + f"; {machine()} in this process, each run on 1 thread; store bench/out/claims.db, "
             "raw verdicts in claims_study.json). Each claim's runs at seeds 0, 1, 2; a check holds when the 95 % "
             "t-interval of the paired difference over seeds lies on the claimed side of 0.\n"]
    for claim in claims:
        lines.append(f"## {claim.key}: {claim.paper}\n\n{claim.statement}\n")
        if claim.note:
            lines.append(f"*{claim.note}*\n")
        for regime in regimes:
            v = C.verdict(store, claim, regime, [r for r in runs if r["stream"] == claim.stream])
            out.append({k: v[k] for k in ("claim", "regime", "verdict", "checks", "caveats", "runs", "values")})
            preset = {label: C.run_preset(claim, spec.method, regime) for label, spec in claim.runs.items()}
            lines.append(f"**{regime} regime: {v['verdict']}** (presets: "
                         + ", ".join(f"{k} {p}" for k, p in preset.items()) + ")\n")
            for c in v["checks"]:
                lines.append(f"- {c['check']}: **{c['verdict']}** ({c['why']})")
            for caveat in v["caveats"]:
                lines.append(f"- caveat: {caveat}")
            metrics = list(v["values"][next(iter(claim.runs))])
            lines.append("\n| run | " + " | ".join(metrics) + " |")
            lines.append("|---|" + "---:|" * len(metrics))
            for label in claim.runs:
                lines.append(f"| {label} | " + " | ".join(mean_sd(v["values"][label][m]) for m in metrics) + " |")
            lines.append("")
    return "\n".join(lines) + "\n", out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--claim", action="append")
    p.add_argument("--regime", choices=("common", "paper", "both"), default="both")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--render", action="store_true", help="only write the tables from the store")
    p.add_argument("--db", default=str(DB))
    args = p.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.db)
    store.set_setting("max_concurrent", str(args.workers))
    claims = tuple(C.get_claim(k) for k in args.claim) if args.claim else C.CLAIMS
    regimes = C.REGIMES if args.regime == "both" else (args.regime,)
    start = time.time()
    if not args.render:
        ids = C.launch_missing(store, claims, regimes)
        print(f"queued {len(ids)} runs", file=sys.stderr)
        wait(store)
    text, raw = render(store, C.CLAIMS, C.REGIMES, None if args.render else time.time() - start)
    (OUT / "claims_study.md").write_text(text)
    (OUT / "claims_study.json").write_text(json.dumps(raw, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
