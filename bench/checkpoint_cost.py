"""What task-end checkpoints cost: a run with checkpoints (the default, the latest kept) against the same run
without (``checkpoints: none``), side by side in one process, alternating rounds; the ratio of the medians
of the time per task, the time spent writing checkpoints (and its share of the run's time: the cost
measured directly, since on a shared 2-core machine the time per task moves by more than the cost from
run to run), and a checkpoint's size.

    python bench/checkpoint_cost.py [--method lora] [--steps 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="lora")
    p.add_argument("--steps", type=int, default=300, help="steps per task (5 tasks of digits-rotate)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replay", type=int, default=0, help="a replay buffer, which the checkpoint holds too")
    args = p.parse_args()

    from cldash.config import resolve
    from cldash.engine import checkpoints
    from cldash.runs.execute import execute
    from cldash.store import Store

    store = Store(str(Path(tempfile.mkdtemp()) / "ckpt.db"))
    writes: list[float] = []
    real_save = checkpoints.save

    def timed_save(*a, **k):
        start = time.perf_counter()
        out = real_save(*a, **k)
        writes.append(time.perf_counter() - start)
        return out

    checkpoints.save = timed_save
    times = {"latest": [], "none": []}
    sizes = []
    for r in range(args.rounds):
        for mode in ("latest", "none") if r % 2 == 0 else ("none", "latest"):
            cfg = resolve({"method": args.method, "steps_per_task": args.steps, "checkpoints": mode,
                           "replay": args.replay}).to_dict()
            rid = store.create_run(cfg)
            start = time.perf_counter()
            assert execute(store, rid) == "finished"
            times[mode].append((time.perf_counter() - start) / 5)
            if mode == "latest":
                sizes.append(Path(checkpoints.path(store, rid, checkpoints.available(store, rid)[-1])).stat().st_size)
            print(f"round {r}: {mode} {times[mode][-1]:.2f} s a task", flush=True)
    with_, without = median(times["latest"]), median(times["none"])
    result = {"what": f"{args.method} on digits-rotate, 5 tasks x {args.steps} steps, batch 64, one thread"
                      + (f", replay {args.replay}" if args.replay else "") + "; checkpoints after tasks 1-4",
              "seconds_per_task": {"latest": round(with_, 3), "none": round(without, 3)},
              "ratio_with_over_without": round(with_ / without, 4),
              "checkpoint_write_ms": round(1000 * median(writes), 1),
              # the cost measured directly, free of the run-to-run noise of the ratio: 4 writes in 5 tasks
              "write_share_of_run_time": round(4 * median(writes) / (5 * with_), 5),
              "checkpoint_kib": round(median(sizes) / 1024, 1), "rounds": args.rounds,
              "date": time.strftime("%Y-%m-%d")}
    save(f"checkpoint_cost_{args.method}" + (f"_replay{args.replay}" if args.replay else ""), result)


if __name__ == "__main__":
    main()
