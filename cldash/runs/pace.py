"""How long queued runs will take on this machine: the pace of the runs this store finished here, or the shipped
claims study's where it has none, times the steps the runs will train, over the runs that go at once.

`estimate(store, configs)` is what the Claims page's confirmation and `cldash claims --launch` say before they queue
a batch ("150 runs, about 1 h 10 min on this machine, 2 at a time"). It is a forecast, not a promise: a run's pace
depends on its method, backbone and evaluation, and the estimate takes one pace for all of them.
"""

from __future__ import annotations

import socket
import statistics
from dataclasses import dataclass

from cldash.runs.processes import max_concurrent

# The shipped claims study (bench/claims_study.py, 2026-12-07; 1,010 runs of vit-tiny on digits, 500 steps each, two
# at a time on 2 CPU cores): the median run trained at 0.0236 s a step from its start to its end, and the study took
# 8,323 s, 16.5 s a run a slot, of which 11.8 s were its steps: the 4.7 s left are a run process's start (Python,
# torch, the data) before its first step.
STUDY_SECONDS_PER_STEP = 0.0236
START_SECONDS = 4.7
NEWEST = 50            # the finished runs whose pace counts: the newest, this machine's ...
MIN_STEPS = 100        # ... of at least this many steps: a 10-step run is mostly its evaluations (0.21 s a step)
DEFAULT_TASKS = 5      # the built-in streams' default number of tasks


@dataclass(frozen=True)
class Estimate:
    runs: int
    steps: int            # optimizer steps of all the runs together
    seconds: float        # wall time on this machine, `at_once` runs at a time
    at_once: int
    per_step: float       # seconds a step of one run
    source: str           # where `per_step` comes from, in words

    def text(self) -> str:
        """ "150 runs (225,000 steps), about 1 h 10 min on this machine, 2 at a time" """
        return (f"{self.runs} run{'s' * (self.runs != 1)} ({self.steps:,} steps), about {duration(self.seconds)} on "
                f"this machine, {self.at_once} at a time")


def duration(seconds: float) -> str:
    """A forecast's length in words, rounded as a forecast should be: "40 s", "12 min", "2 h 10 min"."""
    if seconds < 10:
        return f"{max(1, round(seconds))} s"
    if seconds < 90:
        return f"{round(seconds / 10) * 10} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def pace(store, runs: list[dict] | None = None) -> tuple[float, str]:
    """Seconds a step of one run, with where it comes from: the median over the newest finished runs of this
    machine in the store (or in `runs`, the store's rows read already) of at least MIN_STEPS steps (each one's time
    from its start to its end over its steps), else the shipped study's."""
    host = socket.gethostname()
    done = [r for r in (store.runs(status=["finished"]) if runs is None else runs) if r["status"] == "finished"
            and r["host"] == host and r["started_at"] and r["finished_at"]
            and (r["total_steps"] or 0) >= MIN_STEPS][-NEWEST:]
    if not done:
        return STUDY_SECONDS_PER_STEP, (f"the shipped claims study's pace ({STUDY_SECONDS_PER_STEP:g} s a step on 2 "
                                        f"CPU cores); this store has no finished run of this machine of {MIN_STEPS} "
                                        "steps or more yet")
    per_step = statistics.median((r["finished_at"] - r["started_at"]) / r["total_steps"] for r in done)
    return per_step, (f"the pace of the {len(done)} newest finished run{'s' * (len(done) != 1)} of this machine in "
                      f"this store ({per_step:.3g} s a step)")


def tasks_of(config: dict, stored: dict[str, int]) -> int:
    """How many tasks a configuration trains: its stream options' angles or tasks, else a stored run's count for its
    stream, else the built-in streams' default."""
    options = config.get("stream_options") or {}
    if options.get("angles"):
        return len(options["angles"])
    if isinstance(options.get("tasks"), int):
        return options["tasks"]
    return stored.get(config["stream"], DEFAULT_TASKS)


def estimate(store, configs: list[dict]) -> Estimate:
    """The forecast for running `configs` (resolved run configurations) in this store's local queue."""
    runs = store.runs()   # one read for the pace and the streams' task counts
    per_step, source = pace(store, runs)
    stored = {r["stream"]: r["num_tasks"] for r in runs if r["num_tasks"]}
    steps = [int(c["steps_per_task"]) * tasks_of(c, stored) for c in configs]
    at_once = max(1, min(max_concurrent(store), len(configs) or 1))
    seconds = (sum(steps) * per_step + START_SECONDS * len(configs)) / at_once
    return Estimate(len(configs), sum(steps), seconds, at_once, per_step, source)
