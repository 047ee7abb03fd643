"""Launchers: where a run's process runs, behind one interface.

A launcher starts the same run process everywhere (``python -m cldash execute RUN_ID``, which claims
its queued row and writes straight to the store), and answers five questions about it:

- ``submit(store, runs, resources)``: start (or hand to the cluster) these queued runs;
- ``cancel(store, run)``: the launcher's own stop (a signal to the local process group; Ray's stop of
  the job). It comes on top of the cancel request recorded on the run row (cldash.runs.launch.cancel),
  which the run polls at every flush, so a run stops even when one of the two cannot reach it;
- ``status(store, run)``: what the launcher knows of the run's process (`JobState`), which reconcile
  weighs with the heartbeat;
- ``logs(store, run, tail)``: the run's output, wherever it ran;
- ``resources()``: what the launcher can run on (nodes, CPUs, GPUs).

Launchers are registered by name like the methods (`LAUNCHERS`). A run row records its launcher's
name (``runs.launcher``) and what it needs to find the run again (``runs.launcher_info``: a Ray
cluster's address and the job's id), so any process that opens the store (the dashboard, a CLI on
another machine) can cancel it, read its logs and reconcile it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cldash.core.errors import UserError


@dataclass(frozen=True)
class Resources:
    """What one run asks its launcher for. GPUs may be fractional (0.125: eight tiny runs share a GPU);
    the run's CPU threads follow its CPUs."""

    cpus: float = 1.0
    gpus: float = 0.0

    def check(self) -> "Resources":
        if not 0 < self.cpus <= 1024:
            raise UserError(f"CPUs per run must be more than 0 and at most 1024 (got {self.cpus:g}).")
        if not 0 <= self.gpus <= 64:
            raise UserError(f"GPUs per run must be between 0 and 64 (got {self.gpus:g}); a share such as "
                            "0.125 lets eight runs share one GPU.")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise UserError(f"GPUs per run above 1 must be a whole number (got {self.gpus:g}).")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class JobState:
    """What a launcher knows of a run's process: ``pending`` (not started yet), ``running``, ``ended``
    (with the launcher's message: an exit code, a stop), ``missing`` (the launcher has no such job) or
    ``unknown`` (the launcher cannot be asked now, or cannot tell: a local run on another host)."""

    state: str
    message: str = ""


def _registry() -> dict:
    from cldash.runs.launchers.local import LocalLauncher
    from cldash.runs.launchers.ray_jobs import RayLauncher

    return {"local": LocalLauncher, "ray": RayLauncher}


LAUNCHER_NAMES = ("local", "ray")


def parse(spec: str | None):
    """A launcher from what a user writes: ``local`` (the default), ``ray://HEAD:10001`` (a Ray Client
    address), ``http://HEAD:8265`` (a Ray dashboard address), or ``ray`` (the cluster named by RAY_ADDRESS,
    else the local one)."""
    text = (spec or "local").strip()
    if text == "local":
        return _registry()["local"]()
    if text == "ray" or text.startswith(("ray://", "http://", "https://")):
        return _registry()["ray"](None if text == "ray" else text)
    raise UserError(f"unknown launcher {text!r}; use local, or a Ray cluster's address: ray://HEAD:10001 or "
                    "http://HEAD:8265.")


def for_run(run: dict):
    """The launcher that started a stored run (older rows and foreground runs: the local one)."""
    name = run.get("launcher") or "local"
    if name in ("cli", "local"):
        return _registry()["local"]()
    if name == "ray":
        return _registry()["ray"]((run.get("launcher_info") or {}).get("address"))
    raise UserError(f"run {run['id']} was started by launcher {name!r}, which this cldash does not know.")


def logs(store, run: dict, tail: int = 200) -> str:
    """The last `tail` lines of a run's output, from wherever it ran (one sentence when there are none)."""
    return for_run(run).logs(store, run, tail)
