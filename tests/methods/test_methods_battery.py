"""One table of cases drives a battery of tests over every registered method.

Each case is (method, options, policy) plus what its update is at init. On a tiny ViT (random
weights, 12 adapted linears) every case must: change the loss with one training step; start from
a zero update (or the documented one); give finite spectra equal to a dense SVD of its update
(and of its extra read-outs); keep the model's outputs when merged; survive a save/load exactly
(the reloaded model computes the same outputs and trains on identically); answer invalid
hyper-parameters with one clear sentence; and run through the engine with finite stored spectra.
A new method joins the battery by adding a row to CASES and its invalid options to INVALID.
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cldash.backbones import linear_modules, match_targets
from cldash.backbones.vit import VIT_TARGETS, ViTTinyOptions, build_net
from cldash.core.errors import ConfigError
from cldash.core.options import build
from cldash.measures.spectra import Dense, LowRank, analyze
from cldash.methods import REGISTRY, StepContext, TaskContext, get_method
from cldash.streams.digits import digits_splits, normalize, rotate


@dataclass
class Case:
    method: str
    options: dict = field(default_factory=dict)
    policy: str | None = None
    at_init: str = "zero"     # zero: the update is exactly 0 | function: ~0 and outputs unchanged | tt-gaussian
    #                           | nonzero: a documented non-zero start (EBLoRA's s = -(a + b l / (L - 1)))

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.method}[{self.policy or '-'}{',' + opts if opts else ''}]"


CASES = [
    Case("lora", {}, "single"),
    Case("lora", {"rslora": True, "rank": 4}, "merge"),
    Case("lora", {"dropout": 0.1}, "stack"),
    Case("full", {}, None),
    Case("pissa", {}, "merge", "function"),
    Case("pissa", {"svd_iterations": 4}, "stack", "function"),
    Case("dora", {}, "single"),
    Case("dora", {"rslora": True}, "merge"),
    Case("adalora", {}, "merge"),
    Case("adalora", {"init_r": 6, "target_r": 2, "delta_t": 2}, "single"),
    Case("loraga", {}, "merge", "function"),
    Case("loraga", {"direction": "ArBr", "scale": "gd_scale"}, "stack", "function"),
    Case("wegeft", {}, "merge"),
    Case("wegeft", {}, "stack"),
    Case("wegeft", {"tie": False}, "single"),
    Case("loretta", {}, "merge"),
    Case("loretta", {"init": "gaussian", "dropout": 0.0}, "single", "tt-gaussian"),
    Case("codyra", {}, None),
    Case("codyra", {"rank": 4, "dense_fraction": 0.0, "kappa_max": 0.5}, None),
    Case("eblora", {}, None),
    Case("eblora", {"init_a": 0.01, "init_b": 0.02, "rank": 4, "energy": 0.5}, None, "nonzero"),
    Case("slice", {}, "merge", "function"),
    Case("slice", {"surgery": "symmetric", "combine": "current"}, "stack", "function"),
    Case("olora", {}, None),
    Case("olora", {"overlap": "squared", "lambda_2": 0.01, "merge_old": True, "dropout": 0.0}, None),
    Case("inflora", {}, None),
    Case("inflora", {"rank": 4, "lamb": 0.99, "energy": "linear"}, None),
    Case("sdlora", {}, None),
    Case("sdlora", {"normalizer": "frobenius", "magnitudes": "per_layer", "kd": True, "kd_threshold": 1.0,
                    "rank_reduction": True, "rr_tasks": [2], "rr_ranks": [4]}, None),
]

# Invalid hyper-parameters of each method and a phrase its one-sentence answer must contain.
INVALID = {
    "lora": [({"rank": 0}, "lora.rank must be an integer between 1 and 65536"), ({"alpha": -1}, "lora.alpha must be"),
             ({"rank": 100}, "larger than layer"), ({"dropout": 2}, "lora.dropout must be")],
    "full": [({"rank": 8}, "full has no option 'rank'")],
    "pissa": [({"rank": 65}, "larger than layer"), ({"svd_iterations": -1}, "pissa.svd_iterations must be")],
    "dora": [({"rank": 0}, "dora.rank must be"), ({"rank": 100}, "larger than layer")],
    "adalora": [({"target_r": 20}, "larger than adalora.init_r"), ({"init_r": 100}, "adalora.init_r 100 is larger"),
                ({"tinit": 0.6, "tfinal": 0.5}, "must be below 1"), ({"beta1": 1.5}, "adalora.beta1 must be")],
    "loraga": [({"rank": 40}, "needs 2 x 40 gradient singular vectors"),
               ({"direction": "AB"}, "loraga.direction must be one of"), ({"grad_batches": 0}, "loraga.grad_batches")],
    "wegeft": [({"rank": 65}, "larger than the input size"), ({"alpha": 0}, "wegeft.alpha must be")],
    "codyra": [({"rank": 0}, "codyra.rank must be"), ({"rank": 100}, "larger than layer"),
               ({"dense_fraction": 1.0}, "codyra.dense_fraction must be below 1"), ({"levels": 1}, "codyra.levels")],
    "eblora": [({"rank": 100}, "eblora.rank 100 is larger than layer"), ({"energy": 1.5}, "eblora.energy must be"),
               ({"alpha": 0}, "eblora.alpha must be")],
    "slice": [({"surgery": "pcgrad2"}, "slice.surgery must be one of"), ({"combine": "mean"}, "slice.combine"),
              ({"rank": 40}, "needs 2 x 40 gradient singular vectors"), ({"memory": 0}, "slice.memory must be")],
    "loretta": [({"tensor_rank": 0}, "loretta.tensor_rank must be"), ({"init": "ones"}, "loretta.init must be one of"),
                ({"rank": 100}, "larger than layer")],
    "olora": [({"rank": 65}, "larger than layer"), ({"overlap": "l2"}, "olora.overlap must be one of"),
              ({"lambda_1": -1}, "olora.lambda_1 must be")],
    "inflora": [({"rank": 100}, "larger than layer"), ({"lamb": 0}, "inflora.lamb must be"),
                ({"lamb": 0.99, "lame": 0.9}, "inflora.lame 0.9 is below inflora.lamb 0.99"),
                ({"cov_batches": 0}, "inflora.cov_batches must be")],
    "sdlora": [({"rank": 65}, "larger than layer"), ({"normalizer": "l2"}, "sdlora.normalizer must be one of"),
               ({"rank_reduction": True, "rr_ranks": [100, 6]}, "sdlora.rr_ranks 100 is larger than layer"),
               ({"rr_tasks": [5]}, "must have the same length"), ({"rr_tasks": [9, 5]}, "must be increasing"),
               ({"kd_threshold": 2}, "sdlora.kd_threshold must be")],
}

STEPS = 4


def make(case: Case, seed: int = 0):
    """A tiny ViT with random weights and the case's method attached to all 12 linears."""
    torch.manual_seed(seed)
    net = build_net(ViTTinyOptions())
    cls = get_method(case.method)
    method = cls(build(cls.Config, case.options, case.method), policy=case.policy)
    net.requires_grad_(cls.trains_backbone)
    targets = match_targets(net, VIT_TARGETS)
    method.check_layers({n: s for n, s in linear_modules(net).items() if n in targets})
    method.attach(net, targets)
    return net, method


