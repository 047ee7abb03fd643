"""Each method's defining property, measured on a tiny ViT (random weights) and real digits.

PiSSA's init reproduces W exactly from the top-r SVD; DoRA's magnitude starts at the row norms;
AdaLoRA's active rank follows the budget schedule; LoRA-GA's first step points along the full
gradient much better than LoRA's; WeGeFT's update stays in the column span of W0 (times the
generator); LoRETTA's parameter count is the tensor-train formula.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from cldash.backbones import linear_modules, match_targets
from cldash.backbones.vit import VIT_TARGETS, ViTTinyOptions, build_net
from cldash.core.options import build
from cldash.methods import StepContext, TaskContext, get_method
from cldash.streams.digits import digits_splits, normalize, rotate


def net_and_method(name, options=None, policy=None, seed=0, net=None):
    torch.manual_seed(seed)
    net = net if net is not None else build_net(ViTTinyOptions())
    cls = get_method(name)
    method = cls(build(cls.Config, options or {}, name), policy=policy)
    net.requires_grad_(cls.trains_backbone)
    targets = match_targets(net, VIT_TARGETS)
    method.check_layers({n: s for n, s in linear_modules(net).items() if n in targets})
    method.attach(net, targets)
    return net, method


def rotated(angle=90.0, n=512):
    train, _ = digits_splits()
    return normalize(rotate(train.x[:n], angle)), train.y[:n]


def context(net, steps=10, angle=90.0, seed=0):
    x, y = rotated(angle)
    gen = torch.Generator().manual_seed(seed)

    def batches(n, size):
        for _ in range(n):
            idx = torch.randint(len(y), (size,), generator=gen)
            yield x[idx], y[idx]

    return TaskContext(1, 1, "t", steps, net, lambda b: F.cross_entropy(net(pixel_values=b[0]).logits, b[1]),
                       batches, torch.Generator().manual_seed(seed), torch.device("cpu"))


def test_pissa_init_reproduces_the_weight_from_its_top_r_svd():
    net, method = net_and_method("pissa", {"rank": 8, "alpha": 16})
    method.before_task(context(net))
    for _name, layer in method.layers.items():
        branch = layer.branches[0]
        s = branch.scaling
        principal = s * (branch.lora_B @ branch.lora_A).double()
        W = layer.w0.double()
        # the adapter holds exactly the top-8 SVD part, the base the rest, and they sum to W
        U, S, Vh = torch.linalg.svd(W)
        torch.testing.assert_close(principal, U[:, :8] @ torch.diag(S[:8]) @ Vh[:8], rtol=0, atol=1e-5)
        torch.testing.assert_close(layer.weight.double() + principal, W, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.linalg.svdvals(layer.weight.double()), torch.cat([S[8:], S.new_zeros(8)]),
                                   rtol=0, atol=1e-5)
        # B0 and A0 share the singular values evenly: ||B0 e_i|| = ||A0^T e_i|| = sqrt(S_i / s)
        torch.testing.assert_close(branch.lora_B.norm(dim=0).double(), (S[:8] / s).sqrt(), rtol=1e-5, atol=0)
        torch.testing.assert_close(branch.lora_A.norm(dim=1).double(), (S[:8] / s).sqrt(), rtol=1e-5, atol=0)


def test_dora_magnitude_at_init_equals_the_row_norms():
    net, method = net_and_method("dora")
    method.before_task(context(net))
    for layer in method.layers.values():
        assert torch.equal(layer.branches[0].magnitude.detach(), torch.linalg.norm(layer.w0, dim=1))
        assert torch.equal(layer.effective_weight(), layer.w0)


def test_adalora_active_rank_follows_the_budget_schedule():
    T = 30
    net, method = net_and_method("adalora", {"init_r": 6, "target_r": 2, "tinit": 0.2, "tfinal": 0.2})
    ctx = context(net, steps=T)
    method.before_task(ctx)
    alloc = method.allocator
    assert (alloc.init_bgt, alloc.target_bgt, alloc.tinit, alloc.tfinal) == (72, 24, 6, 6)
    opt = method.make_optimizer(method.trainable_parameters(), 1e-2, 0.0)
    history = []
    for step, batch in enumerate(ctx.batches(T, 32), start=1):
        sctx = StepContext(step, step, ctx)
        loss = ctx.loss_fn(batch) + method.extra_loss(sctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(sctx)
        active = method.scalars()["active_rank_total"]
        budget, _ = alloc.budget_schedule(step)
        history.append((step, active, budget))
        assert active == budget, (step, active, budget)
    budgets = [b for _, _, b in history]
    assert budgets[0] == 72 and budgets[-1] == 24
    assert all(a >= b for a, b in zip(budgets, budgets[1:]))          # the cubic schedule only shrinks
    assert len(set(budgets)) > 10                                     # ...gradually
    ranks = method.module_scalars()["active_rank"]
    assert sum(ranks.values()) == 24 and len(set(ranks.values())) > 1  # allocated by importance, not evenly


@pytest.mark.parametrize("policy", ["merge", "single"])
def test_adalora_budget_restarts_at_every_task_with_that_tasks_steps(policy):
    net, method = net_and_method("adalora", {"init_r": 4, "target_r": 1}, policy=policy)
    ctx = context(net, steps=10)
    method.before_task(ctx)
    opt = method.make_optimizer(method.trainable_parameters(), 1e-2, 0.0)
    for step, batch in enumerate(ctx.batches(10, 32), start=1):
        (ctx.loss_fn(batch) + method.extra_loss(StepContext(step, step, ctx))).backward()
        opt.step()
        method.after_step(StepContext(step, step, ctx))
        opt.zero_grad()
    assert method.scalars() == {"budget": 12.0, "active_rank_total": 12.0}    # target_r x 12 layers
    method.after_task(ctx)
    ctx2 = TaskContext(2, 2, "t2", 40, net, ctx.loss_fn, ctx.batches, ctx.generator, ctx.device)
    method.before_task(ctx2)
    alloc = method.allocator
    assert (alloc.total_step, alloc.tinit, alloc.tfinal, alloc.budget) == (40, 4, 8, 48)
    assert alloc.rank_pattern is None and not alloc.exp_avg_ipt
    assert alloc.branches == {n: layer.branches[-1] for n, layer in method.layers.items()}


def first_step_alignment(name, options, lr=1e-3):
    """Mean over layers of cos(dW after one SGD step, -G), G = the full gradient on the same data."""
    from cldash.methods.loraga import estimate_gradients

    torch.manual_seed(0)
    base = build_net(ViTTinyOptions())
    net, method = net_and_method(name, options, net=copy.deepcopy(base))
    x, y = rotated(90.0, n=512)
    full_batch = [(x, y)]
    ctx = context(net)
    G = estimate_gradients(net, method.layers,
                           TaskContext(1, 1, "t", 1, net, ctx.loss_fn, lambda n, s: iter(full_batch),
                                       ctx.generator, ctx.device), 1, len(y))
    method.before_task(ctx)
    before = {n: layer.effective_weight().detach().clone() for n, layer in method.layers.items()}
    loss = ctx.loss_fn((x, y))
    loss.backward()
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.sub_(lr * p.grad)
    cos = []
    for n, layer in method.layers.items():
        dW = (layer.effective_weight().detach() - before[n]).flatten()
        cos.append(float(F.cosine_similarity(dW, -G[n].flatten(), dim=0)))
    return sum(cos) / len(cos)


def test_loraga_first_step_follows_the_full_gradient_better_than_lora():
    lora = first_step_alignment("lora", {"rank": 8, "alpha": 16})
    loraga = first_step_alignment("loraga", {"rank": 8, "alpha": 16})
    # measured here: LoRA 0.32 (B = 0, so its step is -lr s^2 G A^T A), LoRA-GA 0.99
    assert loraga > 0.5, loraga
    assert loraga > 2 * lora, (loraga, lora)


def test_wegeft_update_lies_in_the_column_span_of_w0_times_the_generator():
    torch.manual_seed(0)
    base = build_net(ViTTinyOptions())
    target = "vit.layers.0.attention.q_proj"
    with torch.no_grad():   # a rank-4 pre-trained weight, so "the span of W0" is a real constraint
        w = base.get_submodule(target).weight
        U, S, Vh = torch.linalg.svd(w)
        w.copy_(U[:, :4] @ torch.diag(S[:4]) @ Vh[:4])
    span = U[:, :4]
    residuals = {}
    for name in ("wegeft", "lora"):
        net, method = net_and_method(name, {}, net=copy.deepcopy(base))
        ctx = context(net, steps=8)
        method.before_task(ctx)
        opt = method.make_optimizer(method.trainable_parameters(), 5e-3, 0.0)
        for batch in ctx.batches(8, 32):
            opt.zero_grad()
            ctx.loss_fn(batch).backward()
            opt.step()
        layer = method.layers[target]
        dW = (layer.effective_weight() - layer.w0).detach()
        residuals[name] = float((dW - span @ (span.T @ dW)).norm() / dW.norm())
        if name == "wegeft":
            g = layer.branches[0].generator
            s = layer.branches[0].scaling
            torch.testing.assert_close(dW, layer.w0 @ (s * g.phi.T @ g.psi).detach(), rtol=1e-4, atol=1e-6)
            # tied: every q_proj shares one generator, so 2 r n parameters per module type
            q = [m for n, m in method.layers.items() if n.endswith("q_proj")]
            assert q[0].branches[0].generator is q[1].branches[0].generator
            n_types = len({n.rsplit(".", 1)[-1] for n in method.layers})
            assert sum(p.numel() for p in method.trainable_parameters()) == sum(
                2 * 8 * m.in_features for m in {n.rsplit(".", 1)[-1]: m for n, m in method.layers.items()}.values())
            assert n_types == 6
    assert residuals["wegeft"] < 1e-5, residuals
    assert residuals["lora"] > 0.5, residuals          # LoRA's update is not confined to W0's span


def test_loretta_parameter_count_is_the_tensor_train_formula():
    from cldash.methods.loretta import tt_modes, tt_parameter_count

    # the authors' shape for hidden 768 and r = 8 is [8, 8, 12, 8]; 580 parameters at tensor rank 5
    assert sorted(tt_modes(768 * 8)) == sorted([8, 8, 12, 8])
    assert tt_parameter_count([8, 8, 12, 8], 5) == 1 * 8 * 5 + 5 * 8 * 5 + 5 * 12 * 5 + 5 * 8 * 1 == 580
    # the tiny ViT's sizes factor too
    assert tt_modes(64 * 8) == [8, 8, 8] and tt_modes(128 * 8) == [16, 8, 8]
    for numel in (64 * 8, 128 * 8, 64 * 4, 100 * 3, 97 * 2, 7):
        modes = tt_modes(numel)
        assert torch.tensor(modes).prod().item() == numel
    net, method = net_and_method("loretta", {"rank": 8, "tensor_rank": 5})
    method.before_task(context(net))
    total = 0
    for layer in method.layers.values():
        branch = layer.branches[0]
        want = (tt_parameter_count(tt_modes(layer.in_features * 8), 5)
                + tt_parameter_count(tt_modes(8 * layer.out_features), 5))
        assert sum(p.numel() for p in branch.parameters()) == want
        total += want
        for tt in (branch.tt_A, branch.tt_B):
            for k in range(1, len(tt.cores)):
                bond = tt.bond(k)   # the k-th unfolding, factored through the bond
                assert bond.inner == 5
                torch.testing.assert_close(bond.dense().reshape(-1), tt.full(), rtol=1e-5, atol=1e-7)
    assert sum(p.numel() for p in method.trainable_parameters()) == total
    lora_params = sum(8 * (layer.in_features + layer.out_features) for layer in method.layers.values())
    assert total < lora_params / 2


@pytest.mark.parametrize("name", ["pissa", "loraga"])
def test_base_rewriting_inits_are_measured_against_the_pretrained_weight(name):
    """After training, the factored update is s (B A - B0 A0) and equals W_eff - W0 (not W_eff - W_res)."""
    net, method = net_and_method(name, {"rank": 4})
    ctx = context(net, steps=5)
    method.before_task(ctx)
    B0 = {n: layer.branches[0].lora_B.detach().clone() for n, layer in method.layers.items()}
    A0 = {n: layer.branches[0].lora_A.detach().clone() for n, layer in method.layers.items()}
    opt = method.make_optimizer(method.trainable_parameters(), 5e-3, 0.0)
    for batch in ctx.batches(5, 32):
        opt.zero_grad()
        ctx.loss_fn(batch).backward()
        opt.step()
    for n, layer in method.layers.items():
        b = layer.branches[0]
        want = b.scaling * (b.lora_B @ b.lora_A - B0[n] @ A0[n]).detach()
        update = layer.update()
        assert update.inner == 8        # rank <= 2r, kept factored
        torch.testing.assert_close(update.dense(), want, rtol=1e-4, atol=1e-6)
        scale = float(layer.offset[-1].dense().norm())
        assert float((layer.effective_weight() - layer.w0 - want).norm()) < 1e-5 * max(1.0, scale)
    drift = method.module_scalars()["init_subspace_drift"]
    assert all(0 < v < 1 for v in drift.values())
