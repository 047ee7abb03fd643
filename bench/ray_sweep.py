"""A sweep on a Ray cluster, all at once against the same runs one after another.

N tiny runs (LoRA on digits-rotate, the shipped vit-tiny) are submitted through the Ray launcher as one
sweep, each asking for --cpus and --gpus (0.125 GPU: eight share one GPU); the same N runs (other seeds,
so that nothing is reused) are then submitted one at a time, each after the previous one ended. The
ratio of the two wall times is the figure: how much sharing the cluster's CPUs or a GPU saves. Rounds
alternate which goes first. Each wall time includes each job's start (Ray's job supervisor and the run
process importing torch), which is what a user waits for.

    ray start --head --num-cpus 2
    python bench/ray_sweep.py --address http://127.0.0.1:8265 --db postgresql+psycopg://...   # or a SQLite
        path on a one-node cluster
    python bench/ray_sweep.py --runs 8 --gpus 0.125 ...   # on a GPU node: the README's GPU figure
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402


def wait(store, ids, timeout=3600.0) -> None:
    from cldash.runs.queue import reconcile
    from cldash.store import ENDED

    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = store.runs(ids=ids)
        if all(r["status"] in ENDED for r in runs):
            bad = [(r["id"], r["status"], r["error"]) for r in runs if r["status"] != "finished"]
            if bad:
                raise SystemExit(f"runs did not finish: {bad}")
            return
        reconcile(store)
        time.sleep(0.5)
    raise SystemExit("timed out")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default="http://127.0.0.1:8265")
    p.add_argument("--db", default=None, help="store URL or path (default: a SQLite file in a temporary folder)")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--cpus", type=float, default=1.0)
    p.add_argument("--gpus", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=100, help="steps per task (2 tasks)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", default="ray_sweep")
    args = p.parse_args()

    from cldash.runs.launch import launch
    from cldash.runs.launchers import Resources
    from cldash.runs.launchers.ray_jobs import RayLauncher
    from cldash.runs.sweeps import Sweep, plan
    from cldash.store import Store, sqlite_path

    store = Store(args.db or str(Path(tempfile.mkdtemp()) / "ray_sweep.db"))
    cluster = RayLauncher(args.address)
    resources = Resources(cpus=args.cpus, gpus=args.gpus).check()
    fixed = {"steps_per_task": args.steps, "angles": "45,90", "eval_interval": 0,
             "device": "cuda" if args.gpus else "cpu"}
    seed = [0]

    def configs():
        seeds = list(range(seed[0], seed[0] + args.runs))
        seed[0] += args.runs
        return plan(None, Sweep(methods=["lora"], seeds=seeds, fixed=fixed, name=f"bench-{uuid.uuid4().hex[:6]}"))

    def together():
        pl = configs()
        ids = launch(store, pl.configs, pl.keys, group_key=pl.sweep.group, launcher=cluster, resources=resources)
        wait(store, ids)

    def one_by_one():
        pl = configs()
        for cfg, key in zip(pl.configs, pl.keys):
            wait(store, launch(store, [cfg], [key], group_key=pl.sweep.group, launcher=cluster, resources=resources))

    times = {"together": [], "one_by_one": []}
    for r in range(args.rounds):
        for name, fn in ((("together", together), ("one_by_one", one_by_one)) if r % 2 == 0 else
                         (("one_by_one", one_by_one), ("together", together))):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    res = cluster.resources()
    together_s, alone_s = min(times["together"]), min(times["one_by_one"])
    result = {"machine": machine(), "cluster": f"{res['nodes']} node(s), {res['CPU']:g} CPUs, {res['GPU']:g} GPUs",
              "what": f"{args.runs} runs of LoRA on digits-rotate (2 tasks x {args.steps} steps), {args.cpus:g} CPU "
                      f"and {args.gpus:g} GPU each, "
                      f"store {'sqlite' if sqlite_path(store.url) else store.url.split(':')[0]}",
              "seconds": {"together": round(together_s, 1), "one_by_one": round(alone_s, 1)},
              "ratio_together_over_one_by_one": round(together_s / alone_s, 3), "rounds": args.rounds,
              "date": time.strftime("%Y-%m-%d")}
    print(result)
    save(args.out, result)


if __name__ == "__main__":
    main()
