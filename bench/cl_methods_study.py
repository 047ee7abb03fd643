"""The continual-learning methods side by side: digits-rotate and digits-split, 3 seeds each.

Every method of issue 5 (CoDyRA, EBLoRA, SLICE, O-LoRA, InfLoRA, SD-LoRA, replay and EWC) next to
LoRA, LoRA-GA and full fine-tuning, each with its default options and learning rate. LoRA, LoRA-GA
and SLICE use the ``merge`` policy (a fresh adapter per task, as CoDyRA and EBLoRA do by design);
EWC goes on LoRA with the ``single`` policy (with ``merge`` there is no adapter left to anchor)
and on full fine-tuning, with lambda = 1e3 (a sweep over 1e2 / 1e4 / 1e6 on 150-step runs: 1e4
already halves learning accuracy, 1e6 stops learning); replay keeps 250 examples (balanced).

Reported per method and stream (mean +- sd over seeds): final accuracy (ACC), average incremental
accuracy (AP), BWT, forgetting (Chaudhry), general-task retention, the Frobenius norm of the
cumulative update against W0 (mean over the 12 adapted linears) and its effective rank, and the
wall time of the whole run relative to LoRA's (training, task-boundary work and evaluation; the
workers share the machine alike). A third block runs LoRA, LoRA-GA and SLICE on digits-rotate
in its *adversarial* order (the permutation of the five rotations with the most opposed
consecutive gradients on the pre-trained backbone, `cldash order`), the setting in which SLICE
claims its gain; SLICE's logged conflict cosines are summarised per stream.

    python bench/cl_methods_study.py [--seeds 0,1,2] [--steps 200] [--workers 2] [--render]

Writes bench/results/cl_methods_study.md (tables, command, reading) and .json.
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

# label, method, method options, policy, run options (replay / EWC)
ROWS = [
    ("full fine-tuning", "full", {}, None, {}),
    ("LoRA (merge)", "lora", {}, "merge", {}),
    ("LoRA-GA (merge)", "loraga", {}, "merge", {}),
    ("CoDyRA", "codyra", {}, None, {}),
    ("EBLoRA", "eblora", {}, None, {}),
    ("EBLoRA without F (energy 1e-6)", "eblora", {"energy": 1e-6}, None, {}),
    ("SLICE (merge)", "slice", {}, "merge", {}),
    ("O-LoRA", "olora", {}, None, {}),
    ("InfLoRA", "inflora", {}, None, {}),
    ("SD-LoRA", "sdlora", {}, None, {}),
    ("LoRA (merge) + replay 250", "lora", {}, "merge", {"replay": 250}),
    ("full + replay 250", "full", {}, None, {"replay": 250}),
    ("LoRA (single) + EWC 1e3", "lora", {}, "single", {"ewc_lambda": 1e3}),
    ("full + EWC 1e3", "full", {}, None, {"ewc_lambda": 1e3}),
]
STREAMS = ["digits-rotate", "digits-split"]
ADVERSARIAL = ["LoRA (merge)", "LoRA-GA (merge)", "SLICE (merge)"]
KEYS = ("acc", "aia", "bwt", "forgetting", "general_retention")


def one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun
    from cldash.measures.spectra import analyze

    start = time.perf_counter()
    crun = ContinualRun(resolve({"method": job["method"], "method_options": job["options"], "policy": job["policy"],
                                 "stream": job["stream"], "stream_options": job["stream_options"], "seed": job["seed"],
                                 "steps_per_task": job["steps"], "eval_interval": 0, **job["run"]}))
    conflicts = []
    if job["method"] == "slice":
        original = crun.method.before_task

        def before_task(ctx):
            original(ctx)
            conflicts.extend(v for v in getattr(crun.method, "conflict", {}).values())
        crun.method.before_task = before_task
    summary = crun.run()
    R, general = crun.matrix()
    measures = [a.measures for a in analyze(crun.method.updates()).values()]
    return {**job, "R": R, "general": general, "summary": summary,
            "update_norm": statistics.fmean(m["frobenius"] for m in measures),
            "erank": statistics.fmean(m["erank"] for m in measures),
            "conflict_cos": conflicts, "seconds": time.perf_counter() - start}


def table(rows: list[dict], setting: str, labels: list[str]) -> tuple[str, dict]:
    by = {}
    for r in rows:
        if r["setting"] == setting:
            by.setdefault(r["label"], []).append(r)
    lora_s = statistics.fmean(r["seconds"] for r in by.get("LoRA (merge)", [])) if by.get("LoRA (merge)") else None
    lines = ["| method | ACC | AP | BWT | forgetting | general retention | ‖ΔW‖_F | erank(ΔW) | run time / LoRA |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    stats = {}
    for label in labels:
        rs = by.get(label, [])
        if not rs:
            continue
        col = {k: [r["summary"][k] for r in rs] for k in KEYS}
        col["update_norm"] = [r["update_norm"] for r in rs]
        col["erank"] = [r["erank"] for r in rs]
        secs = statistics.fmean(r["seconds"] for r in rs)
        stats[label] = {**{k: statistics.fmean(v) for k, v in col.items()}, "seconds": secs}
        ratio = f"{secs / lora_s:.2f}" if lora_s else "n/a"
        lines.append(f"| {label} | " + " | ".join(mean_sd(col[k]) for k in (*KEYS, "update_norm", "erank"))
                     + f" | {ratio} |")
    return "\n".join(lines), stats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--render", action="store_true", help="only re-render the tables from cl_methods_study.json")
    p.add_argument("--only", default="", help="run only these row labels (separated by ;) and merge them into the "
                                              "saved runs")
    args = p.parse_args()
    if args.render:
        saved = json.loads((OUT / "cl_methods_study.json").read_text())
        rows, wall, command, where, order = (saved["runs"], saved["wall_seconds"], saved["command"], saved["machine"],
                                             saved["adversarial"])
        args.steps, args.seeds = rows[0]["steps"], ",".join(str(s) for s in sorted({r["seed"] for r in rows}))
    else:
        from cldash.analysis.orders import measure

        seeds = [int(s) for s in args.seeds.split(",")]
        only = [x.strip() for x in args.only.split(";") if x.strip()]
        saved = json.loads((OUT / "cl_methods_study.json").read_text()) if only else None
        order = saved["adversarial"] if only else measure({"stream": "digits-rotate"})
        jobs = [{"label": label, "method": m, "options": o, "policy": pol, "run": run, "stream": stream,
                 "stream_options": {}, "setting": stream, "seed": s, "steps": args.steps}
                for stream in STREAMS for label, m, o, pol, run in ROWS for s in seeds]
        jobs += [{"label": label, "method": m, "options": o, "policy": pol, "run": run, "stream": "digits-rotate",
                  "stream_options": order["ordered_options"], "setting": "digits-rotate (adversarial order)",
                  "seed": s, "steps": args.steps}
                 for label, m, o, pol, run in ROWS if label in ADVERSARIAL for s in seeds]
        if only:
            jobs = [j for j in jobs if j["label"] in only]
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(one, jobs))
        wall = time.perf_counter() - start
        command = " ".join(["python", "bench/cl_methods_study.py", *sys.argv[1:]])
        if only:   # merged into the saved study: keep its command and wall time, add this one's
            rows = [r for r in saved["runs"] if r["label"] not in only] + rows
            command = f"{saved['command']}; then {command}"
            wall += saved["wall_seconds"]
        where = f"{machine().split(', threads')[0]}, {args.workers} worker processes of 1 thread"
    labels = [r[0] for r in ROWS]
    blocks, means = [], {}
    for setting in [*STREAMS, "digits-rotate (adversarial order)"]:
        text, stats = table(rows, setting, labels)
        means[setting] = stats
        blocks.append(f"## {setting}\n\n{text}\n")
    conflict = {}
    for setting in means:
        cs = [c for r in rows if r["setting"] == setting and r["method"] == "slice" for c in r["conflict_cos"]]
        if cs:
            conflict[setting] = {"mean": statistics.fmean(cs), "min": min(cs), "share_negative":
                                 sum(c < 0 for c in cs) / len(cs)}
    OUT.mkdir(exist_ok=True)
    (OUT / "cl_methods_study.json").write_text(json.dumps(
        {"machine": where, "command": command, "wall_seconds": wall, "adversarial": order, "runs": rows,
         "means": means, "slice_conflict": conflict}, indent=1))
    names = order["tasks"]
    conflict_lines = "\n".join(f"- {s}: mean cos(G_cur, G_rep) {c['mean']:+.3f}, min {c['min']:+.3f}, "
                               f"{100 * c['share_negative']:.0f} % of module-task pairs negative"
                               for s, c in conflict.items())
    md = (f"# Continual-learning methods on digits\n\nProduced by `{command}` ({len(rows)} runs, {wall:.0f} s on "
          f"{where}; raw runs in cl_methods_study.json).\n\nDefault streams (digits-rotate: 5 rotations; "
          f"digits-split: 5 class pairs, class-incremental), {args.steps} steps per task, batch 64, each method's "
          f"default learning rate and options, seeds {args.seeds}; mean ± standard deviation over seeds. "
          f"‖ΔW‖_F and erank are of the cumulative update against W0, averaged over the 12 adapted linears "
          f"(full fine-tuning's heads are not in it). Run time is the whole run's wall time over LoRA's in "
          f"the same setting.\n\nAdversarial order of digits-rotate (most opposed consecutive gradients on the "
          f"pre-trained backbone): {' → '.join(names[i] for i in order['order'])} (sum of consecutive cosines "
          f"{order['cost']:+.3f}, natural order {order['natural_cost']:+.3f}).\n\n"
          + "\n".join(blocks) + f"\nSLICE's gradient-conflict cosines at its task starts:\n\n{conflict_lines}\n")
    path = OUT / "cl_methods_study.md"
    if path.exists() and "\n## Reading" in path.read_text():   # keep the written reading of the numbers
        md += "\n## Reading" + path.read_text().split("\n## Reading", 1)[1]
    path.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
