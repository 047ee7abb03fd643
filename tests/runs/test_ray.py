"""Runs on a real Ray cluster with a PostgreSQL store: a sweep of four tiny runs completes, a run
cancelled mid-way stops, a run whose worker process is killed is reconciled as interrupted, and the
store holds every row each run flushed.

Needs CLDASH_TEST_RAY (the cluster's dashboard address, http://127.0.0.1:8265) and CLDASH_TEST_POSTGRES;
.ci/run starts a one-node cluster with `ray start --head` and a throw-away PostgreSQL server, and under CI
a missing one fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

RAY = os.environ.get("CLDASH_TEST_RAY")
PG = os.environ.get("CLDASH_TEST_POSTGRES")
if not (RAY and PG) and not os.environ.get("CI"):
    pytest.skip("set CLDASH_TEST_RAY (a Ray dashboard address) and CLDASH_TEST_POSTGRES to run",
                allow_module_level=True)

from cldash.config import resolve  # noqa: E402
from cldash.runs.launch import cancel, launch  # noqa: E402 - after the skip that needs it
from cldash.runs.launchers import Resources, logs  # noqa: E402
from cldash.runs.launchers.ray_jobs import RayLauncher  # noqa: E402
from cldash.runs.queue import reconcile  # noqa: E402
from cldash.runs.sweeps import Sweep, launch_sweep  # noqa: E402
from cldash.store import ENDED, Store, count_rows  # noqa: E402

from test_launchers import until  # noqa: E402 - the live sweeps' one wait

LONG = {"method": "lora", "steps_per_task": 100_000, "eval_interval": 0, "spectra_interval": 0,
        "stream_options": {"angles": [90]}}


@pytest.fixture(scope="module")
def store():
    if not (RAY and PG):
        pytest.fail("CI must run the Ray tests: .ci/run starts Ray and PostgreSQL and sets CLDASH_TEST_RAY and "
                    f"CLDASH_TEST_POSTGRES (got {RAY!r}, {'set' if PG else 'unset'})")
    from test_postgres import _fresh_database

    fresh = _fresh_database()
    yield Store(next(fresh))
    next(fresh, None)


@pytest.fixture(scope="module")
def cluster():
    return RayLauncher(RAY)


def every_row_flushed(store, run: dict) -> None:
    """The loss of every step up to the run's recorded step is stored, and none after it: each flush wrote
    its rows and moved the step in one transaction."""
    from sqlalchemy import func, select

    from cldash.store import Scalar

    with store.engine.connect() as conn:
        steps = conn.execute(select(func.count(), func.max(Scalar.step)).where(
            Scalar.run_id == run["id"], Scalar.name == "loss")).one()
    assert steps == (run["step"], run["step"] or None)


def test_a_sweep_of_four_tiny_runs_completes_on_the_cluster(store, cluster):
    res = cluster.resources()
    assert res["nodes"] >= 1 and res["CPU"] >= 1
    sweep = Sweep(methods=["lora", "codyra"], seeds=[0, 1], name=f"ray-{uuid.uuid4().hex[:6]}",
                  fixed={"steps_per_task": 8, "eval_interval": 0, "angles": "45,90"})
    plan, ids = launch_sweep(store, sweep, launcher=cluster, resources=Resources(cpus=1))
    assert len(ids) == 4 and {r["launcher"] for r in store.runs(ids=ids)} == {"ray"}
    runs = until("the sweep to end", lambda: (lambda rs: rs if all(r["status"] in ENDED for r in rs) else None)(
        store.runs(ids=ids)), store=store)
    assert [(r["status"], r["error"]) for r in runs] == [("finished", None)] * 4
    for run in runs:
        assert run["host"] and run["device"] == "cpu" and run["group_key"] == sweep.group
        assert run["launcher_info"]["job"].startswith("cldash-run-")
        assert run["launcher_info"]["resources"] == {"cpus": 1.0, "gpus": 0.0}
        R = store.accuracy_matrix(run["id"])
        assert len(R["rows"]) == 3   # before, after task 1, after task 2
        rows = count_rows(store, run["id"])
        assert rows["evaluations"] and rows["spectra"] and rows["tasks"] == 3
        every_row_flushed(store, run)
        assert "step 16/16" in logs(store, run)
    # a job ends a moment after its run recorded its end (the process exits)
    states = until("the jobs to end", lambda: (lambda st: st if all(s.state == "ended" for s in st.values())
                                               else None)(cluster.states(runs)), timeout=30)
    assert {s.state for s in states.values()} == {"ended"} and all("SUCCEEDED" in s.message for s in states.values())
    again, none = launch_sweep(store, sweep, launcher=cluster)
    assert none == [] and len(again.existing) == 4   # repeating the sweep queues nothing


def _long_run(store, cluster) -> dict:
    (run_id,) = launch(store, [resolve(LONG).to_dict()], launcher=cluster, resources=Resources(cpus=1))
    return until("the run to train", lambda: (lambda r: r if r["status"] == "running" and r["step"] > 20 else None)(
        store.get_run(run_id)), store=store)


def test_a_run_cancelled_mid_way_stops(store, cluster):
    run = _long_run(store, cluster)
    asked = time.time()
    assert cancel(store, run["id"], timeout=5.0) == "cancelled"
    took = time.time() - asked
    ended = store.get_run(run["id"])
    assert ended["status"] == "cancelled" and ended["error"] == f"cancelled at step {ended['step']}"
    assert took < 6.0, took
    until("its job to end", lambda: cluster.status(store, ended).state == "ended", timeout=30)
    time.sleep(1.0)
    after = store.get_run(run["id"])
    assert after["step"] == ended["step"]   # nothing trains on
    every_row_flushed(store, after)


def test_a_run_whose_worker_is_killed_is_reconciled_as_interrupted(store, cluster):
    run = _long_run(store, cluster)
    # the run's process is on this machine (a one-node cluster); the row says another host, so that reconcile
    # cannot look at the pid and has to go by the cluster's job state, as for a run on another node
    store.update_run(run["id"], host="node-b")
    os.kill(run["pid"], signal.SIGKILL)
    until("its job to fail", lambda: cluster.status(store, run).state == "ended", timeout=30)
    changed = reconcile(store)
    ended = store.get_run(run["id"])
    assert run["id"] in changed and ended["status"] == "interrupted"
    assert f"its ray job {run['launcher_info']['job']} ended (FAILED" in ended["error"]
    assert "without the run recording an end" in ended["error"]
    every_row_flushed(store, ended)


def test_cldash_sweep_through_the_ray_client_address(store, capsys):
    """The command of the README: `cldash --db postgresql://... sweep --launcher ray://HEAD:10001 ... --wait`.
    The store's URL reaches the run in its environment, never on its command line."""
    from cldash.cli import main

    name = f"cli-{uuid.uuid4().hex[:6]}"
    argv = ["--db", store.url, "sweep", "--launcher", "ray://127.0.0.1:10001", "--methods", "lora", "--name", name,
            "--set", "steps_per_task=4", "--set", "eval_interval=0", "--set", "angles=45", "--wait"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "queued 1 run" in out and "a Ray cluster at ray://127.0.0.1:10001" in out and "finished (1/1)" in out
    (run,) = [r for r in store.runs() if r["group_key"] == f"sweep:{name}"]
    info = RayLauncher(RAY).client().get_job_info(run["launcher_info"]["job"])
    assert info.entrypoint.endswith(f"-m cldash execute {run['id']}") and "postgres" not in info.entrypoint
    assert run["launcher_info"]["resources"] == {"cpus": 1.0, "gpus": 0.0}   # a cluster without GPUs: none asked
