"""Wall time of the default `skills` runs from the CLI, as a user types them (backbone cached), and of
the one-off pre-training of the tiny GPT-2 (empty cache).

    python bench/skills_run.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save  # noqa: E402
from default_run import timed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "CLDASH_CACHE": str(tmp / "cache")}
    cli = [sys.executable, "-m", "cldash", "--db", str(tmp / "runs.db")]
    pretrain = timed(cli + ["run", "--method", "lora", "--stream", "skills", "--steps-per-task", "1", "--quiet"], env)
    results = {}
    for method in ("lora", "full"):
        cmd = cli + ["run", "--method", method, "--stream", "skills", "--seed", "0", "--quiet"]
        results[method] = median([timed(cmd, env) for _ in range(args.repeats)])
    meta = {}
    for path in (tmp / "cache" / "backbones").glob("gpt2-tiny-*.pt"):
        meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
    save("skills_run", {
        "what": "cldash run --method M --stream skills --seed 0 (4 skills x 300 steps, defaults), wall seconds "
                "including interpreter start, backbone cached",
        "seconds": {k: round(v, 1) for k, v in results.items()},
        "first_use_with_pretraining_seconds": round(pretrain, 1),
        "pretraining": {k: round(v, 3) if isinstance(v, float) else v for k, v in meta.items()},
        "threads": os.environ.get("OMP_NUM_THREADS", "default"), "repeats": args.repeats})


if __name__ == "__main__":
    main()
