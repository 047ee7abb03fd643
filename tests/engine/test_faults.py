"""Fault injection: processes killed with SIGKILL at the moments that matter, concurrent writers with
a reader, a full disk and a read-only store. After each, the store passes SQLite's integrity check,
every run reads as what happened to it (with the reason), and nothing comes back from the dead.

Kill moments: between creating a foreground run's row and claiming it, during backbone
pre-training, mid-task, and right after a task's final evaluation. A damaged backbone cache heals
inside a run (its table of damages: test_backbone_weights.py). Every wait is on something
observable (a row, a file, a process gone), bounded, and says what it waited for when it gives up.
"""

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

try:
    import resource
except ImportError:   # not on Windows
    resource = None

from cldash.backbones import vit
from cldash.cli import main
from cldash.config import resolve
from cldash.runs.launch import launch
from cldash.runs.processes import is_run_process
from cldash.runs.queue import reconcile, schedule
from cldash.store import Store, _engine, count_rows

from conftest import SHORT, use_few_test_digits

ROOT = Path(__file__).resolve().parents[2]
TINY_BACKBONE = ["--backbone-pretrain-steps", "400", "--backbone-hidden-size", "16", "--backbone-layers", "1",
                 "--backbone-heads", "2", "--backbone-mlp-size", "16"]   # not shipped: a run pre-trains it


def until(what: str, pred, timeout: float = 120, every: float = 0.02):
    """Poll `pred` until it returns something true; fail saying `what` did not happen in time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def integrity(db: str) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def cldash(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cldash", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, **kwargs)


# a foreground `cldash run` that stops where its row exists and is not claimed yet, and says so in a file
PAUSE_AT_CLAIM = """
import pathlib, sys, time
from cldash.store import Store
def claim(self, run_id, **kwargs):
    pathlib.Path(sys.argv[1]).write_text(str(run_id))
    time.sleep(600)
Store.claim = claim
from cldash.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_kill_9_between_creating_and_claiming_a_foreground_run(tmp_path):
    db, ready = str(tmp_path / "runs.db"), tmp_path / "at-claim"
    child = subprocess.Popen([sys.executable, "-c", PAUSE_AT_CLAIM, str(ready), "--db", db, "run", "--method", "lora",
                              "--stream-angles", "90", *SHORT], cwd=ROOT)
    try:
        until("the cldash run process reaching its claim", ready.exists)
        store = Store(db)
        run = store.get_run(int(ready.read_text()))
        # owned by its process from the INSERT on: no moment when a scheduler could take it for its own
        assert (run["status"], run["pid"], run.get("launcher")) == ("queued", child.pid, "cli")
        assert schedule(store) == []
    finally:
        child.kill()
        child.wait()
    assert schedule(store) == []   # the dashboard's refresh: the orphan is ended, not started in the background
    run = store.get_run(run["id"])
    assert run["status"] == "interrupted"
    assert run["error"] == f"the cldash run process (pid {child.pid}) ended before the run started"
    assert integrity(db) == "ok"


@pytest.mark.slow
def test_kill_9_during_backbone_pretraining(tmp_path, monkeypatch, capsys):
    db, cache = str(tmp_path / "runs.db"), tmp_path / "cache"
    argv = ["--db", db, "run", "--method", "lora", "--stream-angles", "90", "--steps-per-task", "5",
            "--eval-interval", "0", "--quiet", *TINY_BACKBONE]
    child = cldash(*argv, env={**os.environ, "CLDASH_CACHE": str(cache)})
    try:
        lock = until("pre-training starting (its cache lock file)", lambda: next((cache / "backbones").glob("*.lock"),
                                                                                   None) if cache.exists() else None)
        weights = lock.with_suffix(".safetensors")
        assert not weights.exists()
    finally:
        child.kill()
        child.communicate()
    assert not weights.exists(), "the kill came after pre-training ended: give it more steps"
    store = Store(db)
    assert reconcile(store) == [1]
    run = store.get_run(1)
    assert run["status"] == "interrupted" and f"pid {child.pid}" in run["error"] and "at step 0" in run["error"]
    assert integrity(db) == "ok"
    # the same options again: the lock the killed process held is free, and pre-training starts over (here
    # for 3 of the 400 steps: the child needed them to be killed mid-way, the cache entry's name and lock
    # are those of the 400-step options all the same)
    monkeypatch.setenv("CLDASH_CACHE", str(cache))
    started = []

    def pretrain(options):
        started.append(options.pretrain_steps)
        return real(dataclasses.replace(options, pretrain_steps=3))

    real = vit.pretrain
    monkeypatch.setattr(vit, "pretrain", pretrain)
    use_few_test_digits(monkeypatch)   # the run's scores are not checked
    assert main(argv) == 0
    assert started == [400]
    assert store.get_run(2)["status"] == "finished" and store.get_run(2)["weights"]["source"] == "local"
    assert weights.exists() and "damaged" not in capsys.readouterr().err


