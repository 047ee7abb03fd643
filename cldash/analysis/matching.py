"""When a stored run is the run a claim, a lesson or a tuning search asks for: one resolved configuration and one
match key, shared by cldash.analysis.claims, .lessons and .tuning."""

from __future__ import annotations

import copy
import functools
import json

from cldash.config import resolve
from cldash.core.errors import ConfigError

# configuration fields that do not change what a run learns: a stored run matches a claim's run whatever they are
# compile changes how fast, not what (its losses equal the plain run's: tests/engine/test_precision.py); eval_subset
# only thins the anytime scores, never the rows of R the claims read. precision does change the numbers: not here.
IGNORED = ("name", "device", "threads", "eval_interval", "spectra_interval", "dense_spectra_interval",
           "eval_batch_size", "regime", "checkpoints", "compile", "eval_subset")

@functools.lru_cache(maxsize=4096)
def _resolved(text: str) -> dict:
    """resolve() of a configuration given as JSON, cached: the claims' 200-odd configurations took about a
    second to resolve at every verdict, and the Claims page recomputes its verdicts every two seconds while
    runs are on their way (callers get a deep copy)."""
    return resolve(json.loads(text)).to_dict()


def resolved_config(values: dict) -> dict:
    """resolve() of a configuration, as the dict a run stores, from one cache that the claims and the lessons
    share; a deep copy, the caller's to change."""
    return copy.deepcopy(_resolved(json.dumps(values, sort_keys=True, default=str)))


def match_key(cfg: dict) -> str:
    """What two resolved configurations share when they ask for the same run of a claim or a lesson: every field
    but the seed and those that do not change what a run learns (IGNORED), as JSON."""
    return json.dumps({k: v for k, v in cfg.items() if k not in IGNORED and k != "seed"}, sort_keys=True, default=str)


@functools.lru_cache(maxsize=4096)
def stored_key(text: str) -> str | None:
    """The match key of a stored configuration, resolved again so that options added since it ran read as their
    defaults (None if it no longer resolves: a method or option that is gone)."""
    try:
        return match_key(_resolved(text))
    except ConfigError:
        return None
