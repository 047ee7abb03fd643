"""Time from a first run on an empty cache to its first training step: the shipped backbone
weights against pre-training on first use (every first run's path before cldash 0.2).

For each default stream (digits-rotate on vit-tiny, skills on gpt2-tiny), in one process and
alternating rounds, each variant gets a fresh, empty CLDASH_CACHE and a fresh SQLite store,
queues the stream's default run and executes it until its first optimizer step:

- ``shipped``: the default backbone options load the weights that ship with the package;
- ``pretrain``: the shipped folder is hidden, so the backbone is pre-trained and cached first.

Imports, and the lazy imports of a first run (the digits, transformers' model classes), are done
before timing by one untimed shipped run per stream: they are the same for both variants, and
`python -c "import cldash.engine"` is reported separately.

    python bench/first_step.py [--rounds 2] [--streams digits-rotate,skills]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save  # noqa: E402


class FirstStep(Exception):
    pass


def time_to_first_step(stream: str, hide_shipped: bool) -> float:
    from cldash.backbones import weights
    from cldash.config import resolve
    from cldash.engine import execute
    from cldash.store import Store

    folder = Path(tempfile.mkdtemp(prefix="cldash-first-step-"))
    os.environ["CLDASH_CACHE"] = str(folder / "cache")
    shipped_dir = weights.SHIPPED_DIR
    if hide_shipped:
        weights.SHIPPED_DIR = folder / "no-shipped-weights"
    seen: dict[str, float] = {}

    def progress(p):
        seen["t"] = time.perf_counter()
        raise FirstStep()

    try:
        start = time.perf_counter()
        store = Store(str(folder / "runs.db"))
        config = resolve({"method": "lora", "stream": stream}).to_dict()
        execute(store, store.create_run(config), progress=progress)
        return seen["t"] - start
    finally:
        weights.SHIPPED_DIR = shipped_dir


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--streams", default="digits-rotate,skills")
    args = p.parse_args()

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cldash.engine"], check=True)
    import_seconds = time.perf_counter() - start
    import cldash.engine  # noqa: F401 - imports out of the timed part

    results = {}
    for stream in args.streams.split(","):
        time_to_first_step(stream, hide_shipped=False)     # warm-up: one-off lazy imports
        times: dict[str, list[float]] = {"shipped": [], "pretrain": []}
        for r in range(args.rounds):      # alternating order, so drift hits both alike
            for name in ("shipped", "pretrain") if r % 2 == 0 else ("pretrain", "shipped"):
                times[name].append(time_to_first_step(stream, hide_shipped=name == "pretrain"))
        med = {k: median(v) for k, v in times.items()}
        results[stream] = {"seconds": times, "median": med, "pretrain / shipped": med["pretrain"] / med["shipped"]}
    save("first_step", {"rounds": args.rounds, "import_seconds": import_seconds, "streams": results})


if __name__ == "__main__":
    main()
