"""The continual loop: determinism, divergence handling, spectra equal to a dense SVD, policies.

No test here checks how well a run scores, so the in-process runs evaluate on 64 held-out digits
(conftest.few_test_digits); the cross-process determinism test, whose child cannot be patched,
evaluates on all of them in both processes."""

import numpy as np
import pytest
import torch

from cldash.config import resolve
from cldash.engine.loop import ContinualRun
from cldash.measures.spectra import update_singular_values
from cldash.runs.execute import execute
from cldash.store import Store

SMALL = {"steps_per_task": 20, "eval_interval": 10, "spectra_interval": 5, "dense_spectra_interval": 10,
         "stream_options": {"angles": [60, 120]}}
# For the tests of a run's structure (spectra against a dense SVD, the policies at the boundary, which
# parameters train), which no step count changes: 10 steps a task, spectra and an evaluation halfway.
# The tests that name steps (divergence, crash, cancel, full disk) keep SMALL's 20.
BRIEF = {**SMALL, "steps_per_task": 10, "eval_interval": 5}


def _run(db, **overrides):
    store = Store(db)
    cfg = resolve({"method": "lora", **SMALL, **overrides}).to_dict()
    run_id = store.create_run(cfg)
    status = execute(store, run_id)
    return store, run_id, status


def test_same_seed_same_numbers(tmp_path, few_test_digits):
    a_store, a, _ = _run(str(tmp_path / "a.db"), seed=3)
    b_store, b, _ = _run(str(tmp_path / "b.db"), seed=3)
    c_store, c, _ = _run(str(tmp_path / "c.db"), seed=4)
    la = a_store.scalars(a, names=["loss"]).value.to_numpy()
    lb = b_store.scalars(b, names=["loss"]).value.to_numpy()
    lc = c_store.scalars(c, names=["loss"]).value.to_numpy()
    assert np.array_equal(la, lb)
    assert not np.array_equal(la, lc)
    np.testing.assert_array_equal(a_store.accuracy_matrix(a)["R"], b_store.accuracy_matrix(b)["R"])
    sa, sb = a_store.spectra(a), b_store.spectra(b)
    assert all(np.array_equal(x, y) for x, y in zip(sa["values"], sb["values"]))


