"""Dashboard load times on a large store: what the Compare page loads for 50 runs, what the
Spectra page loads for a 10k-step run, and a Live refresh at the end of that run, each against
the naive way of getting the same data (ratios in one process, medians of alternating rounds).

The store is filled through the engine's own writer with rows of real sizes (5 tasks x 300 steps
per run for the 50 runs; 10,000 steps with spectra every 10 steps for the long run; 12 modules,
two update kinds); the values are synthetic because only their number matters here.

    python bench/dashboard_load.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, median, save  # noqa: E402

MODULES = [f"vit.layers.{layer}.{part}" for layer in (0, 1) for part in
           ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1", "mlp.fc2")]


def fill(store, steps_per_task: int, tasks: int, spectra_every: int, eval_every: int) -> int:
    from cldash.config import resolve
    from cldash.measures.spectra import pack

    cfg = resolve({"method": "lora", "steps_per_task": steps_per_task,
                   "stream_options": {"angles": [36.0 * (t + 1) for t in range(tasks)]}}).to_dict()
    rid = store.create_run(cfg, status="finished")
    store.write_structure(rid, [{"position": t + 1, "name": f"task {t + 1}", "kind": "stream"} for t in range(tasks)]
                          + [{"position": 0, "name": "general", "kind": "general"}],
                          [{"name": m, "layer": int(m.split(".")[2]), "kind": m.rsplit(".", 1)[-1],
                            "out_features": 64, "in_features": 64} for m in MODULES])
    rng = np.random.default_rng(rid)
    w = store.writer(rid)
    positions = list(range(1, tasks + 1)) + [0]
    for pos in positions:
        w.evaluation(0, 0, pos, {"accuracy": float(rng.random())}, True)
    step = 0
    for t in range(1, tasks + 1):
        for s in range(1, steps_per_task + 1):
            step += 1
            w.scalar(step, "loss", float(rng.random()))
            w.scalar(step, "lr", 5e-3)
            if s % spectra_every == 0 or s == steps_per_task:
                sigma = np.sort(rng.random(8))[::-1]
                for m in MODULES:
                    for kind in ("cumulative", "task"):
                        w.spectrum(step, t, m, kind, pack(sigma), 8, {"erank": 5.0, "frobenius": 1.0,
                                                                       "numerical_rank": 8})
                    w.scalar(step, "lora_A_norm", 1.0, m)
            if s % eval_every == 0 or s == steps_per_task:
                for pos in positions:
                    w.evaluation(step, t, pos, {"accuracy": float(rng.random())}, s == steps_per_task)
        w.flush(step=step, num_tasks=tasks, total_steps=step, progress=1.0)
    return rid


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args()

    from cldash.dashboard.figures import accuracy_matrix_figure, spectrum_heatmap
    from cldash.dashboard.views import LiveCache, compare_data
    from cldash.store import Store

    tmp = Path(tempfile.mkdtemp())
    store = Store(str(tmp / "big.db"))
    ids = [fill(store, 300, 5, 10, 50) for _ in range(args.runs)]
    long_run = fill(store, 2000, 5, 10, 50)     # 10,000 steps
    module = MODULES[0]

    def compare_batched():
        data = compare_data(store, ids)
        for rid in ids:
            accuracy_matrix_figure(data.matrices[rid])

    def compare_naive():            # one run at a time, every evaluation row (anytime ones included)
        for rid in ids:
            store.get_run(rid)
            ev = store.evaluations(rid)
            ev = ev[ev.final]
            accuracy_matrix_figure(store.accuracy_matrix(rid))

    def spectra_page():             # one module, one kind, downsampled heatmap
        spectrum_heatmap(store.spectra(long_run, module=module, kind="cumulative"))

    def spectra_naive():            # every spectrum of the run, every step drawn
        df = store.spectra(long_run)
        df = df[(df.module == module) & (df.kind == "cumulative")]
        spectrum_heatmap(df, max_columns=10**9)

    cache = LiveCache(long_run).update(store)

    def live_incremental():         # a refresh once everything has been seen: only newer rows
        cache.update(store)

    def live_full():
        store.scalars(long_run, names=["loss"])
        store.evaluations(long_run)

    t = interleaved({"compare_batched": compare_batched, "compare_naive": compare_naive,
                     "spectra_page": spectra_page, "spectra_naive": spectra_naive,
                     "live_incremental": live_incremental, "live_full": live_full}, args.rounds)
    ms = {k: round(1000 * median(v), 1) for k, v in t.items()}
    save("dashboard_load", {
        "what": f"{args.runs} stored runs of 5 x 300 steps; one run of 10,000 steps (spectra every 10 steps, "
                "12 modules, 2 kinds)",
        "ms": ms,
        "ratio_compare_batched_over_naive": round(ms["compare_batched"] / ms["compare_naive"], 3),
        "ratio_spectra_page_over_naive": round(ms["spectra_page"] / ms["spectra_naive"], 3),
        "ratio_live_incremental_over_full": round(ms["live_incremental"] / ms["live_full"], 3),
        "store_mb": round((tmp / "big.db").stat().st_size / 2**20, 1), "rounds": args.rounds})


if __name__ == "__main__":
    main()
