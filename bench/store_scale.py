"""The dashboard at sweep scale: server time of the Runs page with 1,000 runs in the store and of the
Compare page with 50 selected runs, next to the same pages on a small store (20 runs: a store of today,
a demo launch and a few `cldash run` rows, 10 of them compared), and the Compare page of a whole sweep
of 868 runs chosen under "runs from".

Server time is the wall time of the script run of the real app (app.py: navigation, the sidebar, the
page) under Streamlit's AppTest, taken in the thread that runs it: what a browser waits for before the
network and its own drawing. AppTest's set-up around it is left out (at a session's first run it scans
the installed packages for components, about 0.5 s here, which a real server does once at start-up).
Each page is rendered once to warm up (the first render imports Streamlit's elements, Plotly and
pandas' formatting), then timed in alternating rounds; the median is kept. Every timed render is a
fresh session (a page load): the Runs page is the default page; the Compare page is reached from it
(its render alone is timed) with the selection in the URL (``?runs=...``).

The big store (1,000 runs) is synthetic and shaped like a store after a few sweeps (`cldash sweep`):
  - sweep:ranks, 50 runs: 5 methods x rank 4, 8 x 5 seeds, the runs the Compare page shows. These
    and 50 others are written in full by dashboard_load.fill (5 tasks x 300 steps: losses, spectra of
    12 modules every 10 steps, anytime evaluations; uniform random values), with their own configs
    and the summaries of their stored matrices;
  - the other 900 runs hold a run row, the task list and the final evaluations only (R and the general
    column, shaped like R: a high diagonal, forgetting below it) with the summary computed from them:
    all that the Runs and Compare pages read. Their step series would only make the file larger (the
    pages never read them), and writing them would take minutes;
  - sweep:wide (every method x seeds, 868 runs), sweep:lr, claims runs, a demo launch and plain
    `cldash run` rows; most finished, a few running (on another host, so the sidebar's reconcile leaves
    them), queued (behind them: the concurrency limit is full, so nothing is started) and failed.
Building it takes about 15 s; the stores are kept with ``--keep DIR`` and reused.

    python bench/store_scale.py [--rounds 5] [--runs 1000] [--against DIR] [--label after] [--keep DIR]
                                [--profile runs|compare]

``--against DIR`` measures another checkout's app in the same rounds, as "before" (the commit before
this work: ``mkdir /tmp/before && git archive 5f5222b | tar -x -C /tmp/before``); each checkout renders
in its own process, driven in turn. ``--label`` names this checkout's numbers (default "after"); the
JSON keeps earlier labels next to new ones. ``--profile`` prints the top of a cProfile of one render
(in the script's thread) instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine, median  # noqa: E402
from dashboard_load import fill  # noqa: E402

COMPARED_METHODS = ("lora", "dora", "pissa", "olora", "eblora")
SEEDS = 5
TASKS = 5


def synthetic_matrix(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """R (rows 0..T) and the general column of a run that learns each task and forgets the older ones."""
    R = np.empty((TASKS + 1, TASKS))
    R[0] = rng.uniform(0.1, 0.4, TASKS)
    for i in range(1, TASKS + 1):
        for j in range(TASKS):
            R[i, j] = rng.uniform(0.85, 0.98) if j == i - 1 else \
                R[i - 1, j] * rng.uniform(0.6, 0.95) if j < i - 1 else R[0, j] + rng.uniform(-0.05, 0.1)
    general = list(np.cumprod(np.r_[0.95, rng.uniform(0.85, 1.0, TASKS)]))
    return np.clip(R, 0, 1), general


def plan(total: int) -> list[dict]:
    """Which runs the store holds: config inputs, group, status; the first 50 are the compared sweep.
    A store under 100 runs is a store of today: a demo launch (every method) and a few `cldash run`
    rows, all written in full."""
    from cldash.methods import REGISTRY

    if total < 100:
        runs = [{"method": m, "seed": 0, "group": "demo-1f3a9c2e", "full": True} for m in sorted(REGISTRY)]
        runs += [{"method": "lora", "seed": s, "group": None, "full": True} for s in range(total)]
        return runs[:total]
    runs = []
    for method in COMPARED_METHODS:
        for rank in (4, 8):
            for seed in range(SEEDS):
                runs.append({"method": method, "options": {"rank": rank}, "seed": seed, "group": "sweep:ranks",
                             "full": True})
    for method in ("lora", "olora"):
        for lr in (1e-3, 3e-3, 1e-2):
            for seed in range(SEEDS):
                runs.append({"method": method, "lr": lr, "seed": seed, "group": "sweep:lr"})

    for method in sorted(REGISTRY)[:10]:
        for seed in range(3):
            runs.append({"method": method, "seed": seed, "group": "claims"})
    for method in sorted(REGISTRY):
        runs.append({"method": method, "seed": 0, "group": "demo-1f3a9c2e"})
    plain = [{"method": m, "seed": s, "group": None} for s in range(2) for m in ("lora", "full", "dora", "pissa")]
    wide = []
    seed = 0
    while len(runs) + len(wide) + len(plain) < total:
        for method in sorted(REGISTRY):
            wide.append({"method": method, "seed": seed, "group": "sweep:wide"})
        seed += 1
    runs += wide[:total - len(runs) - len(plain)] + plain
    for r in runs[50:100]:
        r["full"] = True
    # the end of the wide sweep is still going: failures, 4 running, the rest queued behind them
    tail = [r for r in runs if r["group"] == "sweep:wide"][-30:]
    for k, r in enumerate(tail):
        r["status"] = "failed" if k < 6 else "running" if k < 10 else "queued"
    runs[-1]["status"] = "interrupted"
    return runs


def build_store(path: str, total: int) -> dict:
    """Write the planned runs; returns {"compared": the 50 ids, "seconds": fill time, "mb": file size}."""
    from cldash.config import resolve
    from cldash.measures.metrics import summarize
    from cldash.store import Store

    start = time.perf_counter()
    store = Store(path)
    store.set_setting("max_concurrent", "4")   # the 4 running runs fill it: the sidebar starts nothing
    tasks = [{"position": t + 1, "name": f"task {t + 1}", "kind": "stream"} for t in range(TASKS)] + \
        [{"position": 0, "name": "general", "kind": "general"}]
    rng = np.random.default_rng(0)
    ids = []
    for k, p in enumerate(plan(total)):
        cfg = resolve({"method": p["method"], "seed": p["seed"], **({"lr": p["lr"]} if "lr" in p else {}),
                       **({"method_options": p["options"]} if "options" in p else {})}).to_dict()
        status = p.get("status", "finished")
        if p.get("full"):
            rid = fill(store, 300, TASKS, 10, 50)
            store.update_run(rid, config=json.dumps(cfg), method=cfg["method"], policy=cfg["policy"],
                             seed=cfg["seed"], group_key=p["group"])
            m = store.accuracy_matrix(rid)
            R, general = m["R"], m["general"]["general"]
        else:
            rid = store.create_run(cfg, status=status, group_key=p["group"])
            store.write_structure(rid, tasks, [])
            R, general = synthetic_matrix(rng)
            done = TASKS if status == "finished" else int(rng.integers(0, TASKS)) if status != "queued" else -1
            w = store.writer(rid)
            for i in range(done + 1):
                for j in range(TASKS):
                    w.evaluation(300 * i, i, j + 1, {"accuracy": float(R[i, j])}, True)
                w.evaluation(300 * i, i, 0, {"accuracy": float(general[i])}, True)
            w.flush(num_tasks=TASKS, total_steps=300 * TASKS, step=300 * max(done, 0),
                    progress=max(done, 0) / TASKS, task=max(done, 0))
        fields = {"status": status, "created_at": 1.7e9 + 60 * k}
        if status == "finished":
            fields.update(summary=summarize(R, {"general": general}), finished_at=1.7e9 + 60 * k + 45)
        elif status == "running":
            # on another host with a heartbeat ahead of the clock: reconcile never takes it for dead
            fields.update(host="sweep-node-1", pid=4242 + k, started_at=time.time(), heartbeat_at=time.time() + 86400)
        elif status in ("failed", "interrupted"):
            fields.update(error=f"RuntimeError: loss is NaN at step {300 * 2 + 17}\nTraceback ...")
        store.update_run(rid, **fields)
        ids.append(rid)
    return {"compared": ids[:50], "seconds": round(time.perf_counter() - start, 1),
            "mb": round(Path(path).stat().st_size / 2**20, 1)}


def use_navigation_once() -> None:
    """Run AppTest like a served dashboard after its first page load (as tests/pages/test_app.py's
    v2_navigation does): AppTest resets the "pages/ folder" mode at every run, and the pages'
    through_app() would spend each run re-routing it."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = patched