def data(angle: float):
    train, _ = digits_splits()
    return normalize(rotate(train.x[:512], angle)), train.y[:512]


def logits(net, x):
    return net(pixel_values=x).logits


def task_context(net, index: int, angle: float, seed: int = 0) -> TaskContext:
    x, y = data(angle)
    gen = torch.Generator().manual_seed(100 + index)

    def batches(n, size):
        for _ in range(n):
            idx = torch.randint(len(y), (size,), generator=gen)
            yield x[idx], y[idx]

    ctx = TaskContext(index=index, num_tasks=2, name=f"rotate {angle}", steps=STEPS, model=net,
                      loss_fn=lambda b: F.cross_entropy(logits(net, b[0]), b[1]), batches=batches,
                      generator=torch.Generator().manual_seed(seed * 7 + index), device=torch.device("cpu"))
    if index > 1:   # a replay buffer of the first task, as the engine hands it to methods that ask (SLICE)
        ctx.extras["replay"] = task_context(net, 1, 0.0, seed + 50)
    return ctx


def train(net, method, ctx: TaskContext, steps: int = STEPS, lr: float | None = None) -> list[float]:
    params = method.trainable_parameters()
    opt = method.make_optimizer(params, lr or type(method).default_lr, 0.0)
    losses = []
    for s, batch in enumerate(ctx.batches(steps, 32), start=1):
        sctx = StepContext(step=s, task_step=s, task=ctx)
        loss = ctx.loss_fn(batch)
        extra = method.extra_loss(sctx)
        total = loss if extra is None else loss + extra
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        method.after_step(sctx)
        losses.append(float(total.detach()))
    return losses


