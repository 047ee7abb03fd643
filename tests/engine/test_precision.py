"""Mixed precision, torch.compile, evaluation at scale and out of memory (cldash.engine.precision, .loop,
.evaluation), and what a run records of them (runs.runtime).

The bf16 band: on the shipped vit-tiny (pre-trained) and digits-rotate, the task loss of a batch of 64 under
CPU bf16 autocast is within a relative 1e-2 of its float32 loss. Measured on torch 2.13 CPU over 20 batches (4
per task, seeds 0..4): at most 1.9e-3 (bf16) and 2.7e-4 (fp16); the band leaves a factor of 5 for other
CPUs' bf16 kernels. Runs here are tiny (a few steps a task, 64 test digits)."""

import math

import numpy as np
import pytest
import torch

from cldash.config import resolve
from cldash.core.errors import ConfigError
from cldash.engine import loop
from cldash.engine.evaluation import TaskScores
from cldash.engine.loop import ContinualRun
from cldash.engine.precision import Precision, usable
from cldash.engine.readouts import at_least_float32
from cldash.measures.spectra import Dense, LowRank, analyze
from cldash.runs.execute import execute
from cldash.store import Store

BF16_BAND = 1e-2    # relative difference of the task loss, bf16 autocast against float32 (measured: 1.9e-3)
FP16_BAND = 2e-3    # the same for fp16 (measured: 2.7e-4)
TINY = {"method": "lora", "steps_per_task": 6, "eval_interval": 3, "spectra_interval": 3, "dense_spectra_interval": 3,
        "stream_options": {"angles": [60, 120]}}


def _run(tmp_path, **overrides):
    store = Store(str(tmp_path / "runs.db"))
    run_id = store.create_run(resolve({**TINY, **overrides}).to_dict())
    status = execute(store, run_id)
    return store, run_id, status


def _losses(**overrides) -> tuple[list[float], ContinualRun]:
    crun = ContinualRun(resolve({**TINY, **overrides}))
    losses = []
    crun.progress = lambda p: losses.append(p.loss)
    crun.run()
    return losses, crun


@pytest.mark.parametrize("precision,band", [("bf16", BF16_BAND), ("fp16", FP16_BAND)])
def test_autocast_loss_on_cpu_is_within_the_documented_band_of_fp32(precision, band, few_test_digits):
    crun = ContinualRun(resolve({**TINY, "stream_options": {}}))
    amp = Precision.for_device(precision, torch.device("cpu"))
    diffs = []
    for t, task in enumerate(crun.tasks):
        batches = crun.stream.batches(task, 64, torch.Generator().manual_seed(t))
        for _ in range(4):
            batch = next(batches)
            with torch.no_grad():
                full = crun.stream.loss(crun.model, batch, task).item()
                with amp.autocast():
                    low = crun.stream.loss(crun.model, batch, task)
            assert low.dtype == torch.float32   # autocast computes cross-entropy in float32
            diffs.append(abs(low.item() - full) / abs(full))
    assert 0 < max(diffs) < band   # 0 < : autocast really ran in the lower precision


def test_a_bf16_run_finishes_with_finite_metrics_float32_weights_and_records_its_precision(tmp_path,
                                                                                          few_test_digits):
    store, run_id, status = _run(tmp_path, precision="bf16")
    run = store.get_run(run_id)
    assert status == "finished"
    assert run["runtime"] == {"precision": "bf16", "compile": False, "eval_subset": 0, "deterministic": False,
                              "stream": {}}
    assert all(math.isfinite(v) for v in run["summary"].values() if isinstance(v, float))
    losses = store.scalars(run_id, names=["loss"]).value.to_numpy()
    assert len(losses) == 12 and np.isfinite(losses).all()
    # the bf16 losses are not the fp32 ones (autocast ran), but close on the first step (same weights, batch)
    fp32, _ = _losses()
    assert losses[0] != fp32[0] and abs(losses[0] - fp32[0]) < BF16_BAND * fp32[0]


