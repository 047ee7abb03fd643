"""Resume and fork at task boundaries, over the whole method registry.

For every method: a run of 3 tasks, against the same run interrupted (Ctrl-C) in its second task and
resumed from its checkpoint after task 1: every stored row (evaluations, scalars, spectra), the summary
and the final adapters are identical. A fork after task 1 with the same options reproduces its parent; a
fork with replay switched on shares rows 0..1 with its parent and differs from task 2 on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from cldash.config import resolve
from cldash.core.cache import sha256_file
from cldash.core.errors import UserError
from cldash.engine import checkpoints
from cldash.engine.adapters import saved_adapters
from cldash.methods import REGISTRY
from cldash.runs import lineage, recovery
from cldash.runs.execute import execute
from cldash.store import Evaluation, Scalar, Spectrum, Store

from conftest import keep_runs_queued

STEPS = 4
BASE = {"steps_per_task": STEPS, "batch_size": 16, "eval_interval": 2, "spectra_interval": 2,
        "dense_spectra_interval": 2, "stream_options": {"angles": [45, 90, 135]}}


def rows(store, run_id: int) -> dict:
    """Every row a run stored, without row ids, in a fixed order."""
    out = {}
    with store.engine.connect() as conn:
        for table in (Evaluation, Scalar, Spectrum):
            cols = [c for c in table.__table__.columns if c.name not in ("id", "run_id")]
            out[table.__tablename__] = sorted(tuple(r) for r in conn.execute(
                select(*cols).where(table.run_id == run_id)))
    return out


def adapters(store, run_id: int) -> dict:
    saved = saved_adapters(store, run_id)

    def flat(x, prefix=""):
        if isinstance(x, torch.Tensor):
            return {prefix: x}
        if isinstance(x, dict):
            return {k: v for key, val in x.items() for k, v in flat(val, f"{prefix}.{key}").items()}
        if isinstance(x, (list, tuple)):
            return {k: v for i, val in enumerate(x) for k, v in flat(val, f"{prefix}.{i}").items()}
        return {prefix: x}

    return flat(saved)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def interrupt_in_task_2(at_step: int = STEPS + 2):
    def progress(p):
        if p.step == at_step:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_a_resumed_run_is_identical_to_an_uninterrupted_one(method, db, few_test_digits):
    store = Store(db)
    cfg = resolve({"method": method, **BASE}).to_dict()
    whole = store.create_run(cfg)
    assert execute(store, whole) == "finished"
    cut = store.create_run(cfg)
    assert execute(store, cut, progress=interrupt_in_task_2()) == "interrupted"
    assert store.get_run(cut)["checkpoint_task"] == 1 and checkpoints.available(store, cut) == [1]
    assert lineage.resume(store, cut, start=False) == 1
    assert max(r[0] for r in rows(store, cut)["scalars"]) == STEPS   # the unfinished task's rows are gone
    assert execute(store, cut) == "finished"
    a, b = store.get_run(whole), store.get_run(cut)
    assert rows(store, whole) == rows(store, cut)
    assert a["summary"] == b["summary"] and (b["step"], b["resumes"], b["resume_task"]) == (3 * STEPS, 1, None)
    assert same(adapters(store, whole), adapters(store, cut))


def test_only_the_latest_checkpoint_is_kept_unless_all_are_asked_for(db, few_test_digits):
    store = Store(db)
    latest = store.create_run(resolve({"method": "lora", **BASE, "checkpoints": "latest"}).to_dict())
    every = store.create_run(resolve({"method": "lora", **BASE, "checkpoints": "all"}).to_dict())
    none = store.create_run(resolve({"method": "lora", **BASE, "checkpoints": "none"}).to_dict())
    for rid in (latest, every, none):
        assert execute(store, rid) == "finished"
    assert [checkpoints.available(store, r) for r in (latest, every, none)] == [[2], [1, 2], []]
    folder = Path(store.artifacts(every).checkpoint_dir(every))
    assert folder.parent.name == "runs.checkpoints"   # the default: next to the SQLite file
    assert sorted(p.name for p in folder.iterdir()) == ["sha256.json", "task-1.pt", "task-2.pt"]   # no temporary left
    store.delete_run(every)
    assert not folder.exists()


def test_a_damaged_checkpoint_is_refused_not_unpickled(db, few_test_digits):
    store = Store(db)
    rid = store.create_run(resolve({"method": "lora", **BASE}).to_dict())
    assert execute(store, rid, progress=interrupt_in_task_2()) == "interrupted"
    path = Path(checkpoints.path(store, rid, 1))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the checksum"):
        checkpoints.load(store, rid, 1)


def test_a_run_with_no_checkpoint_resumes_from_the_start(db, few_test_digits):
    store = Store(db)
    cfg = resolve({"method": "lora", **BASE}).to_dict()
    whole = store.create_run(cfg)
    assert execute(store, whole) == "finished"
    cut = store.create_run(cfg)
    assert execute(store, cut, progress=interrupt_in_task_2(at_step=2)) == "interrupted"
    assert lineage.resume(store, cut, start=False) == 0
    assert execute(store, cut) == "finished" and rows(store, whole) == rows(store, cut)


def _parent(store, **extra) -> int:
    rid = store.create_run(resolve({"method": "lora", **BASE, "checkpoints": "all", **extra}).to_dict())
    assert execute(store, rid) == "finished"
    return rid


def test_a_fork_with_the_same_options_reproduces_its_parent(db, few_test_digits):
    store = Store(db)
    parent = _parent(store)
    child = lineage.fork(store, parent, 1, {}, start=False)
    run = store.get_run(child)
    assert (run["parent_id"], run["fork_task"], run["status"]) == (parent, 1, "queued")
    assert execute(store, child) == "finished"
    assert rows(store, parent) == rows(store, child)
    assert store.get_run(parent)["summary"] == store.get_run(child)["summary"]
    assert same(adapters(store, parent), adapters(store, child))


def test_a_fork_with_replay_differs_from_task_2_on(db, few_test_digits):
    store = Store(db)
    parent = _parent(store)
    child = lineage.fork(store, parent, 1, {"replay": 64}, start=False)
    assert execute(store, child) == "finished"
    P, C = store.accuracy_matrix(parent), store.accuracy_matrix(child)
    assert C["rows"] == P["rows"] == [0, 1, 2, 3]
    assert (C["R"][:2] == P["R"][:2]).all()            # rows 0..1: the parent's
    assert (C["R"][2:] != P["R"][2:]).any()            # from task 2 on: replay changed the training
    assert store.get_run(child)["config"]["replay"] == 64


def test_a_fork_to_another_method_starts_on_the_merged_weights(db, few_test_digits):
    store = Store(db)
    parent = _parent(store)
    child = lineage.fork(store, parent, 1, {"method": "dora"}, start=False)
    assert execute(store, child) == "finished"
    P, C = store.accuracy_matrix(parent), store.accuracy_matrix(child)
    assert (C["R"][:2] == P["R"][:2]).all() and store.get_run(child)["method"] == "dora"


@pytest.mark.parametrize("after, changes, phrase", [
    (0, {}, "starts after one of its tasks 1 to 2 (got 0)"),
    (3, {}, "starts after one of its tasks 1 to 2 (got 3)"),
    (1, {"stream": "skills"}, "cannot change at a fork"),
    (1, {"steps_per_task": 8}, "steps_per_task cannot change at a fork"),
])
def test_what_cannot_fork_is_one_sentence(after, changes, phrase, db, few_test_digits):
    store = Store(db)
    parent = _parent(store)
    with pytest.raises(UserError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        lineage.fork(store, parent, after, changes, start=False)
    assert len(store.runs()) == 1


# -- the CLI, automatic resume, a real kill ---------------------------------------------------------

def test_cldash_resume_and_fork(db, capsys, few_test_digits, monkeypatch):
    from cldash.cli import main

    keep_runs_queued(monkeypatch)   # queue, start nothing: executed here
    store = Store(db)
    cut = store.create_run(resolve({"method": "lora", **BASE, "checkpoints": "all"}).to_dict())
    assert execute(store, cut, progress=interrupt_in_task_2()) == "interrupted"
    assert main(["--db", db, "resume", str(cut)]) == 0
    assert capsys.readouterr().out == (f"run {cut}: continues after task 1 of 3 from its checkpoint (step {STEPS}); "
                                       f"what it wrote after that step was removed\n")
    assert execute(store, cut) == "finished"
    assert main(["--db", db, "fork", str(cut), "--after-task", "2", "--method", "pissa", "--lr", "0.001"]) == 0
    out = capsys.readouterr().out
    assert out == f"run {cut + 1}: fork of run {cut} after task 2 (method=pissa, lr=0.001); pissa starts on run " \
                  f"{cut}'s merged weights\n"
    fork = store.get_run(cut + 1)
    assert (fork["method"], fork["config"]["lr"], fork["parent_id"], fork["fork_task"]) == ("pissa", 0.001, cut, 2)
    assert main(["--db", db, "show", str(cut)]) == 0
    assert "  lineage   resumed 1 time; checkpoints after task 1, 2\n" in capsys.readouterr().out
    assert main(["--db", db, "show", str(cut + 1)]) == 0
    assert f"  lineage   fork of run {cut} after task 2; checkpoints after task 2\n" in capsys.readouterr().out


@pytest.mark.parametrize("argv, phrase", [
    (["resume", "1"], "run 1 is finished; only an interrupted, failed or cancelled run can be resumed."),
    (["fork", "1"], "say after which task to fork: cldash fork 1 --after-task K."),
    (["fork"], "name the run to fork"),
    (["fork", "1", "--after-task", "1", "--stream", "skills"], "stream cannot change at a fork"),
    (["fork", "1", "--after-task", "1", "--rank", "0"], "--rank must be an integer"),
    (["fork", "9", "--after-task", "1"], "there is no run 9"),
])
def test_resume_and_fork_bad_input_is_one_sentence(argv, phrase, db, capsys, few_test_digits):
    from cldash.cli import main

    store = Store(db)
    _parent(store)
    before = len(store.runs())
    assert main(["--db", db, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err
    assert len(store.runs()) == before


def test_automatic_resume_queues_interrupted_runs_at_most_three_times(db, few_test_digits):
    store = Store(db)
    rid = store.create_run(resolve({"method": "lora", **BASE}).to_dict())
    assert execute(store, rid, progress=interrupt_in_task_2()) == "interrupted"
    assert recovery.auto_resume(store) == []   # off unless asked for
    store.set_setting(recovery.AUTO_RESUME_SETTING, "on")
    for attempt in range(1, 4):
        assert recovery.auto_resume(store) == [rid]
        run = store.get_run(rid)
        assert (run["status"], run["resume_task"], run["resumes"]) == ("queued", 1, attempt)
        store.update_run(rid, status="interrupted")   # as if the machine went down again
    assert recovery.auto_resume(store) == []   # three times is enough: a person should look


@pytest.mark.slow
def test_a_killed_background_run_resumes_by_itself_and_ends_as_if_never_killed(tmp_path):
    """kill -9 after the first checkpoint; with automatic resume on, the next `cldash queue` resumes the run from its
    checkpoint, and its rows end identical to a foreground run's of the same configuration."""
    import os
    import signal
    import time

    from cldash.cli import main
    from cldash.runs.launch import launch
    from cldash.runs.queue import reconcile

    db = str(tmp_path / "runs.db")
    cfg = {"method": "lora", "steps_per_task": 16, "batch_size": 16, "eval_interval": 8, "spectra_interval": 4,
           "stream_options": {"angles": [45, 90, 135, 180]}}
    store = Store(db)
    store.set_setting(recovery.AUTO_RESUME_SETTING, "on")
    (rid,) = launch(store, [resolve(cfg).to_dict()])
    deadline = time.time() + 120
    while time.time() < deadline:
        run = store.get_run(rid)
        if (run["checkpoint_task"] or 0) >= 1 and run["step"] > 18 and run["status"] == "running":
            break
        time.sleep(0.1)
    os.kill(run["pid"], signal.SIGKILL)
    time.sleep(0.3)
    reconcile(store)
    assert store.get_run(rid)["status"] in ("interrupted", "queued")
    assert main(["--db", db, "queue"]) == 0   # reconciles, resumes, starts it
    while time.time() < deadline + 120 and store.get_run(rid)["status"] != "finished":
        time.sleep(0.3)
    run = store.get_run(rid)
    assert (run["status"], run["resumes"]) == ("finished", 1), run["error"]
    assert main(["--db", db, "run", "--config", _write(tmp_path, cfg), "--quiet"]) == 0
    reference = store.runs()[-1]["id"]
    assert rows(store, rid) == rows(store, reference)


