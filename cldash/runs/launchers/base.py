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

Launchers are registered by name like the methods: a module that implements `Launcher` and carries
`@register_launcher`; `parse` and `for_run` find it in `LAUNCHERS`, so nothing else names it. A run
row records its launcher's name (``runs.launcher``) and what it needs to find the run again
(``runs.launcher_info``: a Ray cluster's address and the job's id), so any process that opens the
store (the dashboard, a CLI on another machine) can cancel it, read its logs and reconcile it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Protocol

from cldash.core.errors import UserError


@dataclass(frozen=True)
class Resources:
    """What one run asks its launcher for. GPUs may be fractional (0.125: eight tiny runs share a GPU);
    the run's CPU threads follow its CPUs."""

    cpus: float = 1.0
    gpus: float = 0.0

    def check(self) -> Resources:
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


class Launcher(Protocol):
    """What every launcher implements (cldash.runs.launchers.local is the smallest one)."""

    name: ClassVar[str]
    spec_help: ClassVar[str]   # how a user names it, for the sentence that answers an unknown one
    title: ClassVar[str]       # what it runs on, in words (the Launch page's choice, `cldash sweep`'s line)

    @classmethod
    def suggested_spec(cls) -> str:
        """What the Launch page's field offers before the user writes one."""

    @classmethod
    def from_spec(cls, spec: str) -> Launcher | None:
        """This launcher, if `spec` (what a user wrote after --launcher) names it; else None."""

    @classmethod
    def for_info(cls, info: dict) -> Launcher:
        """This launcher again, from what a run row recorded of it (`info` returned)."""

    def info(self, resources: Resources) -> dict: ...

    def check_store(self, url: str) -> None: ...

    def default_gpus(self, backbones: list[str]) -> float: ...

    def submit(self, store, runs: list[dict], resources: Resources | None = None) -> list[int]: ...

    def cancel(self, store, run: dict, timeout: float = 2.0) -> None: ...

    def status(self, store, run: dict) -> JobState: ...

    def logs(self, store, run: dict, tail: int = 200) -> str: ...

    def resources(self, store=None) -> dict: ...


LAUNCHERS: dict[str, type[Launcher]] = {}
LOCAL = "local"
FOREGROUND = "cli"   # a foreground `cldash run` records this launcher: its own process runs it, on this machine


def register_launcher(name: str):
    """Class decorator: `@register_launcher("ray")` makes a launcher known to `parse` and `for_run`."""
    def add(cls):
        cls.name = name
        LAUNCHERS[name] = cls
        return cls
    return add


def is_local(name: str | None) -> bool:
    """Whether runs recorded with launcher `name` run on this machine's queue (older rows have none)."""
    return name in (None, LOCAL, FOREGROUND)


def parse(spec: str | None) -> Launcher:
    """A launcher from what a user writes (the default: the local one); one sentence for an unknown one."""
    text = (spec or LOCAL).strip()
    for cls in LAUNCHERS.values():
        launcher = cls.from_spec(text)
        if launcher is not None:
            return launcher
    forms = ", or ".join(cls.spec_help for cls in LAUNCHERS.values())
    raise UserError(f"unknown launcher {text!r}; use {forms}.")


def for_run(run: dict) -> Launcher:
    """The launcher that started a stored run (older rows and foreground runs: the local one)."""
    name = run.get("launcher") or LOCAL
    cls = LAUNCHERS.get(LOCAL if name == FOREGROUND else name)
    if cls is None:
        raise UserError(f"run {run['id']} was started by launcher {name!r}, which this cldash does not know.")
    return cls.for_info(run.get("launcher_info") or {})


def logs(store, run: dict, tail: int = 200) -> str:
    """The last `tail` lines of a run's output, from wherever it ran (one sentence when there are none)."""
    return for_run(run).logs(store, run, tail)