def test_bf16_keeps_the_trained_weights_and_the_spectra_in_float32(monkeypatch, few_test_digits):
    from cldash.engine.readouts import Readouts
    from cldash.methods.lora import LoRA

    autocast_on = {}   # hook -> was autocast on in any call

    def spy(cls, name):
        real = getattr(cls, name)

        def call(self, *args, **kwargs):
            autocast_on[name] = autocast_on.get(name, False) or torch.is_autocast_enabled("cpu")
            return real(self, *args, **kwargs)
        monkeypatch.setattr(cls, name, call)

    for cls, name in ((LoRA, "after_step"), (LoRA, "extra_loss"), (Readouts, "log")):
        spy(cls, name)
    _, crun = _losses(precision="bf16")
    # the loss terms run under autocast; the step's after_step hooks and the spectra outside it
    assert autocast_on == {"extra_loss": True, "after_step": False, "log": False}
    assert {p.dtype for p in crun.trainable_parameters()} == {torch.float32}
    assert {u.B.dtype for u in crun.method.updates().values()} == {torch.float32}
    # a bf16 factor (a bf16 backbone, a method's own buffer) is cast up before the difference and the SVD
    B, A = torch.randn(32, 4, dtype=torch.bfloat16), torch.randn(4, 24, dtype=torch.bfloat16)
    up = at_least_float32(LowRank(B, A))
    assert (up.B.dtype, up.A.dtype) == (torch.float32, torch.float32)
    assert at_least_float32(Dense(torch.zeros(2, 2, dtype=torch.float64))).M.dtype == torch.float64
    want = torch.linalg.svdvals(B.double() @ A.double()).numpy()[:4]
    np.testing.assert_allclose(analyze({"m": up})["m"].sigma[:4], want, rtol=1e-5)


def test_an_fp16_run_scales_its_loss_and_finishes(tmp_path, few_test_digits):
    store, run_id, status = _run(tmp_path, precision="fp16")
    assert status == "finished" and store.get_run(run_id)["runtime"]["precision"] == "fp16"
    scale = store.scalars(run_id, names=["loss_scale"]).value.to_numpy()
    assert len(scale) == 12 and (scale == 65536.0).all()   # GradScaler's initial scale; no step overflowed
    assert (store.scalars(run_id, names=["skipped_step"]).value.to_numpy() == 0).all()


def test_an_fp16_step_the_scaler_skips_is_no_divergence(tmp_path, monkeypatch, few_test_digits):
    """A scale so large that the first gradients overflow fp16 (65504): GradScaler skips those steps and halves
    its scale each time; the run reads the unscaled loss, so it goes on and finishes."""
    real = Precision.for_device

    def huge_scale(requested, device):
        p = real(requested, device)
        p.scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 24)
        return p

    monkeypatch.setattr(Precision, "for_device", staticmethod(huge_scale))
    store, run_id, status = _run(tmp_path, precision="fp16")
    assert status == "finished"
    skipped = store.scalars(run_id, names=["skipped_step"]).value.to_numpy()
    scale = store.scalars(run_id, names=["loss_scale"]).value.to_numpy()
    assert skipped[0] == 1 and skipped[-1] == 0
    assert scale[0] == 2.0 ** 23 and (np.diff(scale) <= 0).all()   # halved once per skipped step
    assert scale[-1] == 2.0 ** (24 - skipped.sum())


def test_a_skipped_step_leaves_the_weights_and_a_taken_one_moves_them():
    layer = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    amp = Precision.for_device("fp16", torch.device("cpu"))
    amp.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127)
    before = layer.weight.detach().clone()
    with amp.autocast():
        loss = layer(x).float().pow(2).mean() * 1e6
    assert amp.step(loss, opt, list(layer.parameters()), max_grad_norm=1.0) is False
    assert torch.equal(layer.weight, before) and amp.scaler.get_scale() == 2.0 ** 126
    assert layer.weight.grad is None   # its inf gradients dropped: after_step hooks never read them
    amp.scaler = torch.amp.GradScaler("cpu")
    opt.zero_grad()
    with amp.autocast():
        loss = layer(x).float().pow(2).mean()
    assert amp.step(loss, opt, list(layer.parameters()), max_grad_norm=1.0) is True
    assert not torch.equal(layer.weight, before) and layer.weight.dtype == torch.float32


