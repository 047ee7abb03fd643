"""Background runs: idempotent launches, the concurrency limit, a queue that drains without the
dashboard, re-runs with another seed, and dead processes reconciled."""

import time

import pytest

from cldash.config import resolve
from cldash.methods import REGISTRY
from cldash.runs.demo import demo_configs
from cldash.runs.launch import launch, rerun
from cldash.runs.processes import is_run_process, log_path, spawn
from cldash.runs.queue import reconcile, schedule
from cldash.store import Store

from test_store import _wait

QUICK = {"method": "lora", "steps_per_task": 15, "eval_interval": 0, "stream_options": {"angles": [90]}}


def wait_all(store, ids, statuses=("finished",), timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = store.runs(ids=ids)
        if all(r["status"] in statuses for r in runs):
            return runs
        schedule(store)
        time.sleep(0.3)
    raise AssertionError([(r["id"], r["status"], r["error"]) for r in store.runs(ids=ids)])


def test_launch_keys_make_a_double_click_one_run(db):
    store = Store(db)
    cfg = resolve(QUICK).to_dict()
    a = launch(store, [cfg, cfg], ["k:0", "k:1"], start=False)
    b = launch(store, [cfg, cfg], ["k:0", "k:1"], start=False)
    assert a == b and len(store.runs()) == 2


def test_limit_one_runs_one_at_a_time_and_the_queue_drains_without_a_dashboard(db):
    store = Store(db)
    store.set_setting("max_concurrent", "1")
    cfg = resolve(QUICK).to_dict()
    ids = launch(store, [cfg, dict(cfg, seed=1)], ["q:0", "q:1"])
    first, second = store.runs(ids=ids)
    assert first["pid"] and first["status"] in ("queued", "running")
    assert second["status"] == "queued" and second["pid"] is None      # waits for the slot
    # nobody calls schedule from here on: the first run's process starts the second when it ends
    deadline = time.time() + 180
    while time.time() < deadline and store.get_run(ids[1])["status"] != "finished":
        runs = store.runs(ids=ids)
        assert sum(r["status"] == "running" for r in runs) <= 1
        time.sleep(0.2)
    runs = store.runs(ids=ids)
    assert [r["status"] for r in runs] == ["finished", "finished"]
    assert runs[1]["started_at"] >= runs[0]["finished_at"] - 0.5
    assert log_path(store, ids[0]).exists()


def test_rerun_copies_the_config_with_a_new_seed(db):
    store = Store(db)
    (first,) = launch(store, [resolve(QUICK).to_dict()], start=False)
    store.update_run(first, status="finished")
    again = rerun(store, first, seed=7, launch_key="rerun:x")
    assert rerun(store, first, seed=7, launch_key="rerun:x") == again
    run = store.get_run(again)
    assert run["seed"] == 7 and run["config"]["seed"] == 7
    assert {k: v for k, v in run["config"].items() if k != "seed"} == \
           {k: v for k, v in store.get_run(first)["config"].items() if k != "seed"}
    wait_all(store, [again])


def test_a_queued_run_whose_process_died_is_failed_with_its_log(db):
    store = Store(db)
    (rid,) = launch(store, [resolve(QUICK).to_dict()], start=False)
    import socket

    store.update_run(rid, pid=2 ** 22 + 7, host=socket.gethostname())   # no such process
    assert reconcile(store) == [rid]
    run = store.get_run(rid)
    assert run["status"] == "failed" and "exited before starting" in run["error"]


def test_demo_is_every_registered_method_on_rotated_digits():
    configs = demo_configs(full=True)
    assert [c["method"] for c in configs][:2] == ["lora", "full"]
    assert sorted(c["method"] for c in configs) == sorted(REGISTRY)
    assert {c["stream"] for c in configs} == {"digits-rotate"}


@pytest.mark.parametrize("visible,expected", [("0,1", 2), ("", 0), ("-1", 0)])
def test_gpu_count_follows_cuda_visible_devices(monkeypatch, visible, expected):
    from cldash.runs.processes import default_limit, gpu_count

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpu_count() == expected
    assert default_limit() == (expected or __import__("os").cpu_count())


def test_spawn_keeps_the_store_url_off_the_command_line(db, monkeypatch):
    """`ps` shows every local user a process's arguments: the URL (which may hold a password) goes
    in the run process's environment, which only its owner can read."""
    import subprocess

    store = Store(db)
    (rid,) = launch(store, [resolve(QUICK).to_dict()], start=False)
    url = "postgresql+psycopg://cl:s3cret@db.example/runs"
    monkeypatch.setattr(store, "url", url)   # a SQLite URL cannot hold a password; the rows stay in `db`
    seen = {}

    class FakePopen:
        pid = 2 ** 22 + 11

        def __init__(self, argv, **kwargs):
            seen.update(argv=argv, env=kwargs["env"])

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    spawn(store, rid)
    assert seen["argv"][1:] == ["-m", "cldash", "execute", str(rid)]
    assert "s3cret" not in " ".join(seen["argv"]) and seen["env"]["CLDASH_DB"] == url


def test_a_killed_background_run_frees_its_slot_for_the_next_cldash_command(db, capsys):
    """With one slot, the second run waits; the first is killed (SIGKILL: it cannot start the next
    one itself); the next `cldash list` reconciles and starts the waiting run, no dashboard open."""
    import os
    import signal

    from cldash.cli import main
    from cldash.runs.launch import cancel

    store = Store(db)
    store.set_setting("max_concurrent", "1")
    long = resolve(dict(QUICK, steps_per_task=4000)).to_dict()
    first, second = launch(store, [long, resolve(QUICK).to_dict()])
    run = _wait(store, first, lambda r: r["status"] == "running")
    assert store.get_run(second)["pid"] is None
    os.killpg(run["pid"], signal.SIGKILL)
    _wait(store, first, lambda r: not is_run_process(r["pid"]))
    assert main(["--db", db, "list"]) == 0
    assert store.get_run(first)["status"] == "interrupted"
    waiting = store.get_run(second)
    assert waiting["pid"] and waiting["status"] in ("queued", "running")   # started by `cldash list`
    cancel(store, second)
    capsys.readouterr()


def test_cldash_queue_shows_the_order_and_starts_what_the_limit_allows(db, capsys):
    from cldash.cli import main
    from cldash.runs.launch import cancel

    store = Store(db)
    store.set_setting("max_concurrent", "1")
    ids = launch(store, [resolve(dict(QUICK, steps_per_task=4000, seed=s)).to_dict() for s in range(3)], start=False)
    assert main(["--db", db, "queue", "--no-start"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{db}: 0 active, 3 waiting; at most 1 run(s) at once (set in the store); automatic resume off"
    assert [line.split()[:3] for line in out[2:]] == [["1", str(ids[0]), "queued"], ["2", str(ids[1]), "queued"],
                                                       ["3", str(ids[2]), "queued"]]
    assert all(r["pid"] is None for r in store.runs())
    assert main(["--db", db, "queue"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{db}: 1 active, 2 waiting; at most 1 run(s) at once (set in the store); automatic resume off"
    assert [line.split()[:2] for line in out[2:5]] == [["active", str(ids[0])], ["1", str(ids[1])], ["2", str(ids[2])]]
    assert out[5] == f"started run(s) {ids[0]} in the free slot(s)"
    assert main(["--db", db, "cancel", str(ids[0])]) == 0   # its slot goes to the next one
    assert store.get_run(ids[0])["status"] == "cancelled" and store.get_run(ids[1])["pid"]
    cancel(store, ids[1])


def test_a_process_between_exec_and_its_new_arguments_counts_as_alive(monkeypatch):
    """Popen returns at exec's point of no return, before the kernel fills in the new /proc/PID/cmdline: read
    then, it is empty, and a reconcile must not take the run's process for another program (a healthy run once
    failed as "exited before starting" on a loaded machine). Another program's arguments still say no."""
    import pathlib
    import subprocess

    other = subprocess.Popen(["sleep", "30"])
    cmdline = pathlib.Path(f"/proc/{other.pid}/cmdline")
    while not cmdline.read_bytes():   # the very window this is about: wait until exec has filled it in
        time.sleep(0.01)
    try:
        assert not is_run_process(other.pid)
        real = pathlib.Path.read_bytes
        monkeypatch.setattr(pathlib.Path, "read_bytes",
                            lambda self: b"" if self.name == "cmdline" else real(self))
        assert is_run_process(other.pid)
    finally:
        other.kill()
        other.wait()
    assert not is_run_process(other.pid)


def test_runs_share_the_gpus_evenly_and_each_sees_only_its_own(db, monkeypatch):
    """Two GPUs, two runs per GPU: four runs start at once, two on each GPU, each with CUDA_VISIBLE_DEVICES set to its
    GPU (recorded in its launcher info); a run that names cuda:1 keeps every GPU visible and counts on GPU 1."""
    from cldash.runs.launchers import local
    from cldash.runs.processes import RUNS_PER_GPU_SETTING, max_concurrent

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    store = Store(db)
    store.set_setting(RUNS_PER_GPU_SETTING, "2")
    assert max_concurrent(store) == 4
    envs = {}
    monkeypatch.setattr(local, "spawn", lambda store, rid, extra_env: envs.setdefault(rid, extra_env))
    pinned = resolve(QUICK).to_dict()
    pinned["device"] = "cuda:1"   # resolve refuses cuda here (no GPU); the launcher reads it as stored
    ids = launch(store, [resolve(QUICK).to_dict()] * 3 + [pinned] + [resolve(QUICK).to_dict()], start=False)
    with local.slots_lock(store):
        started = local.start_waiting(store)
    assert started == ids[:4]
    gpus = [store.get_run(i)["launcher_info"]["gpu"] for i in started]
    assert gpus == ["4", "7", "4", "7"]
    assert [envs[i].get("CUDA_VISIBLE_DEVICES") for i in started] == ["4", "7", "4", None]
    assert local.gpu_for({"config": {"device": "cpu"}}, []) == (None, False)


def _sweep(store):
    from cldash.runs.sweeps import Sweep, launch_sweep

    return launch_sweep(store, Sweep(methods=["lora"], seeds=[0, 1], fixed={"steps_per_task": 5}))[1]


def _claims(store):
    from cldash.analysis.claims import CLAIMS, launch_missing

    return launch_missing(store, claims=CLAIMS[:1], regimes=("common",))


def _lesson(store):
    from cldash.analysis.lessons import LESSONS, launch_lesson

    return launch_lesson(store, LESSONS[0].key)


def _demo(store):
    from cldash.runs.demo import launch_demo

    return launch_demo(store, "demo-priority")


def _rerun(store):
    first = launch(store, [resolve(QUICK).to_dict()], priority="batch")[0]
    return [rerun(store, first, seed=7)]


# who launches, and the queue priority its runs get: a person's launches go ahead of a program's batches
LAUNCHES = [("a sweep", _sweep, "batch"), ("the claims' runs", _claims, "batch"), ("a lesson", _lesson, "interactive"),
            ("the demo", _demo, "interactive"), ("a re-run", _rerun, "interactive")]


@pytest.mark.parametrize(("who", "queue_them", "priority"), LAUNCHES, ids=[w for w, _, _ in LAUNCHES])
def test_each_launcher_of_runs_gives_them_its_queue_priority(db, monkeypatch, who, queue_them, priority):
    from cldash.runs.priority import priority_name

    from conftest import keep_runs_queued

    keep_runs_queued(monkeypatch)
    store = Store(db)
    ids = queue_them(store)
    assert ids and {priority_name(r) for r in store.runs(ids=ids)} == {priority}


def test_interactive_runs_start_before_batch_runs_and_cldash_queue_shows_the_order(db, monkeypatch, capsys):
    """Claims' runs queued first, a lesson's after: `cldash queue` lists the lesson's runs first, with their
    priority, and the scheduler starts them first; within a priority the oldest goes first."""
    from cldash.cli import main
    from cldash.runs.launchers.local import queue

    from conftest import keep_runs_queued

    store = Store(db)
    store.set_setting("max_concurrent", "1")
    keep_runs_queued(monkeypatch)
    batch = launch(store, [resolve(dict(QUICK, seed=s)).to_dict() for s in range(3)], priority="batch")
    lesson = _lesson(store)
    assert [r["id"] for r in queue(store)[1]] == lesson + batch
    assert main(["--db", db, "queue", "--no-start"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[2:2 + len(lesson) + len(batch)]]
    assert [(int(r[1]), r[5]) for r in rows] == [(i, "interactive") for i in lesson] + [(i, "batch") for i in batch]
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert out[-1].startswith("interactive runs (a lesson, the demo, the Launch page) start before batch runs")
    import cldash.runs.launchers.local as local

    monkeypatch.undo()   # the scheduler starts runs again, into a spawn that records what it would start
    started = []
    monkeypatch.setattr(local, "spawn", lambda store, run_id, extra_env=None: started.append(run_id))
    assert schedule(store) == started == lesson[:1]
    with pytest.raises(Exception, match="unknown queue priority 'urgent'; the priorities are interactive, batch"):
        launch(store, [resolve(QUICK).to_dict()], priority="urgent")
    assert len(store.runs()) == len(lesson) + len(batch)   # nothing stored for the bad priority