def _write(tmp_path, cfg) -> str:
    import json

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_a_checkpoint_that_cannot_be_unpickled_fails_the_resume_in_one_sentence(db, few_test_digits):
    """What a checkpoint written by another version looks like: its checksum matches, its classes do not load."""
    import json

    store = Store(db)
    rid = store.create_run(resolve({"method": "lora", **BASE}).to_dict())
    assert execute(store, rid, progress=interrupt_in_task_2()) == "interrupted"
    path = Path(checkpoints.path(store, rid, 1))
    path.write_bytes(b"not a pickle")
    sums = path.with_name("sha256.json")
    sums.write_text(json.dumps({"1": sha256_file(path)}))
    lineage.resume(store, rid, start=False)
    assert execute(store, rid) == "failed"
    error = store.get_run(rid)["error"]
    assert error.startswith(f"cannot load the checkpoint of run {rid} after task 1 (") and "\n" not in error


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_run(db, few_test_digits, monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save", full_disk)
    store = Store(db)
    rid = store.create_run(resolve({"method": "lora", **BASE}).to_dict())
    assert execute(store, rid) == "finished" and store.get_run(rid)["checkpoint_task"] is None
    assert "cldash: no checkpoint after task 1 (OSError: [Errno 28] No space left on device); the run goes on" \
        in capsys.readouterr().err