def test_a_corrupted_backbone_cache_heals_inside_a_run(tmp_path, monkeypatch, capsys, few_test_digits):
    """A run whose backbone cache file was cut short still finishes, on the same weights and with the
    same numbers, and says so in one line (the damage table itself: test_backbone_weights.py)."""
    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    db = str(tmp_path / "runs.db")
    argv = ["--db", db, "run", "--method", "lora", "--stream-angles", "90", "--steps-per-task", "5",
            "--eval-interval", "0", "--quiet", *TINY_BACKBONE[2:], "--backbone-pretrain-steps", "3"]
    assert main(argv) == 0
    (weights,) = (tmp_path / "cache" / "backbones").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert main(argv) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(err) == 1 and str(weights) in err[0]
    store = Store(db)
    first, second = store.get_run(1), store.get_run(2)
    assert second["status"] == "finished" and second["weights"]["sha256"] == first["weights"]["sha256"]
    np.testing.assert_array_equal(store.accuracy_matrix(1)["R"], store.accuracy_matrix(2)["R"])


@pytest.mark.slow
def test_kill_9_mid_task_and_right_after_a_task_ends(db):
    """Two background runs at once: one killed at its first periodic write (mid task 1), the other as soon
    as its first task's final evaluations are in the store."""
    store = Store(db)
    store.set_setting("max_concurrent", "2")
    mid = resolve({"method": "lora", "steps_per_task": 4000, "eval_interval": 100,
                   "stream_options": {"angles": [45, 90]}}).to_dict()
    end = resolve({"method": "lora", "steps_per_task": 40, "eval_interval": 20,
                   "stream_options": {"angles": [45, 90, 135]}}).to_dict()
    a, b = launch(store, [mid, end])

    def task_one_evaluated():
        ev = store.evaluations(b, final=True)
        return len(ev) and (ev.trained_through == 1).any()

    until("run b's first final evaluation", task_one_evaluated)
    os.killpg(store.get_run(b)["pid"], signal.SIGKILL)
    until("run a's first write mid-task", lambda: store.get_run(a)["step"] > 0)
    os.killpg(store.get_run(a)["pid"], signal.SIGKILL)
    until("both processes gone", lambda: not any(is_run_process(r["pid"]) for r in store.runs()))
    assert sorted(reconcile(store)) == [a, b]
    for run in store.runs():
        assert run["status"] == "interrupted" and "ended without recording an end" in run["error"]
        assert 0 < run["step"] < run["total_steps"]
        loss = store.scalars(run["id"], names=["loss"])
        assert loss.step.tolist() == list(range(1, run["step"] + 1))   # every step up to the last write, no more
    m = store.accuracy_matrix(a)
    assert m["rows"] == [0] and np.isfinite(m["R"]).all()
    m = store.accuracy_matrix(b)
    assert m["rows"][:2] == [0, 1] and np.isfinite(m["R"]).all()   # whole rows only: a flush is one transaction
    assert integrity(db) == "ok"


