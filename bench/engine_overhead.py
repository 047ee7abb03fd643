"""Our engine against a bare PyTorch loop doing the same work, and spectra logging on vs off.

Three variants train the same LoRA model through the default digits-rotate stream (5 tasks,
300 steps each, batch 64, every task scored every 50 steps), in alternating rounds in one
process:

- ``bare``: a hand-written loop: forward, loss, backward, AdamW step, the same evaluations;
  nothing stored;
- ``engine``: cldash's ContinualRun writing to a SQLite store (losses, learning rates, every
  evaluation, heartbeats), spectra only at task ends;
- ``engine+spectra``: the same with the default spectra interval (every 10 steps, every module,
  task and cumulative updates, shape measures).

    python bench/engine_overhead.py [--steps 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, median, save  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--method", default="lora")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun
    from cldash.methods.base import TaskContext
    from cldash.store import Store

    tmp = Path(tempfile.mkdtemp())
    base = {"method": args.method, "steps_per_task": args.steps, "device": args.device}

    def engine(spectra_interval: int):
        def fn():
            store = Store(str(tmp / f"bench-{spectra_interval}.db"))
            resolved = resolve({**base, "spectra_interval": spectra_interval,
                                "dense_spectra_interval": spectra_interval * 5})
            run_id = store.create_run(resolved.to_dict())
            crun = ContinualRun(resolved, writer=store.writer(run_id))
            fn.built = crun
            crun.run()
        return fn

    def bare():
        resolved = resolve({**base})
        crun = ContinualRun(resolved)           # the same model, stream and adapters, built the same way
        cfg, stream, model, method = resolved.config, crun.stream, crun.model, crun.method
        everything = stream.tasks + stream.general
        for t, task in enumerate(stream.tasks, start=1):
            gen = torch.Generator().manual_seed(t)
            method.before_task(TaskContext(t, len(stream.tasks), task.name, cfg.steps_per_task, model, None, None,
                                           crun.generator, crun.device))
            opt = torch.optim.AdamW(method.trainable_parameters(), lr=cfg.lr)
            batches = stream.batches(task, cfg.batch_size, gen)
            model.train()
            for s in range(1, cfg.steps_per_task + 1):
                b = next(batches)
                loss = F.cross_entropy(model(b.x, task.head), b.y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss.item()
                if s % cfg.eval_interval == 0 or s == cfg.steps_per_task:
                    model.eval()
                    with torch.no_grad():
                        for other in everything:
                            (model(other.test.x, other.head).argmax(-1) == other.test.y).float().mean().item()
                    model.train()

    fns = {"bare": bare, "engine": engine(0), "engine+spectra": engine(10)}
    t = interleaved(fns, args.rounds)
    med = {k: median(v) for k, v in t.items()}
    save(f"engine_overhead_{args.method}_{args.device}", {
        "what": f"{args.method} on digits-rotate, 5 tasks x {args.steps} steps, batch 64, eval every 50 steps",
        "seconds": {k: round(v, 2) for k, v in med.items()},
        "ratio_engine_over_bare": round(med["engine"] / med["bare"], 3),
        "ratio_spectra_on_over_off": round(med["engine+spectra"] / med["engine"], 3),
        "rounds": args.rounds})


if __name__ == "__main__":
    main()