def test_without_bf16_or_autocast_a_run_says_so_and_falls_back(monkeypatch, capsys, few_test_digits):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    assert usable("bf16", torch.device("cuda")) == \
        ("fp16", "Tesla V100 has no bf16, so the run uses fp16 (with a gradient scaler) instead")
    assert usable("fp16", torch.device("cuda")) == ("fp16", "")
    assert usable("bf16", torch.device("cpu")) == ("bf16", "")
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    crun = ContinualRun(resolve({**TINY, "precision": "bf16"}))
    assert capsys.readouterr().err == "cldash: cpu has no autocast in this PyTorch, so the run uses fp32 instead of " \
                                      "bf16.\n"
    assert crun.runtime()["precision"] == "fp32" and crun.runtime()["precision_requested"] == "bf16"


def test_compiled_runs_give_the_plain_runs_losses(monkeypatch, few_test_digits):
    """The compile path with a cheap backend (aot_eager traces the same graphs as inductor, without its slow
    CPU code generation): the same losses, bit for bit, through two tasks (a recompile at the boundary)."""
    monkeypatch.setattr(loop, "COMPILE_BACKEND", "aot_eager")
    plain, _ = _losses(policy="stack")
    compiled, crun = _losses(policy="stack", compile=True)
    assert compiled == plain and len(plain) == 12
    assert crun.forward_model is not crun.model and crun.runtime()["compile"] is True


def test_a_method_that_cannot_compile_says_why_and_runs_without(monkeypatch, capsys, tmp_path, few_test_digits):
    from cldash.methods.lora import LoRA

    monkeypatch.setattr(LoRA, "compile_note", "its branches are rebuilt at every step")
    store, run_id, status = _run(tmp_path, compile=True)
    assert status == "finished"
    assert "cldash: --compile is off for lora: its branches are rebuilt at every step.\n" in capsys.readouterr().err
    runtime = store.get_run(run_id)["runtime"]
    assert runtime["compile"] is False and runtime["compile_note"] == "its branches are rebuilt at every step"


def test_anytime_scores_use_one_fixed_subset_and_the_rows_of_r_the_full_test_sets(monkeypatch, few_test_digits):
    from cldash.streams.digits import DigitsRotate

    seen = []   # (evaluated under inference mode, its test labels as a tuple, the stored test x's id)
    real = DigitsRotate.evaluate

    def spy(self, model, task, batch_size=1024):
        seen.append((torch.is_inference_mode_enabled(), task.name, len(task.test), task.test.x.data_ptr()))
        return real(self, model, task, batch_size)

    monkeypatch.setattr(DigitsRotate, "evaluate", spy)
    _, crun = _losses(eval_subset=10, eval_interval=2)
    assert crun.runtime()["eval_subset"] == 10
    assert all(mode for mode, *_ in seen)
    full = {name: n for _, name, n, _ in seen[:3]}   # row 0: every task's (and the general one's) full test set
    assert sorted(full.values()) == sorted(len(t.test) for t in crun.tasks + crun.stream.general)
    anytime = [(name, n, ptr) for _, name, n, ptr in seen if n == 10]
    finals = [(name, n) for _, name, n, _ in seen if n != 10]
    assert len(anytime) == 2 * 2 * 3 and len(finals) == 3 * 3   # 2 anytime evaluations a task; rows 0, 1, 2
    assert all(n == full[name] for name, n in finals)
    assert len({(name, ptr) for name, _, ptr in anytime}) == 3   # one subset per task, drawn once


def test_the_subset_is_seeded_by_the_run_seed_and_the_task(few_test_digits):
    crun = ContinualRun(resolve(TINY))
    task = crun.tasks[0]

    def pick(seed, pos):
        return TaskScores(crun.stream, 64, subset=10, seed=seed).subset_of(task, pos).test.y

    assert torch.equal(pick(0, 1), pick(0, 1))
    assert len(pick(0, 1)) == 10
    assert not torch.equal(pick(0, 1), pick(1, 1)) and not torch.equal(pick(0, 1), pick(0, 2))
    whole = TaskScores(crun.stream, 64, subset=10_000, seed=0).subset_of(task, 1)
    assert whole is task   # a subset as large as the test set is the test set


