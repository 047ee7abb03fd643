"""Defining properties of the continual methods that keep tasks apart: O-LoRA, InfLoRA, SD-LoRA.

O-LoRA's penalty is zero exactly when the old and new down-projections have orthogonal row spaces
(and is the code's sum of |A_old A_t^T|); InfLoRA's new update leaves old-task inputs projected into
its memory untouched, and the DualGPM memory grows to its energy threshold and switches mode;
SD-LoRA's stored directions have unit norm under the chosen normaliser, its magnitudes train and
restart at 0.8 at every task, and its KD variant absorbs a direction that lies in the old ones' span.
Tiny ViT with random weights, real digits, a few steps each.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cldash.backbones import linear_modules, match_targets
from cldash.backbones.vit import VIT_TARGETS, ViTTinyOptions, build_net
from cldash.core.options import build
from cldash.methods import StepContext, TaskContext, get_method
from cldash.methods.inflora import dual_gpm_update, input_covariances
from cldash.methods.olora import overlap_penalty
from cldash.methods.sdlora import SDCurrentBranch, SDDirectionBranch
from cldash.streams.digits import digits_splits, normalize, rotate


def net_and_method(name, options=None, seed=0):
    torch.manual_seed(seed)
    net = build_net(ViTTinyOptions())
    cls = get_method(name)
    method = cls(build(cls.Config, options or {}, name))
    net.requires_grad_(False)
    targets = match_targets(net, VIT_TARGETS)
    method.check_layers({n: s for n, s in linear_modules(net).items() if n in targets})
    method.attach(net, targets)
    return net, method


def context(net, index, angle, num_tasks=2, steps=10):
    train, _ = digits_splits()
    x, y = normalize(rotate(train.x[:512], angle)), train.y[:512]
    gen = torch.Generator().manual_seed(100 + index)

    def batches(n, size):
        for _ in range(n):
            idx = torch.randint(len(y), (size,), generator=gen)
            yield x[idx], y[idx]

    return TaskContext(index, num_tasks, f"rotate {angle}", steps, net,
                       lambda b: F.cross_entropy(net(pixel_values=b[0]).logits, b[1]), batches,
                       torch.Generator().manual_seed(index), torch.device("cpu"))


def train(method, ctx, steps=10, lr=5e-3):
    opt = method.make_optimizer(method.trainable_parameters(), lr, 0.0)
    for s, batch in enumerate(ctx.batches(steps, 32), start=1):
        sctx = StepContext(s, s, ctx)
        loss = ctx.loss_fn(batch)
        extra = method.extra_loss(sctx)
        opt.zero_grad()
        (loss if extra is None else loss + extra).backward()
        opt.step()
        method.after_step(sctx)


# -- O-LoRA -----------------------------------------------------------------------------------------

def olora_at_task_2(options):
    net, method = net_and_method("olora", {"dropout": 0.0, **options})
    ctx1 = context(net, 1, 0.0)
    method.before_task(ctx1)
    assert method.extra_loss(StepContext(1, 1, ctx1)) is None      # nothing old to be orthogonal to
    train(method, ctx1, steps=5)
    method.after_task(ctx1)
    ctx2 = context(net, 2, 90.0)
    method.before_task(ctx2)
    return net, method, ctx2


@pytest.mark.parametrize("overlap", ["l1", "squared"])
def test_olora_penalty_is_zero_exactly_for_orthogonal_subspaces_and_positive_otherwise(overlap):
    net, method, ctx = olora_at_task_2({"overlap": overlap, "lambda_1": 0.5})
    step = StepContext(1, 1, ctx)
    # random new pairs overlap the old ones: the penalty is lambda_1 times the hand-computed sum
    want = sum(0.5 * ((method.A_old[n] @ layer.branches[-1].lora_A.T).abs() if overlap == "l1" else
                      (method.A_old[n] @ layer.branches[-1].lora_A.T) ** 2).sum() for n, layer in method.layers.items())
    penalty = method.extra_loss(step)
    torch.testing.assert_close(penalty, want)
    assert float(penalty.detach()) > 0.1
    with torch.no_grad():
        # old rows on the first half of the input coordinates, new rows on the second: orthogonal row spaces
        for name, layer in method.layers.items():
            half = layer.in_features // 2
            method.A_old[name][:, half:] = 0.0
            layer.branches[-1].lora_A[:, :half] = 0.0
    assert float(method.extra_loss(step)) == 0.0
    assert all(v == 0.0 for v in method.module_scalars()["overlap"].values())
    assert all(v < 1e-6 for v in method.module_scalars()["principal_cos_max"].values())
    with torch.no_grad():
        # the same in a rotated basis (orthogonal but dense rows): zero up to float rounding
        for name, layer in method.layers.items():
            n, r_old, r = layer.in_features, method.A_old[name].shape[0], layer.branches[-1].rank
            Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
            method.A_old[name].copy_(torch.randn(r_old, r_old, dtype=torch.float64) @ Q[:, :r_old].T)
            layer.branches[-1].lora_A.copy_(torch.randn(r, r, dtype=torch.float64) @ Q[:, r_old:r_old + r].T)
    assert float(method.extra_loss(step)) < 1e-4
    assert float(overlap_penalty(torch.eye(3), torch.eye(3), overlap)) == 3.0


def test_olora_penalty_drives_the_new_row_space_away_from_the_old_one():
    overlaps, norms = {}, {}
    for lam in (0.0, 0.5):
        net, method, ctx = olora_at_task_2({"lambda_1": lam})
        old = {n: layer.branches[0] for n, layer in method.layers.items()}
        train(method, ctx, steps=20)
        s = method.module_scalars()
        overlaps[lam] = sum(s["overlap"].values()) / len(s["overlap"])
        norms[lam] = sum(s["new_A_norm"].values()) / len(s["new_A_norm"])
        for name, layer in method.layers.items():   # the old pair is frozen and kept, A_old is its A
            assert layer.branches[0] is old[name] and not layer.branches[0].lora_A.requires_grad
            assert torch.equal(method.A_old[name], layer.branches[0].lora_A)
    # measured here: mean normalised overlap 0.12 without the penalty, 0.016 with it; ||A_t|| 1.7 vs 1.6
    assert overlaps[0.5] < 0.3 * overlaps[0.0], overlaps
    assert norms[0.5] > 0.5 * norms[0.0], norms      # reduced by turning A_t, not by collapsing it


# -- InfLoRA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("energy", ["squared", "linear"])
def test_inflora_new_update_leaves_old_inputs_in_the_memory_unchanged(energy):
    net, method = net_and_method("inflora", {"energy": energy})
    ctx1 = context(net, 1, 0.0)
    method.before_task(ctx1)
    train(method, ctx1)
    method.after_task(ctx1)
    assert all(method.mode[n] == "remove" and 1 <= method.memory[n].shape[1] < layer.in_features / 2
               for n, layer in method.layers.items())
    ctx2 = context(net, 2, 90.0)
    method.before_task(ctx2)
    train(method, ctx2)
    # every layer's inputs on task 1 (old) and task 2 (new), through the model after task 2
    inputs = {}
    for key, ctx in (("old", context(net, 1, 0.0)), ("new", context(net, 2, 90.0))):
        seen = {}
        hooks = [layer.register_forward_hook(lambda m, i, o, n=name, seen=seen: seen.update({n: i[0].detach()}))
                 for name, layer in method.layers.items()]
        with torch.no_grad():
            ctx.loss_fn(next(ctx.batches(1, 64)))
        for h in hooks:
            h.remove()
        inputs[key] = seen
    for name, layer in method.layers.items():
        branch = layer.branches[-1]
        assert branch.lora_B.requires_grad and float(branch.lora_B.norm()) > 0
        P = method.old_projector(name).float()
        x_old = inputs["old"][name] @ P                                  # old inputs projected into the memory
        base = layer.base(x_old)
        change = F.linear(F.linear(x_old, branch.lora_A), branch.lora_B)
        assert float(change.norm() / base.norm()) < 1e-5, name
        x_new = inputs["new"][name]
        assert float(F.linear(F.linear(x_new, branch.lora_A), branch.lora_B).norm() / layer.base(x_new).norm()) > 1e-3
        # the designed rows: orthonormal / sqrt(3), orthogonal to the memory; earlier pairs frozen
        A = branch.lora_A.double()
        torch.testing.assert_close(A @ A.T * 3, torch.eye(A.shape[0], dtype=torch.float64), atol=1e-6, rtol=0)
        assert float((A @ method.old_projector(name)).norm()) < 1e-6
        assert not layer.branches[0].lora_B.requires_grad
    assert max(method.module_scalars()["interference"].values()) < 1e-5


def test_dual_gpm_memory_reaches_the_energy_threshold_and_switches_to_retain():
    torch.manual_seed(0)
    n = 16
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    spectrum = 2.0 ** -torch.arange(n, dtype=torch.float64)            # covariance eigenvalues 1, 1/2, 1/4...
    C = Q @ torch.diag(spectrum) @ Q.T
    share = torch.cumsum(spectrum ** 2, 0) / (spectrum ** 2).sum()
    M, mode = dual_gpm_update(C, None, "remove", 0.95)
    assert mode == "remove" and M.shape[1] == int((share < 0.95).sum()) == 2      # shares 0.75, 0.94, 0.98...
    # a second task's covariance: the memory grows by the fewest directions that reach eps of its energy
    C2 = C + Q[:, 5:6] @ Q[:, 5:6].T * 2.0
    M2, mode = dual_gpm_update(C2, M, mode, 0.99)
    explained = float(((M2 @ M2.T @ C2) ** 2).sum() / (C2 ** 2).sum())
    fewer = M2[:, :-1]
    assert explained >= 0.99 > float(((fewer @ fewer.T @ C2) ** 2).sum() / (C2 ** 2).sum())
    torch.testing.assert_close(M2.T @ M2, torch.eye(M2.shape[1], dtype=torch.float64), atol=1e-10, rtol=0)
    # past n/2 columns the memory is replaced by its complement (retain mode), orthogonal to it
    flat = Q @ torch.diag(torch.ones(n, dtype=torch.float64)) @ Q.T
    M3, mode3 = dual_gpm_update(flat, M2, "remove", 0.8)
    assert mode3 == "retain" and M3.shape[1] == n - 13 and float((M3.T @ M2).norm()) < 1e-10
    # retain: directions of the free space the new data fills are removed while >= 1 - eps stays free
    M4, mode4 = dual_gpm_update(flat, M3, mode3, 0.9)
    assert mode4 == "retain" and M4.shape[1] < M3.shape[1]
    assert float(((M4 @ M4.T @ flat) ** 2).sum() / (flat ** 2).sum()) < 0.1 + 1e-9


def test_inflora_covariance_is_the_mean_outer_product_of_each_layers_inputs():
    net, method = net_and_method("inflora")
    ctx = context(net, 1, 0.0)
    name = "vit.layers.1.mlp.fc1"
    seen = []
    hook = method.layers[name].register_forward_hook(lambda m, i, o: seen.append(i[0].detach()) and None)
    C = input_covariances(net, method.layers, ctx, 2, 16)[name]
    hook.remove()
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).double()
    torch.testing.assert_close(C, x.T @ x / x.shape[0])


# -- SD-LoRA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalizer", ["frobenius", "product"])
def test_sdlora_directions_have_unit_norm_and_magnitudes_train_then_restart(normalizer):
    net, method = net_and_method("sdlora", {"normalizer": normalizer})
    ctx1 = context(net, 1, 0.0)
    method.before_task(ctx1)
    params = method.trainable_parameters()
    alpha1 = method.shared.values[0]
    assert any(p is alpha1 for p in params) and float(alpha1) == pytest.approx(0.8)
    assert all(layer.branches[0].magnitude() is alpha1 for layer in method.layers.values())   # shared
    train(method, ctx1)
    assert method.scalars()["magnitude_task1"] != pytest.approx(0.8, abs=1e-4)     # it trained
    method.after_task(ctx1)
    for layer in method.layers.values():
        (direction,) = layer.branches
        assert isinstance(direction, SDDirectionBranch) and not any(
            b.requires_grad for b in (direction.lora_A, direction.lora_B))
        norm = float(direction.direction().dense().double().norm())
        if normalizer == "frobenius":
            assert norm == pytest.approx(1.0, abs=1e-6)
        else:
            assert 0.05 < norm <= 1.0 + 1e-6
    ctx2 = context(net, 2, 90.0)
    method.before_task(ctx2)
    assert method.scalars() == {"magnitude_task1": pytest.approx(0.8), "magnitude_task2": pytest.approx(0.8)}
    assert method.shared.values[0] is not alpha1                                   # re-created, as both codes
    train(method, ctx2)
    s = method.scalars()
    assert s["magnitude_task1"] != pytest.approx(0.8, abs=1e-4)                    # the old magnitude trains too
    assert s["magnitude_task2"] != pytest.approx(0.8, abs=1e-4)
    gram = method.direction_gram("vit.layers.0.attention.q_proj")
    assert gram.shape == (2, 2) and float(gram.diagonal().sub(1).abs().max()) < 1e-9


def test_sdlora_kd_absorbs_a_direction_in_the_span_of_the_old_ones():
    net, method = net_and_method("sdlora", {"rank": 2, "kd": True, "kd_threshold": 0.5})
    name = "vit.layers.0.attention.v_proj"
    layer = method.layers[name]
    A = torch.randn(2, layer.in_features)
    B1, B2 = torch.randn(layer.out_features, 2), torch.randn(layer.out_features, 2)
    for t, B in enumerate((B1, B2, 0.7 * B1 - 1.3 * B2), start=1):
        ctx = context(net, t, 0.0, num_tasks=3)
        method.before_task(ctx)
        with torch.no_grad():
            for other in method.layers.values():     # this layer: the same A and the chosen B; others random
                other.branches[-1].lora_A.copy_(A if other is layer else torch.randn(2, other.in_features))
                other.branches[-1].lora_B.copy_(B if other is layer else torch.randn(other.out_features, 2))
        method.after_task(ctx)
        if t == 2:   # a random direction is not explained by the first one: kept
            assert [b.task for b in layer.branches] == [1, 2]
    # task 3's direction is 0.7 N1/N3 D1 - 1.3 N2/N3 D2: absorbed, no third branch on this layer
    assert [b.task for b in layer.branches] == [1, 2] and method.absorbed[name] == [3]
    N1, N2, N3 = (float(b.norm() * A.norm()) for b in (B1, B2, 0.7 * B1 - 1.3 * B2))
    offsets = [float(b.offset) for b in layer.branches]
    assert offsets == pytest.approx([0.7 * N1 / N3, -1.3 * N2 / N3], rel=1e-4)
    # the layer's update is sum_k (alpha_k + c_k) D_k: the absorbed direction enters with unit weight
    want = sum((float(method.shared.values[b.task - 1]) + float(b.offset)) * b.direction().dense()
               for b in layer.branches)
    torch.testing.assert_close(layer.update().dense(), want, rtol=1e-5, atol=1e-6)
    assert method.module_scalars()["directions"][name] == 2.0
    assert any(len(other.branches) == 3 for other in method.layers.values())   # random layers keep their own


def test_sdlora_rank_reduction_gives_later_tasks_the_smaller_ranks():
    net, method = net_and_method("sdlora", {"rank_reduction": True, "rr_tasks": [2, 3], "rr_ranks": [6, 3]})
    ranks = []
    for t in (1, 2, 3):
        ctx = context(net, t, 0.0, num_tasks=3)
        method.before_task(ctx)
        ranks.append({b.rank for b in (layer.branches[-1] for layer in method.layers.values())})
        assert all(isinstance(layer.branches[-1], SDCurrentBranch) for layer in method.layers.values())
        method.after_task(ctx)
    assert ranks == [{10}, {6}, {3}]
