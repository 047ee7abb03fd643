"""The quick demo and the full comparison: every method's defaults side by side on rotated digits, one click.

`launch_demo` queues them as one group (the same key launches once); `demo_line` is one run's progress in a
line, for `cldash demo`.
"""

from __future__ import annotations

from cldash.config import RunConfig, describe_run, resolve
from cldash.core.text import printable
from cldash.runs.launch import launch
from cldash.store import Store

DEMO_STREAM = "digits-rotate"


# The quick demo: LoRA, full fine-tuning, and two that forget differently: EBLoRA balances its update's spectrum
# and forgets about half as much as LoRA on this stream (0.38 against 0.79, measured at this length); PiSSA trains
# the pre-trained weight's top directions, the ones the model relies on most. Three rotations of 100 steps each:
# the four runs finish in well under 90 s on 2 CPU cores, two at a time (QUICK_DEMO_TIME).
QUICK_DEMO_METHODS = ("lora", "full", "eblora", "pissa")


QUICK_DEMO_RUN = {"steps_per_task": 100, "stream_options": {"angles": [60.0, 120.0, 180.0]}}


# wall times on 2 CPU cores, two runs at once (the default), shown on the welcome page: `cldash demo` took 28 s
# (its start included) and `cldash demo --full` 6 min 51 s on 2026-12-02 on the reference machine's otherwise idle
# 2 cores; with the cores shared by other work (load average 6 to 7) the quick one took 76 s from launch_demo
QUICK_DEMO_TIME = "about 30 s"


FULL_DEMO_TIME = "about 7 minutes"


def demo_configs(seed: int = 0, full: bool = False) -> list[dict]:
    """The demo comparison on digits-rotate with every method's defaults (one seed). The quick one
    (`QUICK_DEMO_METHODS` on a shortened stream, under 90 s on 2 CPU cores), or with `full` LoRA, full
    fine-tuning and every other registered method on the whole stream (FULL_DEMO_TIME)."""
    from cldash.methods import REGISTRY  # deferred: cldash.methods imports torch

    if not full:
        return [resolve({"method": name, "stream": DEMO_STREAM, "seed": seed, **QUICK_DEMO_RUN}).to_dict()
                for name in QUICK_DEMO_METHODS]
    order = ["lora", "full"] + sorted(n for n in REGISTRY if n not in ("lora", "full"))
    return [resolve({"method": name, "stream": DEMO_STREAM, "seed": seed}).to_dict() for name in order]


def launch_demo(store: Store, launch_key: str = "demo", full: bool = False) -> list[int]:
    """Queue the demo (the quick one, or with `full` every method) as group `launch_key` (`launch_key`-full for
    the full one); the same key launches once."""
    configs = demo_configs(full=full)
    key = f"{launch_key}-full" if full else launch_key
    names = [describe_run(RunConfig(**c)) for c in configs]
    return launch(store, configs, [f"{key}:{c['method']}" for c in configs], group_key=key, names=names)


def demo_line(run: dict) -> str:
    """One run's progress in a line: '#3 lora r=8 · task 2/3 · step 150/300 [#####.....] 50 % running'."""
    total = run["total_steps"] if run["num_tasks"] else 0   # known once the run has built its stream
    share = 1.0 if run["status"] == "finished" else float(run["progress"] or 0.0)
    bar = "#" * round(10 * share) + "." * (10 - round(10 * share))
    where = f"task {run['task'] or 0}/{run['num_tasks']}" if run["num_tasks"] else "task -"
    steps = f"step {run['step'] or 0}/{total}" if total else "step -"
    label = printable(run["name"] or run["method"]).split(" · ")[0]
    return f"#{run['id']:<3} {label:<18} {where:<9} {steps:<14} [{bar}] {100 * share:3.0f} % {run['status']}"


