"""Time from a first run on an empty cache to its first training step: the shipped backbone
weights against pre-training on first use (every first run's path before cldash 0.2).

For each default stream (digits-rotate on vit-tiny, skills on gpt2-tiny), in one process and
alternating rounds, each variant gets a fresh, empty CLDASH_CACHE and a fresh SQLite store,
queues the stream's default run and executes it until its first optimizer step:

- ``shipped``: the default backbone options load the weights that ship with the package;
- ``pretrain``: the shipped folder is hidden, so the backbone is pre-trained and cached first.

Imports, and the lazy imports of a first run (the digits, transformers' model classes), are done
before timing by one untimed shipped run per stream: they are the same for both variants, and
`python -c "import cldash.engine"` is reported separately.

    python bench/first_step.py [--rounds 2] [--streams digits-rotate,skills]

``--launched`` measures instead where a launched run's time goes before its first step, on the shipped
weights (results/first_step_launched[_LABEL].json), in two ways per round, each on a fresh store:

- ``visible``: `cldash.runs.launch.launch` as the dashboard calls it (the real `python -m cldash execute` process),
  then the store polled every 20 ms: when the run shows "running", and when its stored step is above 0 (what
  a page can show);
- ``phases``: the same process started by hand with a timestamp, wall and CPU, at every phase of `cldash
  execute` (interpreter, imports, store open, claim, config, versions, backbone, data, model and method,
  row-0 evaluation, first step). CPU seconds are what the phases cost on an idle machine; on a loaded one
  the wall time is longer by the wait for a core (the machine's load average is recorded).

    python bench/first_step.py --launched [--rounds 3] [--label after]
    cd OLD_TREE && PYTHONPATH=$PWD python NEW_TREE/bench/first_step.py --launched --label before
    # another cldash, the same bench: run from its folder, since `python -m cldash` puts the folder first
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class FirstStep(Exception):
    pass


def time_to_first_step(stream: str, hide_shipped: bool) -> float:
    from cldash.backbones import weights
    from cldash.config import resolve
    from cldash.runs.execute import execute
    from cldash.store import Store

    folder = Path(tempfile.mkdtemp(prefix="cldash-first-step-"))
    os.environ["CLDASH_CACHE"] = str(folder / "cache")
    shipped_dir = weights.SHIPPED_DIR
    if hide_shipped:
        weights.SHIPPED_DIR = folder / "no-shipped-weights"
    seen: dict[str, float] = {}

    def progress(p):
        seen["t"] = time.perf_counter()
        raise FirstStep()

    try:
        start = time.perf_counter()
        store = Store(str(folder / "runs.db"))
        config = resolve({"method": "lora", "stream": stream}).to_dict()
        execute(store, store.create_run(config), progress=progress)
        return seen["t"] - start
    finally:
        weights.SHIPPED_DIR = shipped_dir


PHASES = ("python start", "import cldash.cli", "import torch", "import cldash.engine (rest)", "store open",
          "claim (shows running)", "resolve config", "versions()", "backbone load", "stream (data)",
          "model, method attach, W0 basis", "row-0 evaluation", "first step")


def phases_child(run_id: str) -> None:
    """Run `cldash execute RUN_ID` with a mark at each phase; print them as one JSON line and stop at the first
    step (the run ends as interrupted there)."""
    import json

    t_spawn = float(os.environ["FIRST_STEP_SPAWNED_AT"])
    marks = [("python start", time.time(), time.process_time())]

    def mark(name):
        marks.append((name, time.time(), time.process_time()))

    import cldash.cli as cli
    import cldash.cli.run  # noqa: F401 - the command module whose progress lines are timed
    mark("import cldash.cli")
    import torch  # noqa: F401
    mark("import torch")
    import dataclasses

    import cldash.backbones as B
    import cldash.engine.assembly as A
    import cldash.engine.evaluation as V
    import cldash.runs.execute as X
    import cldash.store as S
    mark("import cldash.engine (rest)")

    def after(owner, attr, name):
        orig, done = getattr(owner, attr), []

        def wrapped(*a, **k):
            out = orig(*a, **k)
            if not done:
                done.append(mark(name))
            return out
        setattr(owner, attr, wrapped)

    def before(owner, attr, name):
        orig, done = getattr(owner, attr), []

        def wrapped(*a, **k):
            if not done:
                done.append(mark(name))
            return orig(*a, **k)
        setattr(owner, attr, wrapped)

    after(S.Store, "__init__", "store open")
    after(S.Store, "claim", "claim (shows running)")
    after(X, "resolve", "resolve config")
    after(X, "versions", "versions()")
    for key, entry in list(B.BACKBONES.items()):
        def load(o, load=entry.load):
            out = load(o)
            mark("backbone load")
            return out
        B.BACKBONES[key] = dataclasses.replace(entry, load=load)
    before(A, "task_model", "stream (data)")
    before(V.TaskScores, "evaluate", "model, method attach, W0 basis")
    after(V.TaskScores, "evaluate", "row-0 evaluation")

    def first_step(self, progress):
        mark("first step")
        raise KeyboardInterrupt

    cli.run.LogLines.__call__ = first_step
    with contextlib.redirect_stdout(sys.stderr):
        cli.main(["execute", run_id])
    out, prev_w, prev_c = {}, t_spawn, 0.0
    for name, w, c in marks:
        out[name] = {"wall": round(w - prev_w, 3), "cpu": round(c - prev_c, 3), "at": round(w - t_spawn, 3)}
        prev_w, prev_c = w, c
    print(json.dumps(out))


def launched(rounds: int, label: str) -> None:
    import json

    from common import median, save

    from cldash.config import resolve
    from cldash.runs.launch import launch
    from cldash.store import Store

    config = resolve({"method": "lora", "stream": "digits-rotate"}).to_dict()
    visible: list[dict] = []
    phases: list[dict] = []
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        folder = Path(tempfile.mkdtemp(prefix="cldash-first-step-"))
        os.environ["CLDASH_CACHE"] = str(folder / "cache")
        store = Store(str(folder / "launched.db"))
        start = time.time()
        (run_id,) = launch(store, [config])
        seen = {"launch() returned": time.time() - start}
        while time.time() - start < 600:
            run = store.get_run(run_id)
            if run["status"] == "running":
                seen.setdefault("shows running", time.time() - start)
            if (run["step"] or 0) > 0:
                seen["stored step above 0"] = time.time() - start
                break
            if run["status"] not in ("queued", "running"):
                raise SystemExit(f"the launched run ended as {run['status']}: {run['error']}")
            time.sleep(0.02)
        from cldash.runs.launch import cancel

        cancel(store, run_id)
        visible.append({k: round(v, 3) for k, v in seen.items()})

        store = Store(str(folder / "phases.db"))
        run_id = store.create_run(config)
        env = {**os.environ, "CLDASH_DB": store.url, "CLDASH_THREADS": "1", "PYTHONUNBUFFERED": "1",
               "FIRST_STEP_SPAWNED_AT": repr(time.time())}
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(run_id)], env=env,
                              capture_output=True, text=True, timeout=600)
        phases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med_visible = {k: round(median([v[k] for v in visible]), 3) for k in visible[0]}
    med_phases = {k: {x: round(median([p[k][x] for p in phases]), 3) for x in ("wall", "cpu", "at")}
                  for k in PHASES if all(k in p for p in phases)}
    total_cpu = sum(v["cpu"] for v in med_phases.values())
    save("first_step_launched" + (f"_{label}" if label else ""), {
        "what": "a launched lora run on digits-rotate (shipped vit-tiny weights) until its first training step",
        "load_average_1min": [round(x, 2) for x in loads], "rounds": rounds,
        "visible_median_seconds": med_visible, "phases_median_seconds": med_phases,
        "phases_cpu_seconds_total": round(total_cpu, 2),
        "cpu_share": {k: round(v["cpu"] / total_cpu, 3) for k, v in med_phases.items()},
        "visible_seconds": visible, "phases_seconds": phases})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--streams", default="digits-rotate,skills")
    p.add_argument("--launched", action="store_true", help="where a launched run's time goes before its first step")
    p.add_argument("--label", default="", help="a suffix for the --launched results file (before, after)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return phases_child(args.child)
    if args.launched:
        return launched(args.rounds, args.label)
    from common import median, save

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cldash.engine.loop"], check=True)
    import_seconds = time.perf_counter() - start
    import cldash.engine.loop  # noqa: F401 - imports out of the timed part

    results = {}
    for stream in args.streams.split(","):
        time_to_first_step(stream, hide_shipped=False)     # warm-up: one-off lazy imports
        times: dict[str, list[float]] = {"shipped": [], "pretrain": []}
        for r in range(args.rounds):      # alternating order, so drift hits both alike
            for name in ("shipped", "pretrain") if r % 2 == 0 else ("pretrain", "shipped"):
                times[name].append(time_to_first_step(stream, hide_shipped=name == "pretrain"))
        med = {k: median(v) for k, v in times.items()}
        results[stream] = {"seconds": times, "median": med, "pretrain / shipped": med["pretrain"] / med["shipped"]}
    save("first_step", {"rounds": args.rounds, "import_seconds": import_seconds, "streams": results})


if __name__ == "__main__":
    main()