@pytest.mark.slow
def test_same_seed_same_matrix_whatever_the_thread_count_with_no_pretraining(tmp_path, monkeypatch, capsys):
    """Two people with the same cldash and seed get the same accuracy matrix on CPU: the backbone
    is the shipped file (an empty cache stays empty), and a run uses one intra-op thread unless told
    otherwise, so neither the machine's core count nor the launcher's share of it changes the sums.

    Two processes (each with its own hash seed and thread pool): a `cldash run` child started with
    two threads, and this test process itself (one thread), which runs the same seed while the child
    works."""
    import os
    import subprocess
    import sys

    from cldash.cli import main

    from conftest import SHORT

    def argv(threads):
        return ["--db", str(tmp_path / f"t{threads}.db"), "run", "--method", "lora", "--seed", "5",
                "--stream-angles", "60,120", *SHORT]

    def env(threads):
        cache = str(tmp_path / f"cache{threads}")
        return {"OMP_NUM_THREADS": threads, "CLDASH_THREADS": threads, "CLDASH_CACHE": cache}

    child = subprocess.Popen([sys.executable, "-m", "cldash", *argv("2")], env={**os.environ, **env("2")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threads_before = torch.get_num_threads()
    try:
        for key, value in env("1").items():
            monkeypatch.setenv(key, value)
        torch.set_num_threads(1)     # what the child's two threads are compared with
        assert main(argv("1")) == 0
    finally:
        torch.set_num_threads(threads_before)
        out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err
    capsys.readouterr()
    matrices, losses = [], []
    for threads in ("1", "2"):
        assert not (tmp_path / f"cache{threads}" / "backbones").exists()
        store = Store(str(tmp_path / f"t{threads}.db"))
        (run,) = store.runs()
        assert run["weights"]["source"] == "shipped" and run["config"]["threads"] == 1
        matrices.append(store.accuracy_matrix(run["id"])["R"])
        losses.append(store.scalars(run["id"], names=["loss"]).value.to_numpy())
    np.testing.assert_array_equal(matrices[0], matrices[1])
    np.testing.assert_array_equal(losses[0], losses[1])


def test_non_finite_loss_fails_the_run_with_step_and_reason(tmp_path, monkeypatch, few_test_digits):
    from cldash.streams.digits import DigitsRotate

    calls = {"n": 0}
    original = DigitsRotate.loss

    def poisoned(self, model, batch, task):
        calls["n"] += 1
        loss = original(self, model, batch, task)
        return loss * float("nan") if calls["n"] == 27 else loss

    monkeypatch.setattr(DigitsRotate, "loss", poisoned)
    store, run_id, status = _run(str(tmp_path / "nan.db"))
    run = store.get_run(run_id)
    assert status == "failed" and run["status"] == "failed"
    assert run["error"].startswith("the loss became nan at step 27 (task 2, rotate 120°, step 7 of 20)")
    assert "lower the learning rate" in run["error"]
    # what was written before stays: row 0 and task 1 of R, and 26 losses
    m = store.accuracy_matrix(run_id)
    assert m["rows"] == [0, 1]
    assert store.scalars(run_id, names=["loss"]).step.max() == 26
    assert run["summary"] is None


def _huge(value: float):
    return lambda *args, **kwargs: torch.tensor(value)


# (patched term, its value, run options, the stored error): the message names the term that made the loss
# explode and what to lower, rather than blaming the learning rate.
CULPRITS = {
    "ewc": ("cldash.engine.rehearsal.EWC.penalty", 3.2e38, {"ewc_lambda": 100.0},
            "the loss became 3.2e+38 at step 1 (task 1, rotate 60°, step 1 of 20): the EWC penalty is 3.2e+38 "
            "with --ewc-lambda 100; lower --ewc-lambda."),
    "replay": ("cldash.engine.rehearsal.replay_loss", float("inf"), {"replay": 50},
               "the loss became inf at step 21 (task 2, rotate 120°, step 1 of 20): the replay loss (on finished "
               "tasks' examples) is inf; lower the learning rate (0.005), clip gradients (--max-grad-norm) or turn "
               "replay off (--replay 0)."),
    "lora": ("cldash.methods.lora.LoRA.extra_loss", float("nan"), {},
             "the loss became nan at step 1 (task 1, rotate 60°, step 1 of 20): lora's own loss term is nan; "
             "lower the learning rate (0.005) or clip gradients (--max-grad-norm)."),
    "olora": ("cldash.methods.olora.OLoRA.extra_loss", float("inf"), {"method": "olora"},
              "the loss became inf at step 1 (task 1, rotate 60°, step 1 of 20): olora's own loss term is inf with "
              "--lambda-1 0.5, --lambda-2 0; lower them."),
}


@pytest.mark.parametrize("culprit", list(CULPRITS))
def test_a_diverging_loss_names_the_term_that_exploded(tmp_path, monkeypatch, culprit, few_test_digits):
    target, value, options, error = CULPRITS[culprit]
    monkeypatch.setattr(target, _huge(value))
    store, run_id, status = _run(str(tmp_path / "d.db"), **options)
    run = store.get_run(run_id)
    assert status == "failed" and run["error"] == error


def test_crash_is_recorded_with_its_reason(tmp_path, monkeypatch, few_test_digits):
    from cldash.methods.lora import LoRA

    def boom(self, ctx):
        if ctx.step == 13:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(LoRA, "after_step", boom)
    store, run_id, status = _run(str(tmp_path / "crash.db"))
    run = store.get_run(run_id)
    assert status == "failed"
    assert run["error"].startswith("RuntimeError at step 13: simulated crash")
    assert store.scalars(run_id, names=["loss"]).step.max() == 12   # step 13 never completed
    assert (run["step"], run["progress"], run["task"]) == (12, 12 / 40, 1)   # the end names the last completed step


@pytest.mark.parametrize("method,policy", [("lora", "single"), ("lora", "merge"), ("lora", "stack"),
                                           ("full", None)])
def test_stored_spectra_equal_a_dense_svd_of_the_update(tmp_path, method, policy, few_test_digits):
    store = Store(str(tmp_path / "s.db"))
    resolved = resolve({"method": method, "policy": policy, **BRIEF})
    run_id = store.create_run(resolved.to_dict())
    crun = ContinualRun(resolved, writer=store.writer(run_id))
    crun.run()
    crun.writer.flush()
    last = store.spectra(run_id, kind="cumulative")
    last = last[last.step == last.step.max()]
    assert len(last) == 12
    for name, layer in crun.method.layers.items():
        dense = (layer.effective_weight() - layer.w0).detach().double()
        want = torch.linalg.svdvals(dense).numpy()
        got = last[last.module == name]["values"].iloc[0]
        k = len(got)
        np.testing.assert_allclose(got, want[:k], rtol=2e-4, atol=1e-6)
        if method == "lora" and policy == "single":
            assert k == 8     # one rank-8 adapter: eight singular values, the rest exactly zero
            assert want[8:].max() < 1e-5 * want[0]
    # the factored read-out is exact for every low-rank policy, dense for full fine-tuning
    kinds = {type(u).__name__ for u in crun.method.updates().values()}
    assert kinds == ({"Dense"} if method == "full" else {"LowRank"})


def test_merge_and_stack_policies_keep_the_function_at_the_boundary(tmp_path, few_test_digits):
    """Merging the stacked adapters changes no output (frozen adapters sum exactly into W)."""
    resolved = resolve({"method": "lora", "policy": "stack", **BRIEF})
    crun = ContinualRun(resolved)
    crun.run()
    layer = next(iter(crun.method.layers.values()))
    assert len(layer.branches) == 2   # one frozen adapter per task
    x = crun.stream.tasks[0].test.x[:64]
    crun.model.eval()
    with torch.no_grad():
        before = crun.model(x)
        sigma_before = update_singular_values(layer.update())
        crun.method.merge()
        after = crun.model(x)
    assert len(layer.branches) == 0
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(update_singular_values(layer.update()), sigma_before, rtol=1e-4, atol=1e-7)


def test_lora_trains_only_adapters_and_full_trains_everything(few_test_digits):
    lora = ContinualRun(resolve({"method": "lora", **BRIEF}))
    w = {n: p.detach().clone() for n, p in lora.model.net.named_parameters() if "branches" not in n}
    lora.run()
    for n, p in lora.model.net.named_parameters():
        if "branches" not in n:
            assert torch.equal(p, w[n]), n   # the backbone, head included, is untouched
    full = ContinualRun(resolve({"method": "full", **BRIEF}))
    w = {n: p.detach().clone() for n, p in full.model.net.named_parameters()}
    full.run()
    changed = [n for n, p in full.model.net.named_parameters() if not torch.equal(p, w[n])]
    assert len(changed) == len(w)


def test_train_head_option_trains_the_pretrained_classifier(few_test_digits):
    crun = ContinualRun(resolve({"method": "lora", "train_head": True, **BRIEF}))
    before = crun.model.net.classifier.weight.detach().clone()
    crun.run()
    assert not torch.equal(crun.model.net.classifier.weight, before)


def test_a_cancelled_run_stores_the_step_its_reason_names(tmp_path, monkeypatch, few_test_digits):
    """The final status write carries the step, progress and task of the last completed step, so a
    run cancelled at step 30 reads step 30 (not the step of the last periodic flush)."""
    import os
    import signal

    from cldash.store import RunWriter

    monkeypatch.setattr(RunWriter, "due", lambda self: False)   # no periodic flush: only the end moves the step
    store = Store(str(tmp_path / "end.db"))
    run_id = store.create_run(resolve({"method": "lora", **SMALL}).to_dict())

    def progress(p):
        if p.step == 30:
            os.kill(os.getpid(), signal.SIGTERM)   # what `cldash cancel` sends; the engine's handler catches it

    assert execute(store, run_id, progress=progress) == "cancelled"
    run = store.get_run(run_id)
    assert run["error"] == "cancelled at step 30"
    assert (run["step"], run["progress"], run["task"]) == (30, 30 / 40, 2)
    assert store.scalars(run_id, names=["loss"]).step.max() == 30   # the buffered rows landed with the end


def test_a_full_disk_mid_run_keeps_its_reason(tmp_path, monkeypatch, capsys, few_test_digits):
    """Every write fails from some point on (SQLite's "database or disk is full"), the final status
    write included: `cldash run` says why in one line, and reconcile later records that reason from
    the run's end file instead of "interrupted at step 0"."""
    import sqlite3

    from sqlalchemy import event

    import cldash.runs.processes as processes
    import cldash.runs.queue as queue
    from cldash.cli import main
    from cldash.store import RunWriter, _engine, to_url

    from conftest import SHORT

    db = str(tmp_path / "full.db")
    store = Store(db)
    monkeypatch.setattr(RunWriter, "due", lambda self: len(self._scalars) >= 20)   # a flush every 10 steps
    monkeypatch.setattr("cldash.runs.execute.END_RETRIES", (0.01, 0.01))
    scalar_flushes = []

    def disk_full(conn, cursor, statement, params, context, executemany):
        if statement.startswith("INSERT INTO scalars"):
            scalar_flushes.append(1)
        if len(scalar_flushes) > 2 and statement.startswith(("INSERT", "UPDATE")):
            raise sqlite3.OperationalError("database or disk is full")

    engine = _engine(to_url(db))
    event.listen(engine, "before_cursor_execute", disk_full)
    try:
        assert main(["--db", db, "run", "--method", "lora", "--stream-angles", "45,90", *SHORT]) == 1
    finally:
        event.remove(engine, "before_cursor_execute", disk_full)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("run 1: "), err    # the run's name, then how it ended
    assert err[1].startswith("run 1 failed: the disk is full (sqlite3: database or disk is full); the run "
                             "stopped at step 30 (the store could not record this; it is kept in "), err
    assert store.get_run(1)["status"] == "running"   # what the store could take: the end never landed
    monkeypatch.setattr(queue, "is_run_process", lambda pid: False)   # as once `cldash run` has exited
    assert queue.reconcile(store) == [1]
    run = store.get_run(1)
    assert run["status"] == "failed" and run["step"] == 30 and run["task"] == 1
    assert run["error"] == "the disk is full (sqlite3: database or disk is full); the run stopped at step 30"
    assert not processes.end_path(store, 1).exists()


def test_the_stored_step_follows_the_run_every_flush_interval_between_task_ends(tmp_path, few_test_digits):
    """A run writes its step at every flush, FLUSH_SECONDS apart (not only at task ends), so a page that
    refreshes every 2 s sees it move. The writer's clock moves half an interval at each reading, so it flushes
    at every second step; after each step the progress callback reads the step the store holds."""
    from cldash.store import FLUSH_SECONDS, RunWriter

    assert FLUSH_SECONDS <= 1.0   # at most half the Live page's 2 s refresh
    store = Store(str(tmp_path / "p.db"))
    assert store.writer(1).flush_seconds == FLUSH_SECONDS   # what execute's writer uses
    resolved = resolve({"method": "lora", **BRIEF})        # 2 tasks x 10 steps
    run_id = store.create_run(resolved.to_dict())
    readings = iter(range(10 ** 6))
    seen = []
    crun = ContinualRun(resolved, writer=RunWriter(store, run_id, clock=lambda: next(readings) * FLUSH_SECONDS / 2),
                        progress=lambda p: seen.append((p.step, store.get_run(run_id)["step"])))
    crun.run()
    # every even step flushes; a task's last step is written by the task end's flush, after its callback
    want = [(s, s if s % 2 == 0 and s % 10 else s - 1 if s % 10 else s - 2) for s in range(1, 21)]
    assert seen == want
    assert want[:4] == [(1, 0), (2, 2), (3, 2), (4, 4)] and want[9:12] == [(10, 8), (11, 10), (12, 12)]
