"""What writing a run's progress twice a second costs: the engine with the store's flush every 0.5 s (the
default since issue 15) against every 2 s (before), side by side in one process, alternating rounds.

Both variants train the same LoRA run on digits-rotate (5 tasks, `--steps` steps each, default spectra and
evaluations) into their own SQLite store. Reported: wall and CPU seconds per variant (medians), their ratios,
the number of flushes each made, and the median time of one flush.

    python bench/progress_writes.py [--steps 100] [--rounds 3]
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
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun
    from cldash.store import RunWriter, Store

    tmp = Path(tempfile.mkdtemp(prefix="cldash-progress-writes-"))
    variants = {"flush every 2 s": 2.0, "flush every 0.5 s": 0.5}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    flushes: dict[str, list[int]] = {k: [] for k in variants}
    flush_ms: dict[str, list[float]] = {k: [] for k in variants}
    flush_total: dict[str, list[float]] = {k: [] for k in variants}
    flush_max: dict[str, list[float]] = {k: [] for k in variants}

    class TimedWriter(RunWriter):
        def flush(self, **run_fields) -> None:
            start = time.perf_counter()
            super().flush(**run_fields)
            self.times.append(time.perf_counter() - start)

    warm = resolve({"method": "lora", "steps_per_task": 2})   # one-off lazy imports and first calls, untimed
    ContinualRun(warm).run()
    for r in range(args.rounds):
        for name in list(variants) if r % 2 == 0 else reversed(list(variants)):
            store = Store(str(tmp / f"{r}-{variants[name]}.db"))
            resolved = resolve({"method": "lora", "steps_per_task": args.steps, "seed": r})
            run_id = store.create_run(resolved.to_dict())
            writer = TimedWriter(store, run_id, flush_seconds=variants[name])
            writer.times = []
            w0, c0 = time.perf_counter(), time.process_time()
            ContinualRun(resolved, writer=writer).run()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            flushes[name].append(len(writer.times))
            flush_ms[name].append(1000 * median(writer.times))
            flush_total[name].append(sum(writer.times))
            flush_max[name].append(1000 * max(writer.times))
    med_wall = {k: median(v) for k, v in wall.items()}
    med_cpu = {k: median(v) for k, v in cpu.items()}
    save("progress_writes", {
        "what": f"lora on digits-rotate, 5 tasks x {args.steps} steps, default spectra and evaluations; the "
                "store's flush every 0.5 s against every 2 s",
        "wall_seconds": {k: round(v, 2) for k, v in med_wall.items()},
        "cpu_seconds": {k: round(v, 2) for k, v in med_cpu.items()},
        "ratio_wall_0.5s_over_2s": round(med_wall["flush every 0.5 s"] / med_wall["flush every 2 s"], 3),
        "ratio_cpu_0.5s_over_2s": round(med_cpu["flush every 0.5 s"] / med_cpu["flush every 2 s"], 3),
        "flushes_per_run": {k: median(v) for k, v in flushes.items()},
        "median_flush_ms": {k: round(median(v), 2) for k, v in flush_ms.items()},
        "seconds_in_flushes_per_run": {k: round(median(v), 3) for k, v in flush_total.items()},
        "slowest_flush_ms": {k: round(median(v), 1) for k, v in flush_max.items()},
        "rounds": args.rounds})


if __name__ == "__main__":
    main()
