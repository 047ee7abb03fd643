"""The seed papers' claims, checked through cldash.analysis.claims in three regimes, seeds until clear.

The runs are the claims' own (cldash.analysis.claims.CLAIMS: methods, options, stream, regime), queued with
`launch_missing` into a store and run by cldash's launcher; the verdicts are `cldash.analysis.claims.verdict` on that
store, so these tables, `cldash claims` and the Claims page agree. The study:

1. the tuned regime's searches (cldash.analysis.tuning.search, the same as `cldash tune`): one per distinct run of
   the claims, `--trials` trials each on validation data, queued beside the common and paper regimes' first seeds;
2. then every regime's runs, side by side: 3 seeds each (the tuned regime's with each run's best values on fresh
   seeds 0.., on the test sets), then more where a check is undecided, by the fixed stopping rule (3 -> 5 -> 7 ->
   10, cldash.analysis.evidence), launching again until the rule asks for nothing.

Re-running the script launches only what is missing (a crashed study resumes, searches included); the store is
bench/out/claims.db (not committed).

    python bench/claims_study.py [--claim KEY ...] [--regime common|paper|tuned|all] [--workers 2]
                                 [--trials 16] [--steps-per-task N] [--render]

Writes bench/results/claims_study.md and .json (per claim and regime: the verdict, every check's state, interval,
detectable difference and seeds, the guard's decisions, the paper's numbers; and the share of checks decided).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine  # noqa: E402

from cldash.analysis import claims as C, tuning as T  # noqa: E402
from cldash.analysis.evidence import SEED_SCHEDULE  # noqa: E402
from cldash.runs.queue import reconcile, schedule  # noqa: E402
from cldash.store import Store  # noqa: E402

DB = Path(__file__).resolve().parent / "out" / "claims.db"
DECIDED = ("holds", "opposite", "equivalent")
LOCK = threading.Lock()


def say(line: str) -> None:
    with LOCK:
        print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def wait(store: Store) -> None:
    while True:
        reconcile(store)
        schedule(store)
        active = store.runs(status=["queued", "running"])
        if not active:
            return
        say(f"{len(active)} queued or running, {len(store.runs(status=['finished']))} finished")
        time.sleep(30)


def until_clear(db: str, claims: tuple, regimes: tuple, setting: C.Setting) -> None:
    """Launch what the claims need, wait, and again, until the stopping rule asks for nothing more."""
    store = Store(db)
    while True:
        ids = C.launch_missing(store, claims, regimes, setting=setting)
        say(f"{'/'.join(regimes)}: queued {len(ids)} runs")
        if not ids:
            return
        wait(store)


def targets(claims: tuple, setting: C.Setting) -> dict[str, dict]:
    """The distinct runs to tune (claims share runs), by search name."""
    out = {}
    for claim in claims:
        if setting.refusal(claim):
            continue
        for label in claim.runs:
            values = C.run_values(claim, label, setting)
            out.setdefault(T.study_name(values, setting.trials, 0), values)
    return out


def tune_all(db: str, claims: tuple, setting: C.Setting, workers: int) -> None:
    todo = targets(claims, setting)
    say(f"tuning {len(todo)} runs, {setting.trials} trials each")

    def one(values: dict) -> None:
        s = T.search(Store(db), values, trials=setting.trials, poll=5.0)
        say(f"searched {values['method']} {values.get('method_options') or ''}: best {s['best']['params']}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, todo.values()))


def check_row(c: dict) -> dict:
    return {k: c[k] for k in ("check", "metric", "state", "verdict", "why", "n", "mean", "low", "high",
                              "detectable", "delta")}


def guard_holds(v: dict, margin: float) -> bool:
    """No check decided between runs whose learning accuracies differ by more than the guard's margin."""
    for check, spec in zip(v["checks"], C.get_claim(v["claim"]).checks, strict=True):
        if check["state"] in DECIDED and spec.b and spec.metric in C.GUARDED:
            if abs(v["la"][spec.a] - v["la"][spec.b]) > margin:
                return False
    return True


def record(v: dict, margin: float) -> dict:
    base = {k: v.get(k) for k in ("claim", "regime", "verdict", "setting", "same_as", "reported", "paper_setting",
                                  "seeds_wanted", "tuned", "why")}
    if "why" in v or v.get("same_as"):
        return base
    return {**base, "checks": [check_row(c) for c in v["checks"]], "la": v["la"], "runs": v["runs"],
            "values": v["values"], "guard": [c["why"] for c in v["checks"] if c["state"] == "not comparable"],
            "guard_holds": guard_holds(v, margin)}


def shares(records: list[dict]) -> dict:
    """The share of checks decided (holds, the opposite or equivalent) per regime."""
    out = {}
    for regime in C.REGIMES:
        states = [c["state"] for r in records if r["regime"] == regime for c in r.get("checks", [])]
        if states:
            out[regime] = {"checks": len(states), **{s: states.count(s) for s in sorted(set(states))},
                           "decided": sum(s in DECIDED for s in states) / len(states)}
    return out


