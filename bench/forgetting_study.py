"""The forgetting study's comparison (Ahmad, Zheng, Cao, arXiv 2603.09684) on digits-rotate.

Full fine-tuning, LoRA at ranks 1 / 4 / 16, PiSSA, WeGeFT and LoRETTA, each through the default
5-task digits-rotate stream (36, 72, 108, 144, 180 degrees; 300 steps per task, batch 64) with
its default learning rate, 3 seeds each. Every adapter method uses the ``merge`` policy (merge
after each task and start a fresh adapter; for PiSSA that re-runs the SVD on the merged weight),
as the comparator table of the reference note (seed-methods.md section 4) assumes. LoRA uses
alpha = 2r at every rank, so the scaling s = 2 stays that of the default rank-8 LoRA.

Reported per method (mean +- standard deviation over seeds): final average accuracy (ACC),
forgetting (Chaudhry: mean over the first T-1 tasks of the best earlier score minus the final
one), backward transfer, general-task retention (upright-digit accuracy after the last task
over before the first), and the effective rank (Roy & Vetterli) of the cumulative update
against W0, averaged over the 12 adapted linears, plus the trainable parameters per task.

    python bench/forgetting_study.py [--seeds 0,1,2] [--steps 300] [--workers 2]

Writes bench/results/forgetting_study.md (the table, the command, the reading) and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine, mean_sd  # noqa: E402

COMPARATORS = [
    ("full fine-tuning", "full", {}),
    ("LoRA r=1", "lora", {"rank": 1, "alpha": 2.0}),
    ("LoRA r=4", "lora", {"rank": 4, "alpha": 8.0}),
    ("LoRA r=16", "lora", {"rank": 16, "alpha": 32.0}),
    ("PiSSA r=8", "pissa", {}),
    ("WeGeFT r=8 (tied)", "wegeft", {}),
    ("LoRETTA r=8 (TT rank 5)", "loretta", {}),
]


def one(job: tuple[str, str, dict, int, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun
    from cldash.measures.spectra import analyze

    label, method, options, seed, steps = job
    policy = None if method == "full" else "merge"
    start = time.perf_counter()
    crun = ContinualRun(resolve({"method": method, "method_options": options, "policy": policy, "seed": seed,
                                 "steps_per_task": steps, "eval_interval": 0}))
    params = []
    original = crun.method.before_task

    def before_task(ctx):   # count what trains in each task (after the method built its adapters)
        original(ctx)
        params.append(sum(p.numel() for p in crun.method.trainable_parameters()))
    crun.method.before_task = before_task
    summary = crun.run()
    R, general = crun.matrix()
    eranks = [a.measures["erank"] for a in analyze(crun.method.updates()).values()]
    return {"label": label, "method": method, "options": options, "policy": policy, "seed": seed,
            "R": R, "general": general, "summary": summary, "erank": statistics.fmean(eranks),
            "trainable_parameters": params[0], "steps": steps, "seconds": time.perf_counter() - start}


def table(rows: list[dict]) -> tuple[str, dict]:
    by = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    lines = ["| method | trainable params / task | learning acc. (LA) | ACC | forgetting | BWT | general retention | "
             "erank of the update |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    stats = {}
    for label, _, _ in COMPARATORS:
        rs = by.get(label, [])
        if not rs:
            continue
        col = {k: [r["summary"][k] for r in rs] for k in ("la", "acc", "forgetting", "bwt", "general_retention")}
        col["erank"] = [r["erank"] for r in rs]
        stats[label] = {k: statistics.fmean(v) for k, v in col.items()}
        lines.append(f"| {label} | {rs[0]['trainable_parameters']:,} | {mean_sd(col['la'])} | {mean_sd(col['acc'])} | "
                     f"{mean_sd(col['forgetting'])} | {mean_sd(col['bwt'])} | {mean_sd(col['general_retention'])} | "
                     f"{mean_sd(col['erank'])} |")
    return "\n".join(lines), stats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--render", action="store_true", help="only re-render the table from forgetting_study.json")
    args = p.parse_args()
    if args.render:
        saved = json.loads((OUT / "forgetting_study.json").read_text())
        rows, wall, command, where = saved["runs"], saved["wall_seconds"], saved["command"], saved["machine"]
        args.steps, args.seeds = rows[0]["steps"], ",".join(str(s) for s in sorted({r["seed"] for r in rows}))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        jobs = [(label, m, o, s, args.steps) for label, m, o in COMPARATORS for s in seeds]
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(one, jobs))
        wall = time.perf_counter() - start
        command = " ".join(["python", "bench/forgetting_study.py", *sys.argv[1:]])
        where = f"{machine().split(', threads')[0]}, {args.workers} worker processes of 1 thread"
    text, stats = table(rows)
    OUT.mkdir(exist_ok=True)
    (OUT / "forgetting_study.json").write_text(json.dumps(
        {"machine": where, "command": command, "wall_seconds": wall, "runs": rows, "means": stats}, indent=1))
    md = (f"# Forgetting study on digits-rotate\n\nProduced by `{command}` ({len(rows)} runs, {wall:.0f} s on "
          f"{where}; raw runs in forgetting_study.json).\n\nDefault digits-rotate stream (5 rotations, "
          f"{args.steps} steps per task, batch 64, each method's default learning rate), policy merge for every "
          f"adapter method, seeds {args.seeds}; mean ± standard deviation over seeds.\n\n{text}\n")
    path = OUT / "forgetting_study.md"
    if path.exists() and "\n## Reading" in path.read_text():   # keep the written reading of the numbers
        md += "\n## Reading" + path.read_text().split("\n## Reading", 1)[1]
    path.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