@pytest.mark.slow
def test_four_concurrent_writers_and_a_polling_reader(db):
    store = Store(db)
    store.set_setting("max_concurrent", "4")
    configs = [resolve({"method": "lora", "steps_per_task": 20, "eval_interval": 10, "spectra_interval": 10,
                        "seed": seed, "stream_options": {"angles": [45, 90]}}).to_dict() for seed in range(4)]
    ids = launch(store, configs)
    reader, reads, lock_errors = Store(db), 0, []
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            runs = reader.runs(ids=ids)
            reader.accuracy_matrices(ids)
            reads += 1
        except Exception as exc:  # noqa: BLE001 - counted, then shown
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            lock_errors.append(str(exc).splitlines()[0])
            continue
        if all(r["status"] not in ("queued", "running") for r in runs):
            break
        time.sleep(0.2)
    assert [r["status"] for r in store.runs(ids=ids)] == ["finished"] * 4, [r["error"] for r in store.runs(ids=ids)]
    assert lock_errors == [] and reads > 5
    counts = [count_rows(store, i) for i in ids]
    assert all(c == counts[0] for c in counts) and counts[0]["spectra"] > 0, counts
    assert integrity(db) == "ok"


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    except OSError:   # no mount program
        return False
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """(the store's folder, keyword arguments for the run's process, a function that frees the space):
    a 1 MiB tmpfs filled up to 120 KiB free where this machine lets us mount one (Linux, as root), else a
    file size limit (RLIMIT_FSIZE) 100 KiB above the store's size, under which a write fails with EFBIG."""
    folder = tmp_path / "disk"
    if sys.platform == "linux" and _tmpfs(folder, "1m"):
        filler = folder / "filler"
        try:
            Store(str(folder / "runs.db"))   # the schema, before the disk fills up
            stat = os.statvfs(folder)
            filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 120 * 1024))
            yield folder, {}, lambda: filler.unlink()
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    if resource is None:
        pytest.skip("neither a tmpfs can be mounted here nor a file size limit set (RLIMIT_FSIZE)")
    folder.mkdir(exist_ok=True)
    _engine(Store(str(folder / "runs.db")).url).dispose()   # the schema moves from the WAL into the file
    limit = os.path.getsize(folder / "runs.db") + 100 * 1024   # the file and its WAL may grow by this much

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    yield folder, {"preexec_fn": limited}, lambda: None


@pytest.mark.slow
def test_a_full_disk_keeps_the_real_reason(small_disk, capsys):
    folder, limits, free = small_disk
    db = str(folder / "runs.db")
    child = cldash("--db", db, "run", "--method", "lora", "--stream-angles", "45,90", *SHORT, **limits)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("run 1: lora"), err   # no traceback
    reason = lines[1].split(": ", 1)[1].split(" (the store could not record this", 1)[0]
    assert lines[1].startswith("run 1 failed: the disk ") and "the run stopped at step" in reason, lines[1]
    free()
    assert main(["--db", db, "list"]) == 0   # reconciles: the reason recorded in the end file reaches the store
    run = Store(db).get_run(1)
    assert (run["status"], run["error"]) == ("failed", reason)
    from cldash.runs.processes import end_path

    assert not end_path(Store(db), 1).exists()
    capsys.readouterr()
    assert main(["--db", db, "show", "1"]) == 0 and f"reason    {reason}" in capsys.readouterr().out
    assert integrity(db) == "ok"


def test_a_read_only_store_is_listed_and_shown_and_refuses_writes_in_one_sentence(read_only_copy, capsys):
    path, queued = read_only_copy   # run 1 "running" with its process gone, `queued` waiting for a slot
    before = path.read_bytes()
    ro = f"sqlite:///file:{path}?mode=ro&uri=true"
    assert main(["--db", ro, "list"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "lora" in out and "full" in out
    assert main(["--db", ro, "show", "2"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "after T3" in out
    assert main(["--db", ro, "queue"]) == 0
    out, err = capsys.readouterr()
    assert err == f"cldash: cannot write to the run store file:{path}?mode=ro&uri=true: the store is read-only " \
                  "(sqlite3: attempt to write a readonly database); no queued run can start.\n"
    assert reconcile(Store(ro)) == []
    assert main(["--db", ro, "run", "--method", "lora", "--stream-angles", "90", *SHORT]) == 2
    assert capsys.readouterr().err == f"error: cannot write to the run store file:{path}?mode=ro&uri=true: the store " \
                                      "is read-only (sqlite3: attempt to write a readonly database).\n"
    assert path.read_bytes() == before
    runs = Store(str(path)).runs()
    assert len(runs) == 3 and runs[0]["status"] == "running" and runs[2]["pid"] is None and runs[2]["id"] == queued
