"""The store: runs written and read back, WAL, clear errors, idempotent launches, deletion,
and a run process killed mid-task leaving a readable store marked interrupted after reconcile."""

import os
import signal
import sqlite3
import time

import numpy as np
import pytest

from cldash.config import resolve
from cldash.core.errors import UserError
from cldash.runs.launch import cancel
from cldash.runs.processes import spawn
from cldash.runs.queue import reconcile
from cldash.store import Store, count_rows


def test_a_finished_run_reads_back(seeded_store):
    runs = seeded_store.runs()
    assert [r["method"] for r in runs] == ["lora", "full"]
    lora = runs[0]
    assert lora["status"] == "finished" and lora["progress"] == 1.0 and lora["error"] is None
    assert lora["config"]["method_options"]["rank"] == 8 and lora["config"]["stream_options"]["angles"] == [45, 90, 135]
    assert lora["versions"]["torch"] and lora["device"] == "cpu" and lora["pid"] == os.getpid()
    tasks = seeded_store.tasks(lora["id"])
    assert tasks.kind.tolist() == ["general", "stream", "stream", "stream"]
    assert len(seeded_store.modules(lora["id"])) == 12
    m = seeded_store.accuracy_matrix(lora["id"])
    assert m["R"].shape == (4, 3) and m["rows"] == [0, 1, 2, 3]
    assert list(m["general"]) == ["general: upright digits"]
    assert ((m["R"] >= 0) & (m["R"] <= 1)).all()
    loss = seeded_store.scalars(lora["id"], names=["loss"])
    assert loss.step.tolist() == list(range(1, 121))
    assert np.isfinite(loss.value).all()
    spectra = seeded_store.spectra(lora["id"])
    assert set(spectra.kind) == {"task", "cumulative"}
    assert all(np.isfinite(v).all() for v in spectra["values"])
    # every 10 steps plus each task end, for 12 modules and 2 kinds
    assert len(spectra) == 3 * 4 * 12 * 2
    # the summary stored with the run is the metrics of the stored matrix
    from cldash.measures.metrics import summarize

    assert lora["summary"]["acc"] == pytest.approx(summarize(m["R"], m["general"])["acc"])


def test_sqlite_runs_in_wal_mode(seeded_store):
    path = seeded_store.display
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_that_cannot_be_opened(tmp_path):
    with pytest.raises(UserError, match=r"the folder .*missing does not exist"):
        Store(str(tmp_path / "missing" / "runs.db"))
    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database " * 100)
    with pytest.raises(UserError, match="file is not a database"):
        Store(str(junk))
    with pytest.raises(UserError, match="cannot open the run store"):
        Store("nosuchdriver://x/y")


def test_launch_key_makes_creation_idempotent(db):
    store = Store(db)
    cfg = resolve({"method": "lora"}).to_dict()
    a = store.create_run(cfg, launch_key="click-1")
    b = store.create_run(cfg, launch_key="click-1")
    c = store.create_run(cfg, launch_key="click-2")
    assert a == b != c and len(store.runs()) == 2


def test_delete_removes_every_row(seeded_store, tmp_path):
    import shutil

    copy = tmp_path / "copy.db"
    with sqlite3.connect(seeded_store.display) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    store = Store(str(copy))
    run_id = store.runs()[0]["id"]
    assert all(n > 0 for n in count_rows(store, run_id).values())
    store.delete_run(run_id)
    assert all(n == 0 for n in count_rows(store, run_id).values())
    assert [r["method"] for r in store.runs()] == ["full"]
    shutil.rmtree(tmp_path, ignore_errors=True)


def _queued(store, **overrides):
    cfg = resolve({"method": "lora", "steps_per_task": 4000, "eval_interval": 100,
                   "stream_options": {"angles": [45, 90]}, **overrides}).to_dict()
    return store.create_run(cfg)


def _wait(store, run_id, pred, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = store.get_run(run_id)
        if pred(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not reach the expected state: {store.get_run(run_id)}")


def test_killed_run_is_interrupted_after_reconcile_and_keeps_its_rows(db):
    store = Store(db)
    run_id = _queued(store)
    proc = spawn(store, run_id)
    run = _wait(store, run_id, lambda r: r["status"] == "running" and r["step"] >= 150)
    os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists(f"/proc/{proc.pid}") and \
            open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.05)
    # before reconcile the store still says running; the dead (zombie) process is detected
    assert store.get_run(run_id)["status"] == "running"
    assert reconcile(store) == [run_id]
    proc.wait()
    run = store.get_run(run_id)
    assert run["status"] == "interrupted"
    assert f"pid {proc.pid}" in run["error"] and "ended without recording an end" in run["error"]
    m = store.accuracy_matrix(run_id)
    assert m["rows"] == [0] and m["R"].shape == (1, 2) and np.isfinite(m["R"]).all()
    loss = store.scalars(run_id, names=["loss"])
    assert len(loss) >= 150 and loss.step.tolist() == list(range(1, len(loss) + 1))   # no gaps, no half-batches
    assert reconcile(store) == []   # idempotent


def test_cancel_stops_the_process_group_within_two_seconds(db):
    store = Store(db)
    run_id = _queued(store)
    proc = spawn(store, run_id)
    _wait(store, run_id, lambda r: r["status"] == "running" and r["step"] >= 20)
    start = time.time()
    assert cancel(store, run_id) == "cancelled"
    assert time.time() - start < 2.5
    assert proc.wait(timeout=5) is not None
    run = store.get_run(run_id)
    assert run["status"] == "cancelled" and run["error"].startswith("cancelled at step")
    with pytest.raises(UserError, match="nothing to cancel"):
        cancel(store, run_id)


def test_writes_a_store_refuses_are_named_in_a_few_words():
    import errno

    from sqlalchemy.exc import OperationalError

    from cldash.core.errors import StoreWriteError
    from cldash.store import mask_url, write_failure

    def db_error(message):
        return OperationalError("INSERT INTO scalars ...", {}, sqlite3.OperationalError(message))

    assert write_failure(OSError(errno.ENOSPC, "No space left on device", "/x/runs.db-wal")) == \
        "the disk is full (OSError 28 writing /x/runs.db-wal)"
    assert write_failure(OSError(errno.EFBIG, "File too large")) == "the file size limit was reached (OSError 27)"
    assert write_failure(db_error("database or disk is full")) == "the disk is full (sqlite3: database or disk is full)"
    assert write_failure(db_error("disk I/O error")) == "the disk refused a write (sqlite3: disk I/O error)"
    assert write_failure(db_error("attempt to write a readonly database")) == \
        "the store is read-only (sqlite3: attempt to write a readonly database)"
    assert write_failure(StoreWriteError("cannot write ...", "the disk is full (x)")) == "the disk is full (x)"
    try:   # the reason behind the exception that surfaced
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("while saving") from exc
    except RuntimeError as exc:
        assert write_failure(exc) == "the disk is full (OSError 28)"
    assert write_failure(db_error("no such table: runs")) is None and write_failure(ValueError("x")) is None
    assert mask_url("postgresql+psycopg://cl:s3cret@db/runs?sslmode=require") == \
        "postgresql+psycopg://cl:***@db/runs?sslmode=require"
    assert mask_url("postgresql://cl:p@ss/w0rd@db/runs") == "postgresql://cl:***@db/runs"
    assert mask_url("postgresql://db/runs?user=cl&password=s3cret") == "postgresql://db/runs?user=cl&password=***"
    assert mask_url("postgresql://cl@db:5432/runs") == "postgresql://cl@db:5432/runs"