def test_running_out_of_memory_in_a_step_names_the_batch_size_and_precision(tmp_path, monkeypatch, few_test_digits):
    from cldash.streams.digits import DigitsRotate

    calls = {"n": 0}
    real = DigitsRotate.loss

    def oom(self, model, batch, task):
        calls["n"] += 1
        if calls["n"] == 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model, batch, task)

    monkeypatch.setattr(DigitsRotate, "loss", oom)
    store, run_id, status = _run(tmp_path, batch_size=256)
    run = store.get_run(run_id)
    assert status == "failed"
    assert run["error"] == "out of cpu memory at step 8 (task 2) with batch size 256 in fp32; try --batch-size 128 " \
                           "or --precision bf16."
    assert run["step"] == 7
    # on a GPU without bf16 the sentence names fp16 instead
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    crun = ContinualRun(resolve(TINY))
    crun.device, crun.step = torch.device("cuda"), 5
    assert crun.out_of_memory(1) == "out of GPU memory at step 5 (task 1) with batch size 64 in fp32; try " \
                                    "--batch-size 32 or --precision fp16."


def test_running_out_of_memory_while_scoring_names_the_eval_batch_size(tmp_path, monkeypatch, few_test_digits):
    from cldash.streams.digits import DigitsRotate

    def oom(self, model, task, batch_size=1024):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(DigitsRotate, "evaluate", oom)
    store, run_id, status = _run(tmp_path, precision="bf16", eval_batch_size=512)
    assert status == "failed"
    assert store.get_run(run_id)["error"] == "out of cpu memory while scoring the tasks after step 0 with eval batch " \
                                             "size 512 in bf16; try --eval-batch-size 256."


def test_resolve_refuses_a_subset_with_no_anytime_evaluation_and_takes_fp16_on_cpu():
    with pytest.raises(ConfigError, match=r"^eval_subset 100 has nothing to score: eval_interval is 0") as err:
        resolve({**TINY, "eval_subset": 100, "eval_interval": 0})
    assert err.value.field == "eval_subset"
    assert resolve({**TINY, "precision": "fp16", "device": "cpu"}).config.precision == "fp16"
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        resolve({**TINY, "precision": "fp8"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device bench runs it)")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_tiny_run_on_cuda_in_each_precision(tmp_path, precision, few_test_digits):
    store, run_id, status = _run(tmp_path, precision=precision, device="cuda")
    run = store.get_run(run_id)
    assert status == "finished" and run["device"].startswith("cuda")
    want = precision if precision == "fp16" or torch.cuda.is_bf16_supported() else "fp16"
    assert run["runtime"]["precision"] == want
    assert np.isfinite(store.scalars(run_id, names=["loss"]).value.to_numpy()).all()
    assert run["runtime"]["deterministic"] is True
    (tmp_path / "again").mkdir()
    again, again_id, _ = _run(tmp_path / "again", precision=precision, device="cuda")
    assert again.get_run(again_id)["summary"] == run["summary"]   # the same GPU, the same numbers


def test_adalora_s_importance_scores_stay_finite_through_skipped_fp16_steps(monkeypatch, few_test_digits):
    """AdaLoRA reads the gradients in after_step (its importance scores): the steps the scaler skips give it
    none, so its scores stay finite and its pruning goes on."""
    real = Precision.for_device

    def huge_scale(requested, device):
        p = real(requested, device)
        p.scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 24)
        return p

    from cldash.methods.adalora import RankAllocator

    finite = []   # after each update of the importance scores: are they all finite
    real_update = RankAllocator.update_ipt

    def update_ipt(self):
        real_update(self)
        finite.append(all(bool(torch.isfinite(v).all()) for v in self.exp_avg_ipt.values()))

    monkeypatch.setattr(Precision, "for_device", staticmethod(huge_scale))
    monkeypatch.setattr(RankAllocator, "update_ipt", update_ipt)
    _, crun = _losses(method="adalora", precision="fp16")
    assert crun.precision.scaler.get_scale() < 2.0 ** 24   # some steps were skipped
    assert finite and all(finite)


