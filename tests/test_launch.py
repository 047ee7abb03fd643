"""Background runs: idempotent launches, the concurrency limit, a queue that drains without the
dashboard, re-runs with another seed, and dead processes reconciled."""

import time

import pytest

from cldash.config import resolve
from cldash.launch import demo_configs, launch, log_path, rerun, reconcile, schedule
from cldash.methods import REGISTRY
from cldash.store import Store

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
    configs = demo_configs()
    assert [c["method"] for c in configs][:2] == ["lora", "full"]
    assert sorted(c["method"] for c in configs) == sorted(REGISTRY)
    assert {c["stream"] for c in configs} == {"digits-rotate"}


@pytest.mark.parametrize("visible,expected", [("0,1", 2), ("", 0), ("-1", 0)])
def test_gpu_count_follows_cuda_visible_devices(monkeypatch, visible, expected):
    from cldash.launch import default_limit, gpu_count

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpu_count() == expected
    assert default_limit() == (expected or __import__("os").cpu_count())