def render(store: Store, claims: tuple, regimes: tuple, setting: C.Setting, seconds: float | None) -> tuple[str, dict]:
    runs = store.runs()
    records = [record(C.verdict(store, claim, regime, runs, setting), C.GUARD_MARGIN)
               for claim in claims for regime in regimes]
    searches = [{k: s[k] for k in ("study", "target", "best", "spread", "spread_sd", "trials_budget")}
                for s in T.searches(store)]
    ends = [r["finished_at"] for r in runs if r.get("finished_at")]
    span = (max(ends) - min(r["created_at"] for r in runs)) if ends else None
    raw = {"machine": machine(), "runs": len(runs), "span_minutes": span / 60 if span else None,
           "seconds_this_call": seconds, "setting": setting.__dict__, "seed_schedule": SEED_SCHEDULE,
           "guard_margin": C.GUARD_MARGIN, "la_window": T.LA_WINDOW, "validation": T.VALIDATION,
           "tune_seeds": T.TUNE_SEEDS, "shares": shares(records), "claims": records, "searches": searches}
    return markdown(raw), raw


def markdown(raw: dict) -> str:
    lines = ["# The seed papers' claims, checked from the store\n",
             f"Produced by `python bench/claims_study.py` ({raw['runs']} runs"
             + (f", {raw['span_minutes']:.0f} minutes from the first queued to the last finished" if raw['span_minutes']
                else "") + f"; {raw['machine']}, 2 runs at a time, each on 1 thread). Setting: "
             f"{raw['setting']}. Seeds until clear: {raw['seed_schedule']}; guard margin {raw['guard_margin']}; "
             f"tuned: {raw['setting']['trials']} trials a run on {raw['validation']:.0%} held-out training data at "
             f"seed {raw['tune_seeds'][0]}, verdicts on fresh seeds 0..\n", "## Decided checks\n",
             "| regime | checks | decided | holds | opposite | equivalent | undecided | not comparable |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for regime, s in raw["shares"].items():
        lines.append(f"| {regime} | {s['checks']} | {s['decided']:.0%} | " + " | ".join(
            str(s.get(k, 0)) for k in ("holds", "opposite", "equivalent", "undecided", "not comparable")) + " |")
    for r in raw["claims"]:
        lines.append(f"\n## {r['claim']} · {r['regime']}: {r['verdict']}\n")
        if r.get("why") or r.get("same_as"):
            lines.append(r.get("why") or f"the same runs as {r['same_as']}")
            continue
        for c in r["checks"]:
            lines.append(f"- {c['check']}: **{c['verdict']}** ({c['why']})")
        if r["tuned"]:
            lines.append("- tuned values: " + "; ".join(f"{k}: {v}" for k, v in r["tuned"].items()))
        lines.append("- LA: " + ", ".join(f"{k} {v:.3f}" for k, v in r["la"].items() if v == v))
        if r["reported"]:
            lines.append("- the paper's own numbers: " + "; ".join(
                f"{p['method']} {p['value']:g}{p['unit']} ({p['quantity']})" for p in r["reported"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--claim", action="append")
    p.add_argument("--regime", choices=("common", "paper", "tuned", "all"), default="all")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--trials", type=int, default=T.TRIALS)
    p.add_argument("--steps-per-task", type=int)
    p.add_argument("--render", action="store_true", help="only write the tables from the store")
    p.add_argument("--db", default=str(DB))
    args = p.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.db)
    store.set_setting("max_concurrent", str(args.workers))
    claims = tuple(C.get_claim(k) for k in args.claim) if args.claim else C.CLAIMS
    regimes = C.REGIMES if args.regime == "all" else (args.regime,)
    setting = C.Setting(steps_per_task=args.steps_per_task, trials=args.trials)
    start = time.time()
    if not args.render:
        plain = tuple(r for r in regimes if r != "tuned")
        with ThreadPoolExecutor(max_workers=2) as pool:   # the first seeds of common and paper beside the searches
            jobs = [pool.submit(C.launch_missing, store, claims, plain, setting=setting)] if plain else []
            if "tuned" in regimes:
                jobs.append(pool.submit(tune_all, args.db, claims, setting, args.workers))
            for job in jobs:
                job.result()
        until_clear(args.db, claims, regimes, setting)   # then every regime's seeds until clear, side by side
    text, raw = render(store, claims, regimes, setting, None if args.render else time.time() - start)
    suffix = f"_steps{args.steps_per_task}" if args.steps_per_task else ""
    (OUT / f"claims_study{suffix}.md").write_text(text)
    (OUT / f"claims_study{suffix}.json").write_text(json.dumps(raw, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
