"""The run store's schema: one SQLAlchemy declarative model per table, and how values are kept in
their columns (JSON as text, times as seconds since the epoch, NaN as NULL).

Tables: ``runs`` (config, status, progress, pid, host, heartbeat, error, versions, device,
final metrics), ``tasks`` (positions 1..T for the stream, <= 0 for general tasks), ``modules``
(adapted layers), ``evaluations`` (step, trained-through task i, evaluated task j, metric,
value; ``final`` marks the rows of the accuracy matrix R, the others are "anytime" scores),
``scalars`` (loss, lr, method scalars, per module where it applies), ``spectra`` (per
module and kind, singular values as a float32 blob plus the shape measures), ``orders``
(gradient-conflict matrices and adversarial task orders, cldash.analysis.orders), ``tuning_log`` (the
operations of Optuna's tuning searches, cldash.analysis.tuning) and ``meta``.

The schema is versioned with Alembic (cldash.store.migrations): a change to these models is also a
new revision there, and opening an older store upgrades it (a SQLite file is backed up first).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACTIVE = ("queued", "running")                                 # runs.status of a run yet to end
ENDED = ("finished", "failed", "interrupted", "cancelled")      # ... and of one that has ended


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    launch_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    group_key: Mapped[str | None] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    method: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(500))      # hf: streams and backbones name paths
    backbone: Mapped[str] = mapped_column(String(500))
    policy: Mapped[str | None] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    task: Mapped[int] = mapped_column(Integer, default=0)
    num_tasks: Mapped[int] = mapped_column(Integer, default=0)
    primary_metric: Mapped[str] = mapped_column(String(64), default="accuracy")
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(64))
    versions: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    weights: Mapped[str | None] = mapped_column(Text)    # JSON: the backbone weights used (revision 0002)
    launcher: Mapped[str | None] = mapped_column(String(16))   # "cli" (foreground), "local" or "ray" (revision 0003)
    cancel_requested_at: Mapped[float | None] = mapped_column(Float)   # polled by the run at its flushes (0004)
    launcher_info: Mapped[str | None] = mapped_column(Text)   # JSON: the launcher's address, job, resources (0004)
    parent_id: Mapped[int | None] = mapped_column(Integer)         # a fork's parent run (0005)
    fork_task: Mapped[int | None] = mapped_column(Integer)         # ... and the task after which it branched
    resume_task: Mapped[int | None] = mapped_column(Integer)       # waiting to continue after this task
    checkpoint_task: Mapped[int | None] = mapped_column(Integer)   # the last task end checkpointed
    resumes: Mapped[int | None] = mapped_column(Integer)           # times resumed
    runtime: Mapped[str | None] = mapped_column(Text)    # JSON: precision, compile, data used (0006)
    artifacts: Mapped[str | None] = mapped_column(Text)  # where its checkpoints, adapters are if not the default (0008)
    priority: Mapped[int | None] = mapped_column(Integer)  # the local queue starts (priority, id) first (0009)


class TaskRow(Base):
    __tablename__ = "tasks"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    n_train: Mapped[int] = mapped_column(Integer, default=0)
    n_test: Mapped[int] = mapped_column(Integer, default=0)


class ModuleRow(Base):
    __tablename__ = "modules"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    layer: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(100))
    out_features: Mapped[int] = mapped_column(Integer)
    in_features: Mapped[int] = mapped_column(Integer)


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    trained_through: Mapped[int] = mapped_column(Integer)
    task: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    final: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (Index("ix_evaluations_run_step", "run_id", "step"),)


class Scalar(Base):
    __tablename__ = "scalars"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    module: Mapped[str] = mapped_column(String(300), default="")
    value: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_scalars_run_name_step", "run_id", "name", "step"),)


class Spectrum(Base):
    __tablename__ = "spectra"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    task: Mapped[int] = mapped_column(Integer)
    module: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))
    values: Mapped[bytes] = mapped_column(LargeBinary)
    n: Mapped[int] = mapped_column(Integer)
    numerical_rank: Mapped[int] = mapped_column(Integer)
    erank: Mapped[float | None] = mapped_column(Float)
    stable_rank: Mapped[float | None] = mapped_column(Float)
    top1_energy: Mapped[float | None] = mapped_column(Float)
    condition: Mapped[float | None] = mapped_column(Float)
    frobenius: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float | None] = mapped_column(Float)
    w0_energy: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (Index("ix_spectra_run_module_kind_step", "run_id", "module", "kind", "step"),
                      Index("ix_spectra_run_step", "run_id", "step"))


class OrderRow(Base):
    """A measured gradient-conflict matrix and the adversarial task order built from it (cldash.analysis.orders)."""
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream: Mapped[str] = mapped_column(String(500))
    backbone: Mapped[str] = mapped_column(String(500))
    config: Mapped[str] = mapped_column(Text)        # stream/backbone options, targets, batches, seed
    tasks: Mapped[str] = mapped_column(Text)         # JSON: task names in the configured order
    matrix: Mapped[str] = mapped_column(Text)        # JSON: T x T mean cosines
    order: Mapped[str] = mapped_column(Text)         # JSON: the adversarial permutation (0-based positions)
    cost: Mapped[float] = mapped_column(Float)
    natural_cost: Mapped[float] = mapped_column(Float)
    ordered_options: Mapped[str] = mapped_column(Text)   # JSON: stream options running that order
    created_at: Mapped[float] = mapped_column(Float)


class TuningLog(Base):
    """Optuna's journal of the tuning searches (cldash.analysis.tuning): one JSON operation per row, in the order
    they were written, so a search lives in the run store (SQLite or PostgreSQL) and survives restarts (0007)."""
    __tablename__ = "tuning_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    log: Mapped[str] = mapped_column(Text)


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


SPECTRUM_MEASURES = ("erank", "stable_rank", "top1_energy", "condition", "frobenius", "entropy", "w0_energy")


def _now() -> float:
    return time.time()


def _j(value: Any) -> str:
    return json.dumps(value, default=str)


def _nan_to_none(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v
