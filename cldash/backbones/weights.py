"""Pre-trained weights of the in-project backbones: shipped files and a checksummed cache.

Each in-project backbone (vit-tiny, gpt2-tiny) ships the weights of its default options as
package data: ``weights/NAME.safetensors`` with ``weights/NAME.json``, a record of the recipe,
the options, the transformers config, the scores, the file's sha256 and the versions that made
it. Loading them needs no training, and every machine gets the same bits, so the same cldash
version and seed give the same accuracy matrix everywhere. `cldash pretrain` makes and
refreshes those files with the project's own pre-training code.

Any other options are pre-trained on first use and cached in ``$CLDASH_CACHE/backbones`` in
the same form (safetensors + record), keyed by the options, the recipe and the transformers
major version. Every load checks the sha256: a truncated, empty or foreign cache file is
removed and rebuilt, with one line on stderr saying so.

Pre-training runs on one CPU thread, so that a machine rebuilds the same weights whatever the
thread count of the run that asked for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch
import transformers
from safetensors.torch import load_file, save_file

from cldash import __version__
from cldash.core.cache import cache_dir, cache_key, file_lock, sha256_file
from cldash.core.errors import UserError

SHIPPED_DIR = Path(__file__).parent / "weights"
FORMAT = "cldash-backbone-v1"
# The first transformers whose modules take the shipped files (pyproject's floor, tested with the same numbers bit for
# bit by .ci/floors.sh): 5.9 renamed ViT's modules (vit.layers.N.attention.q_proj, before it
# vit.encoder.layer.N.attention.attention.query), so an older one cannot load vit-tiny's state dict.
SHIPPED_NEEDS_TRANSFORMERS = "5.9"


class DamagedWeights(Exception):
    """A weights file that cannot be trusted (missing record, wrong checksum, unreadable)."""


@dataclass
class Weights:
    state_dict: dict[str, torch.Tensor]
    record: dict          # FORMAT, name, recipe, options, config, scores, sha256, versions, ...
    path: Path
    source: str           # "shipped" (package data) | "local" (pre-trained on this machine, cached)

    def summary(self) -> dict:
        """What a run records about the weights it used (runs.weights; `cldash show`, the dashboard)."""
        return {"source": self.source, "name": self.record.get("name"), "sha256": self.record.get("sha256"),
                "recipe": self.record.get("recipe"), "scores": self.record.get("scores", {}),
                "file": str(self.path), "made_with": self.record.get("versions", {})}


def record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def maker_versions() -> dict[str, str]:
    return {"cldash": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(), "machine": platform.machine()}


def write_weights(path: Path, state_dict: dict[str, torch.Tensor], record: dict) -> dict:
    """Save weights and their record atomically (the record, with the file's sha256, lands last)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    record = {**record, "format": FORMAT, "sha256": sha256_file(tmp)}
    tmp_record = tmp.with_name(tmp.name + ".json")
    tmp_record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    os.replace(tmp_record, record_path(path))
    return record


def read_weights(path: Path, source: str) -> Weights:
    """Weights whose record exists and whose sha256 matches it; else DamagedWeights with the reason."""
    rec_path = record_path(path)
    if not path.exists():
        raise DamagedWeights(f"{path.name} is missing")
    if not rec_path.exists():
        raise DamagedWeights(f"its record {rec_path.name} is missing")
    try:
        record = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        raise DamagedWeights(f"its record {rec_path.name} is not valid JSON") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DamagedWeights(f"{rec_path.name} is not a cldash backbone record")
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        size = path.stat().st_size
        raise DamagedWeights(f"its checksum does not match its record ({size} bytes; truncated or overwritten?)")
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise DamagedWeights(f"it cannot be read ({type(exc).__name__}: {exc})") from None
    return Weights(state, record, path, source)


def shipped(name: str, options, recipe: str) -> Weights | None:
    """The shipped weights of `name` if `options` and `recipe` are those they were made with."""
    path = SHIPPED_DIR / f"{name}.safetensors"
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    if record.get("recipe") != recipe or record.get("options") != dataclasses.asdict(options):
        return None
    try:
        return read_weights(path, "shipped")
    except DamagedWeights as exc:
        raise UserError(f"the shipped weights {path} are damaged: {exc}; reinstall cldash, or rebuild them with "
                        f"`cldash pretrain --backbone {name} --out {SHIPPED_DIR}`.") from None


@contextlib.contextmanager
def one_thread():
    """Pre-training on one CPU thread: the same weights whatever thread count the caller runs with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_path(name: str, options, recipe: str) -> Path:
    """The cache file of `name` pre-trained locally with `options` and `recipe`; the key holds
    transformers' major version, since the state dict's module names follow it."""
    key = {"options": dataclasses.asdict(options), "recipe": recipe,
           "transformers": transformers.__version__.split(".")[0]}
    return cache_dir() / "backbones" / f"{name}-{cache_key(key)}.safetensors"


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)


def cached(name: str, path: Path, build: Callable[[], tuple[dict, dict]]) -> Weights:
    """Weights from the cache file `path`, or built by ``build() -> (state_dict, record)`` under a
    lock and saved. A cache entry that fails its checks is removed and rebuilt, with one line on
    stderr saying so."""
    try:
        return read_weights(path, "local")
    except DamagedWeights:
        pass
    with file_lock(path.with_suffix(".lock")):
        try:   # another process may have built it while we waited
            return read_weights(path, "local")
        except DamagedWeights as exc:
            if path.exists() or record_path(path).exists():
                print(f"cldash: the cached {name} backbone {path} is damaged ({exc}); removed it and "
                      "pre-training it again.", file=sys.stderr)
                remove(path)
        state_dict, record = build()
        write_weights(path, state_dict, record)
    return read_weights(path, "local")


def make_record(name: str, options, recipe: str, config: dict, scores: dict, seconds: float) -> dict:
    return {"name": name, "recipe": recipe, "options": dataclasses.asdict(options), "config": config,
            "scores": scores, "seconds": round(seconds, 2), "threads": 1, "versions": maker_versions(),
            "made_on": datetime.date.today().isoformat()}
