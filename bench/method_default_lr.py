"""How the methods' default learning rates were chosen: default 5-task digits-rotate runs per lr.

For each (method, lr) it runs the default stream (5 rotations, 300 steps each, seed 0) and
reports the learning accuracy (mean of R's diagonal) against row 0 (the pre-trained model on the
same tasks), final accuracy, forgetting and general-task retention. A default lr must learn every
task (each R[t][t] well above R[0][t]) without diverging. Runs go in parallel worker processes,
one thread each.

    python bench/method_default_lr.py [--methods pissa,dora] [--lrs 1e-3,5e-3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

GRID = {
    "lora": [5e-3],
    "pissa": [5e-4, 2e-3, 5e-3],
    "dora": [2e-3, 5e-3, 1e-2],
    "loraga": [1e-3, 5e-3],
    "adalora": [5e-3, 2e-2, 5e-2],
    "wegeft": [5e-3, 2e-2],
    "loretta": [5e-3, 2e-2],
    "codyra": [2e-3, 5e-3, 1e-2],
    "eblora": [1e-3, 5e-3, 2e-2],
    "slice": [1e-3, 5e-3],
    "olora": [2e-3, 5e-3, 2e-2],
    "inflora": [2e-3, 5e-3, 1e-2, 2e-2],
    "sdlora": [2e-3, 5e-3, 2e-2],
}


def one(job: tuple[str, float, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun

    method, lr, steps = job
    crun = ContinualRun(resolve({"method": method, "lr": lr, "steps_per_task": steps, "eval_interval": 0}))
    summary = crun.run()
    R, general = crun.matrix()
    T = len(R[0])
    return {"method": method, "lr": lr, "row0": [round(v, 3) for v in R[0]],
            "diagonal": [round(R[t][t - 1], 3) for t in range(1, T + 1)],
            "learns_every_task": all(R[t][t - 1] > R[0][t - 1] + 0.3 for t in range(1, T + 1)),
            **{k: round(summary[k], 3) for k in ("acc", "la", "bwt", "forgetting", "general_retention")}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default=",".join(GRID))
    p.add_argument("--lrs", default="", help="comma-separated; default: the grid above")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    jobs = [(m, lr, args.steps) for m in args.methods.split(",")
            for lr in ([float(v) for v in args.lrs.split(",")] if args.lrs else GRID[m])]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one, jobs))
    for r in rows:
        print(json.dumps(r))
    # keep the rows of methods not re-run this time (one results file for the whole grid)
    old = Path(__file__).resolve().parent / "results" / "method_default_lr.json"
    if old.exists():
        fresh = {(r["method"], r["lr"]) for r in rows}
        rows = [r for r in json.loads(old.read_text()).get("rows", []) if (r["method"], r["lr"]) not in fresh] + rows
    save("method_default_lr", {"what": "default digits-rotate (5 x 300 steps, seed 0) per method and lr",
                               "command": " ".join(["python", "bench/method_default_lr.py", *sys.argv[1:]]),
                               "rows": rows})


if __name__ == "__main__":
    main()