def two_tasks(case: Case, seed: int = 0):
    """Train task 1, cross the boundary (merge / stack / single), train part of task 2."""
    net, method = make(case, seed)
    net.train()
    ctx1 = task_context(net, 1, 0.0, seed)
    method.before_task(ctx1)
    train(net, method, ctx1)
    method.after_task(ctx1)
    ctx2 = task_context(net, 2, 90.0, seed)
    method.before_task(ctx2)
    train(net, method, ctx2)
    return net, method


_TRAINED: dict[str, tuple] = {}


def trained(case: Case):
    """What two_tasks(case) returns, computed once per case for the three tests that start from it
    (spectra, merge, save/load), each of which gets its own deep copy: they merge, save and train on."""
    if case.id not in _TRAINED:
        _TRAINED[case.id] = two_tasks(case)
    return copy.deepcopy(_TRAINED[case.id])


def probe():
    x, _ = data(45.0)
    return x[:64]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_one_training_step_lowers_the_loss(case):
    net, method = make(case)
    net.train()
    ctx = task_context(net, 1, 90.0)
    method.before_task(ctx)
    torch.manual_seed(1)
    batch = next(ctx.batches(1, 64))
    with torch.no_grad():
        before = float(ctx.loss_fn(batch))
    opt = method.make_optimizer(method.trainable_parameters(), type(method).default_lr, 0.0)
    torch.manual_seed(2)
    loss = ctx.loss_fn(batch)
    extra = method.extra_loss(StepContext(1, 1, ctx))
    (loss if extra is None else loss + extra).backward()
    opt.step()
    method.after_step(StepContext(1, 1, ctx))
    torch.manual_seed(1)
    with torch.no_grad():
        after = float(ctx.loss_fn(batch))
    assert math.isfinite(after)
    # AdaLoRA's first step is tiny (lambda = 0 and P, Q ~ N(0, 0.02^2)), hence the small margin
    assert before - after > 1e-5, (before, after)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_update_at_init_is_zero_or_documented(case):
    net, method = make(case)
    net.eval()
    x = probe()
    with torch.no_grad():
        out_before = logits(net, x)
    method.before_task(task_context(net, 1, 0.0))
    net.eval()
    with torch.no_grad():
        out_after = logits(net, x)
    for name, layer in method.layers.items():
        delta = layer.update().dense()
        w0 = layer.w0.norm()
        if case.at_init == "zero":
            assert float(delta.abs().max()) == 0.0, name
        elif case.at_init == "function":
            # s (B0 A0 - B0 A0) up to float rounding of the rewritten base weight
            scale = max(float(w0), float(layer.offset[-1].dense().norm()))
            assert float(delta.norm()) <= 1e-6 * scale, name
            assert float((layer.effective_weight().detach() - layer.w0).norm()) <= 1e-6 * scale, name
        elif case.at_init == "tt-gaussian":
            # the released code's init: every reconstructed factor entry ~ sqrt(1 / (fan_in + fan_out))
            branch = layer.branches[0]
            for M, fan in ((branch.A(), layer.in_features + branch.rank),
                           (branch.B(), branch.rank + layer.out_features)):
                ratio = float(M.std()) / math.sqrt(1 / fan)
                assert 0.5 < ratio < 2.0, (name, ratio)
            assert float(delta.norm()) > 0
        elif case.at_init == "nonzero":
            # EBLoRA: r equal singular values c |s| with s = -(a + b l / (L - 1)), here L = 2 layers
            o = case.options
            ell = int(name.split(".")[2])
            want = o["alpha"] if "alpha" in o else 32.0
            want = want / o["rank"] * (o["init_a"] + o["init_b"] * ell)
            sigma = torch.linalg.svdvals(delta.double())[:o["rank"]]
            torch.testing.assert_close(sigma, torch.full_like(sigma, want), rtol=1e-5, atol=1e-7)
    if case.at_init in ("zero", "function"):
        torch.testing.assert_close(out_after, out_before, rtol=1e-5, atol=1e-5)
    else:
        assert not torch.allclose(out_after, out_before)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_spectra_are_finite_and_match_a_dense_svd(case):
    net, method = trained(case)
    updates = {(name, "cumulative"): u for name, u in method.updates().items()}
    updates.update(method.extra_updates())
    results = analyze(updates)
    assert len(results) == len(updates)
    kinds = {k for _, k in updates}
    for key, a in results.items():
        assert np.isfinite(a.sigma).all(), key
        dense = updates[key].dense().detach().double()
        if a.measures["frobenius"] == 0:   # e.g. AdaLoRA pruned every triplet of this layer
            assert float(dense.abs().max()) == 0.0 and not a.sigma.any(), key
            continue
        assert np.isfinite(a.measures["erank"]), key
        want = torch.linalg.svdvals(dense).numpy()
        k = len(a.sigma)
        np.testing.assert_allclose(a.sigma, want[:k], rtol=1e-5, atol=2e-6 * want[0], err_msg=str(key))
        if k < len(want):   # a factored update has no energy beyond its inner size
            assert want[k:].max() <= 1e-5 * want[0], key
    # the cumulative update is against the pre-trained weight, in every method
    for name, layer in method.layers.items():
        dense = updates[(name, "cumulative")].dense()
        torch.testing.assert_close(dense, (layer.effective_weight() - layer.w0).detach(), rtol=1e-4, atol=2e-6)
    low_rank = type(method).low_rank
    assert all(isinstance(updates[(n, "cumulative")], LowRank if low_rank else Dense) for n in method.layers), kinds


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_merge_keeps_the_outputs(case):
    net, method = trained(case)
    net.eval()
    x = probe()
    with torch.no_grad():
        before = logits(net, x)
        method.merge()
        after = logits(net, x)
    assert all(len(layer.branches) == 0 for layer in method.layers.values())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_save_and_load_round_trip_exactly(case):
    net, method = trained(case)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    net2, method2 = make(case, seed=0)
    method2.load_state_dict(state)
    for a, _ in ((net, method), (net2, method2)):
        a.eval()
    x = probe()
    with torch.no_grad():
        assert torch.equal(logits(net, x), logits(net2, x))
    for name in method.layers:
        assert torch.equal(method.updates()[name].dense(), method2.updates()[name].dense()), name
    assert [p.shape for p in method.trainable_parameters()] == [p.shape for p in method2.trainable_parameters()]
    # both carry on identically (method buffers such as AdaLoRA's importance averages included)
    ctx = task_context(net, 2, 90.0)
    ctx2 = task_context(net2, 2, 90.0)
    for n, m, c in ((net, method, ctx), (net2, method2, ctx2)):
        n.train()
        torch.manual_seed(5)
        train(n, m, c, steps=2)
        n.eval()
    with torch.no_grad():
        assert torch.equal(logits(net, x), logits(net2, x))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_engine_run_stores_finite_spectra_and_scalars(case, tmp_path, few_test_digits):
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun
    from cldash.store import Store

    store = Store(str(tmp_path / "b.db"))
    resolved = resolve({"method": case.method, "policy": case.policy, "method_options": case.options,
                        "steps_per_task": 6, "batch_size": 16, "eval_interval": 0, "spectra_interval": 3,
                        "dense_spectra_interval": 3, "stream_options": {"angles": [60, 120]}})
    assert resolved.config.policy == case.policy
    run_id = store.create_run(resolved.to_dict())
    crun = ContinualRun(resolved, writer=store.writer(run_id))
    crun.run()
    crun.writer.flush()
    spectra = store.spectra(run_id)
    assert set(spectra.kind) >= {"cumulative", "task"}
    extra = set(crun.method.extra_updates())
    assert {k for _, k in extra} <= set(spectra.kind)
    last = spectra[spectra.step == spectra.step.max()]
    for values in last["values"]:
        assert np.isfinite(values).all()
    nonzero = last[last["frobenius"].astype(float) > 0]
    assert len(nonzero) > len(last) // 2
    assert np.isfinite(nonzero["erank"].astype(float)).all()
    assert all(len(v) > 0 for v in nonzero["values"])


@pytest.mark.parametrize("method", sorted(INVALID))
def test_invalid_hyper_parameters_get_one_clear_sentence(method):
    for options, phrase in INVALID[method]:
        with pytest.raises(ConfigError) as err:
            cls = get_method(method)
            config = build(cls.Config, options, method)
            make(Case(method, options, cls.policies[0] if cls.policies else None))
            del config
        message = str(err.value)
        assert phrase in message, (options, message)
        assert "\n" not in message and message.endswith("."), message
        assert message.count(". ") == 0, message    # one sentence


def test_every_registered_method_is_in_the_battery():
    assert set(REGISTRY) == {c.method for c in CASES}
    assert set(REGISTRY) == set(INVALID)
    for name, cls in REGISTRY.items():
        if cls.policies:   # the default policy and merging are exercised for every method
            covered = {c.policy for c in CASES if c.method == name}
            assert cls.policies[0] in covered and ("merge" in covered or "merge" not in cls.policies), name