APP = ROOT / "app.py"
SCRIPT_SECONDS: list[float] = []
PROFILE: list[cProfile.Profile] = []


def time_script_runs() -> None:
    """Record the wall time of each script run in the thread that runs it: that is the server's work.
    AppTest's own set-up around it (a scan of the installed packages for components at a session's first
    run, about 0.5 s here, done once at start-up by a real server; parsing the messages back) is not.
    With PROFILE holding a profiler, that thread runs under it."""
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    inner = LocalScriptRunner._run_script_thread

    def timed(self):
        start = time.perf_counter()
        if PROFILE:
            PROFILE[0].enable()
        try:
            inner(self)
        finally:
            if PROFILE:
                PROFILE[0].disable()
            SCRIPT_SECONDS.append(time.perf_counter() - start)

    LocalScriptRunner._run_script_thread = timed


def render(db: str, page: str, runs: list[int] | None = None, group: str | None = None) -> float:
    """Seconds of server time of one fresh session's render of `page` (pages/runs.py or pages/compare.py).
    With `group`: the render after choosing that group under "runs from" on the Compare page (NaN for an
    app without that choice)."""
    from streamlit.testing.v1 import AppTest

    os.environ["CLDASH_DB"] = db
    at = AppTest.from_file(str(APP), default_timeout=600)
    if runs:
        at.query_params["runs"] = ",".join(map(str, runs))
    if page != "pages/runs.py":
        at.run()
        at.switch_page(page)
    at.run()
    if group:
        choice = [s for s in at.selectbox if s.key == "compare_from_widget"]
        if not choice:
            return math.nan
        choice[0].set_value(group).run()
    if at.exception:
        raise RuntimeError(f"{page} raised: {[e.value for e in at.exception]}")
    return SCRIPT_SECONDS[-1]


