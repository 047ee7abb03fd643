"""The buffered writer of a run: its evaluations, scalars and spectra are kept in memory and written
in one short transaction per flush, so a run's process holds the store's write lock for milliseconds
at a time and several runs can write while the dashboard reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from cldash.store.schema import SPECTRUM_MEASURES, Evaluation, Run, Scalar, Spectrum, _nan_to_none, _now

# How often a run writes what it buffered (and its step): twice a second, so a page refreshing every 2 s sees
# the step move at every refresh. At 2 s the flushes and the refreshes beat, and a step stood still for 4 s
# (issue 15); a flush costs a few milliseconds (bench/progress_writes.py: no measurable change per step).
FLUSH_SECONDS = 0.5


class _Store(Protocol):
    """What a writer uses of its cldash.store.store.Store (not imported: that module imports this one)."""
    engine: Engine

    def _writing(self) -> AbstractContextManager[None]: ...


class RunWriter:
    """Buffers a run's rows and writes them in one short transaction per flush.

    Each flush also moves the heartbeat and progress of the run row, so a reader sees either
    everything up to a flush or nothing of it: a run killed between flushes leaves a
    consistent store. `clock` (seconds, monotonic) decides when a flush is `due`; tests give their own.
    """

    def __init__(self, store: _Store, run_id: int, flush_seconds: float = FLUSH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._last = clock()
        self._evals: list[dict] = []
        self._scalars: list[dict] = []
        self._spectra: list[dict] = []
        self.cancel_requested = False   # read back at every flush: a cancel asked for from any host

    def scalar(self, step: int, name: str, value: float, module: str = "") -> None:
        self._scalars.append({"run_id": self.run_id, "step": step, "name": name, "module": module,
                              "value": _nan_to_none(float(value))})

    def evaluation(self, step: int, trained_through: int, task: int, scores: dict[str, float], final: bool) -> None:
        for metric, value in scores.items():
            self._evals.append({"run_id": self.run_id, "step": step, "trained_through": trained_through,
                                "task": task, "metric": metric, "value": float(value), "final": final})

    def spectrum(self, step: int, task: int, module: str, kind: str, blob: bytes, n: int,
                 measures: dict[str, float]) -> None:
        row = {"run_id": self.run_id, "step": step, "task": task, "module": module, "kind": kind,
               "values": blob, "n": n, "numerical_rank": int(measures.get("numerical_rank", 0))}
        for key in SPECTRUM_MEASURES:
            row[key] = _nan_to_none(measures.get(key))
        self._spectra.append(row)

    def due(self) -> bool:
        return self.clock() - self._last >= self.flush_seconds

    def flush(self, **run_fields) -> None:
        run_fields["heartbeat_at"] = _now()
        with self.store._writing(), self.store.engine.begin() as conn:
            if self._evals:
                conn.execute(insert(Evaluation), self._evals)
            if self._scalars:
                conn.execute(insert(Scalar), self._scalars)
            if self._spectra:
                conn.execute(insert(Spectrum), self._spectra)
            conn.execute(update(Run).where(Run.id == self.run_id).values(**run_fields))
            # the cancel request rides on the flush's own transaction: no extra round trip to the store
            self.cancel_requested = conn.execute(select(Run.cancel_requested_at).where(
                Run.id == self.run_id)).scalar() is not None
        self._evals, self._scalars, self._spectra = [], [], []
        self._last = self.clock()
