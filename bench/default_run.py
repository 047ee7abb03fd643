"""Wall time of the default runs from the CLI, as a user types them (backbone already cached),
and of the one-off pre-training of the tiny ViT (empty cache).

    python bench/default_run.py [--repeats 3]
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


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "CLDASH_CACHE": str(tmp / "cache")}
    cli = [sys.executable, "-m", "cldash", "--db", str(tmp / "runs.db")]
    pretrain = timed(cli + ["run", "--method", "lora", "--steps-per-task", "1", "--quiet"], env)
    results = {}
    for method in ("lora", "full"):
        cmd = cli + ["run", "--method", method, "--stream", "digits-rotate", "--seed", "0", "--quiet"]
        results[method] = median([timed(cmd, env) for _ in range(args.repeats)])
    save("default_run", {
        "what": "cldash run --method M --stream digits-rotate --seed 0 (5 tasks x 300 steps, defaults), "
                "wall seconds including interpreter start, backbone cached",
        "seconds": {k: round(v, 1) for k, v in results.items()},
        "first_use_with_pretraining_seconds": round(pretrain, 1),
        "repeats": args.repeats})


if __name__ == "__main__":
    main()