def test_a_resumed_fp16_run_goes_on_with_the_loss_scale_of_the_uninterrupted_one(tmp_path, monkeypatch,
                                                                                  few_test_digits):
    """The scale starts so high that the first task skips steps and lowers it: a resume that started again
    from the initial scale would skip steps again in task 2, and its losses and scales would differ."""
    from cldash.runs import lineage

    real = Precision.for_device

    def huge_scale(requested, device):
        p = real(requested, device)
        p.scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 24)
        return p

    def interrupt(p):
        if p.step == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(Precision, "for_device", staticmethod(huge_scale))
    store = Store(str(tmp_path / "runs.db"))
    cfg = resolve({**TINY, "precision": "fp16"}).to_dict()
    whole, cut = store.create_run(cfg), store.create_run(cfg)
    assert execute(store, whole) == "finished"
    assert execute(store, cut, progress=interrupt) == "interrupted"
    assert lineage.resume(store, cut, start=False) == 1
    assert execute(store, cut) == "finished"
    a, b = (store.scalars(r, names=["loss", "loss_scale", "skipped_step"]) for r in (whole, cut))
    assert a[a.name == "skipped_step"].value.sum() > 0   # the first task did skip steps
    assert a[["step", "name", "value"]].values.tolist() == b[["step", "name", "value"]].values.tolist()


def test_an_inf_task_loss_in_fp16_points_at_bf16(tmp_path, monkeypatch, few_test_digits):
    from cldash.streams.digits import DigitsRotate

    real = DigitsRotate.loss
    monkeypatch.setattr(DigitsRotate, "loss", lambda self, *a: real(self, *a) * float("inf"))
    store, run_id, status = _run(tmp_path, precision="fp16")
    assert status == "failed"
    assert store.get_run(run_id)["error"] == "the loss became inf at step 1 (task 1, rotate 60°, step 1 of 6) in " \
                                             "fp16; try --precision bf16 (fp16's range ends at 65504) or lower the " \
                                             "learning rate."


def test_the_cli_flags_reach_the_run_and_its_record(tmp_path, capsys, few_test_digits):
    from cldash.cli import main

    db = str(tmp_path / "cli.db")
    assert main(["--db", db, "run", "--method", "lora", "--stream-angles", "60,120", "--steps-per-task", "4",
                 "--eval-interval", "2", "--spectra-interval", "0", "--quiet", "--precision", "bf16",
                 "--eval-subset", "8"]) == 0
    run = Store(db).get_run(1)
    assert (run["config"]["precision"], run["config"]["eval_subset"], run["config"]["compile"]) == ("bf16", 8, False)
    assert {k: run["runtime"][k] for k in ("precision", "compile", "eval_subset")} == \
        {"precision": "bf16", "compile": False, "eval_subset": 8}


def test_what_trains_is_float32_even_on_a_bf16_backbone(few_test_digits):
    """A backbone loaded in bf16: full fine-tuning trains every weight, each one turned float32 when its task
    begins (the frozen parts keep their dtype); the run's steps then go on as usual."""
    crun = ContinualRun(resolve({**TINY, "method": "full", "precision": "bf16", "eval_interval": 0}))
    crun.model.to(torch.bfloat16)
    training = crun.begin_task(1, crun.tasks[0])
    assert {p.dtype for p in training.params} == {torch.float32}
    assert math.isfinite(crun.train_step(training, 1))


def test_a_gpu_run_asks_for_deterministic_kernels_and_a_cpu_run_leaves_the_settings_alone(monkeypatch):
    """On CUDA the run fixes cuBLAS's workspace, turns cuDNN's autotuning off and asks for PyTorch's deterministic
    kernels (warn only), so the same GPU gives the same numbers again; on a CPU nothing changes."""
    import torch

    from cldash.engine.loop import reproducible_on

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    before = torch.are_deterministic_algorithms_enabled()
    assert reproducible_on(torch.device("cpu")) is False
    assert torch.backends.cudnn.benchmark and "CUBLAS_WORKSPACE_CONFIG" not in __import__("os").environ
    try:
        assert reproducible_on(torch.device("cuda")) is True
        assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (False, True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