def cases(stores: dict) -> dict:
    big, small = stores["big"], stores["small"]
    return {"runs_page_big": lambda: render(big["db"], "pages/runs.py"),
            "compare_page_big": lambda: render(big["db"], "pages/compare.py", big["compared"]),
            "runs_page_small": lambda: render(small["db"], "pages/runs.py"),
            "compare_page_small": lambda: render(small["db"], "pages/compare.py", small["compared"][:10]),
            # beyond the bar: the Compare page of a whole sweep (868 runs in the 1,000), from "runs from"
            "compare_group_big": lambda: render(big["db"], "pages/compare.py", group="sweep:wide")}


def worker(root: Path, stores: dict, profile: str | None) -> None:
    """Render the pages of the app in `root` on request: a case name per line in, "TIME seconds" out."""
    global APP
    APP = root / "app.py"
    sys.path.insert(0, str(root))     # its cldash and pages, not this checkout's
    use_navigation_once()
    time_script_runs()
    fns = cases(stores)
    if profile:
        for fn in fns.values():
            fn()                      # warm-up
        PROFILE.append(cProfile.Profile())
        fns[f"{profile}_page_big"]()
        s = io.StringIO()
        pstats.Stats(PROFILE[0], stream=s).sort_stats("cumulative").print_stats(60)
        print(s.getvalue())
        return
    for line in sys.stdin:
        print("TIME", fns[line.strip()](), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--small", type=int, default=20)
    p.add_argument("--label", default="after", help="the name of this checkout's numbers")
    p.add_argument("--against", type=Path, help="another checkout measured in the same rounds (label 'before')")
    p.add_argument("--profile", choices=["runs", "compare"])
    p.add_argument("--keep", help="build the stores in this folder (reused when they exist)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)     # a checkout to render for the driver
    p.add_argument("--stores", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.worker:
        worker(args.worker, json.loads(args.stores), args.profile)
        return

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="cldash-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    stores = {}
    for name, n in (("big", args.runs), ("small", args.small)):
        path = tmp / f"{name}-{n}.db"
        info_path = path.with_suffix(".json")
        if not info_path.exists():
            path.unlink(missing_ok=True)
            info_path.write_text(json.dumps(build_store(str(path), n)))
        stores[name] = {"db": str(path), **json.loads(info_path.read_text())}
    if args.profile:
        worker(ROOT, stores, args.profile)
        return

    # One process per checkout (both import modules named cldash and pages), driven in turn from here: each
    # render runs alone, and drift in the machine's load hits both checkouts alike.
    checkouts = {args.label: ROOT, **({"before": args.against.resolve()} if args.against else {})}
    workers = {label: subprocess.Popen(
        [sys.executable, __file__, "--worker", str(root), "--stores", json.dumps(stores)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root) for label, root in checkouts.items()}

    def ask(label: str, case: str) -> float:
        w = workers[label]
        w.stdin.write(case + "\n")
        w.stdin.flush()
        for line in w.stdout:
            if line.startswith("TIME "):
                return float(line.split()[1])
        raise RuntimeError(f"the {label} worker stopped (run it with --profile to see its error)")

    names = list(cases(stores))
    for label in workers:
        for case in names:
            ask(label, case)          # warm-up: imports, Plotly's and Streamlit's first uses
    times = {label: {case: [] for case in names} for label in workers}
    loads = []
    for r in range(args.rounds):      # alternating order, as common.interleaved does
        for label in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
            for case in (names if r % 2 == 0 else names[::-1]):
                times[label][case].append(ask(label, case))
        loads.append(os.getloadavg()[0])
    for w in workers.values():
        w.stdin.close()
        w.wait()

    path = OUT / "store_scale.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    # the load average says whether other work shared the cores during the rounds
    stamp = {"rounds": args.rounds, "at": time.strftime("%Y-%m-%d %H:%M"),
             "load_average": round(median(loads), 2)}
    ms = lambda v: None if any(math.isnan(x) for x in v) else round(1000 * median(v), 1)   # noqa: E731
    results = {**old.get("results", {}), **{label: {"ms": {c: ms(v) for c, v in t.items()},
                                                    **stamp}   # no checkout paths: results are committed
                                            for label, t in times.items()}}
    payload = {"machine": machine(), "host_cores": os.cpu_count(),
               "what": f"server time (the script run of app.py under AppTest) of the Runs page with {args.runs} runs "
                       f"in the store and of the Compare page with 50 selected runs; the same pages on a store of "
                       f"{args.small} runs (10 compared); median of {args.rounds} rounds after a warm-up",
               "big_store": {"runs": args.runs, "mb": stores["big"]["mb"], "fill_seconds": stores["big"]["seconds"]},
               "small_store": {"runs": args.small, "mb": stores["small"]["mb"]},
               "results": results}
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    write_table(payload)


def write_table(payload: dict) -> None:
    """bench/results/store_scale.md: one row per page and store, one column per label; the README
    paragraph stays below the table (everything after the marker is kept)."""
    md = OUT / "store_scale.md"
    keep = ""
    if md.exists() and "<!-- notes -->" in md.read_text():
        keep = md.read_text().split("<!-- notes -->", 1)[1]
    labels = sorted(payload["results"], key=lambda label: label != "before")     # before, then the others
    rows = [("Runs page", "runs_page_big", f"{payload['big_store']['runs']} runs"),
            ("Compare page, 50 runs", "compare_page_big", f"{payload['big_store']['runs']} runs"),
            ("Runs page", "runs_page_small", f"{payload['small_store']['runs']} runs"),
            ("Compare page, 10 runs", "compare_page_small", f"{payload['small_store']['runs']} runs"),
            ("Compare page, all of sweep wide (868 runs)", "compare_group_big", f"{payload['big_store']['runs']} runs")]
    lines = ["# Dashboard at sweep scale (bench/store_scale.py)", "",
             f"Server time per render in ms (median); {payload['machine']}.", "",
             "| page | store | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for title, key, store in rows:
        cells = [payload["results"][label]["ms"].get(key) for label in labels]
        lines.append(f"| {title} | {store} | " + " | ".join("—" if c is None else f"{c:,.0f}" for c in cells) + " |")
    md.write_text("\n".join(lines) + "\n\n<!-- notes -->" + keep)


if __name__ == "__main__":
    main()
