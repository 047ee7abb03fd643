"""PiSSA, DoRA, AdaLoRA and LoRA-GA against HF PEFT (0.21.2) on the same weights.

- PiSSA: the factors and the residual base weight PEFT writes, bit for bit, on nn.Linear and
  Conv1D; forward after training-like changes of A and B; the update is s (B A - B0 A0) against W0.
- DoRA: the magnitude at init, the forward, the gradients (the detached norm), and the merged
  weight, on nn.Linear and Conv1D.
- AdaLoRA: SVDLinear's forward, the orthogonality regulariser, the budget schedule step by step,
  the triplet masking on the same importance averages, and a whole run of update_and_allocate on
  the same weights and gradients.
- LoRA-GA: the estimated gradients (preprocess_loraga on the same batches), and the init of every
  direction and scale option on the same gradient and the same random draw (PEFT's scaling).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

peft = pytest.importorskip("peft")

from cldash.backbones import linear_modules, match_targets  # noqa: E402
from cldash.core.options import build  # noqa: E402
from cldash.methods import StepContext, TaskContext, get_method  # noqa: E402


def vit():
    from cldash.backbones.vit import ViTTinyOptions, build_net

    torch.manual_seed(0)
    return build_net(ViTTinyOptions()), ["q_proj", "v_proj", "fc1"], torch.randn(5, 1, 8, 8)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    net = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=40, n_positions=16,
                                     bos_token_id=0, eos_token_id=0))
    return net, ["c_attn", "c_proj", "c_fc"], torch.randint(0, 40, (3, 10))


def out(net, x):
    return net(x).logits


def ours(name, options, net, targets, policy=None, steps=1, ctx_kwargs=None):
    cls = get_method(name)
    method = cls(build(cls.Config, options, name), policy=policy)
    names = match_targets(net, targets)
    method.check_layers({n: s for n, s in linear_modules(net).items() if n in names})
    method.attach(net, names)
    ctx = TaskContext(1, 1, "t", steps, net, None, None, torch.Generator().manual_seed(0), torch.device("cpu"),
                      **(ctx_kwargs or {}))
    return method, ctx


def peft_layer(theirs, name):
    return theirs.base_model.model.get_submodule(name)


# -- PiSSA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [vit, gpt2], ids=["linear", "conv1d"])
@pytest.mark.parametrize("rank,alpha", [(4, 4), (8, 16)])
def test_pissa_init_matches_peft_bit_for_bit(make, rank, alpha):
    net, targets, x = make()
    net.eval()
    theirs = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="pissa", fan_in_fan_out=make is gpt2))
    mine = copy.deepcopy(net)
    method, ctx = ours("pissa", {"rank": rank, "alpha": alpha}, mine, targets)
    method.before_task(ctx)
    with torch.no_grad():
        for name, layer in method.layers.items():
            mod = peft_layer(theirs, name)
            branch = layer.branches[0]
            assert torch.equal(branch.lora_A, mod.lora_A["default"].weight), name
            assert torch.equal(branch.lora_B, mod.lora_B["default"].weight), name
            assert torch.equal(layer.base.weight, mod.get_base_layer().weight), name
        torch.testing.assert_close(out(mine, x), out(theirs, x), rtol=0, atol=0)
        # after training-like changes to both adapters: same outputs, and our update is s (B A - B0 A0)
        g = torch.Generator().manual_seed(3)
        for name, layer in method.layers.items():
            mod = peft_layer(theirs, name)
            branch = layer.branches[0]
            B0, A0 = branch.lora_B.clone(), branch.lora_A.clone()
            mod.lora_B["default"].weight.add_(0.05 * torch.randn(B0.shape, generator=g))
            mod.lora_A["default"].weight.add_(0.05 * torch.randn(A0.shape, generator=g))
            branch.lora_B.copy_(mod.lora_B["default"].weight)
            branch.lora_A.copy_(mod.lora_A["default"].weight)
            s = branch.scaling
            want = s * (branch.lora_B @ branch.lora_A - B0 @ A0)
            torch.testing.assert_close(layer.update().dense(), want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(layer.effective_weight() - layer.w0, want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out(mine, x), out(theirs, x), rtol=0, atol=0)


# -- DoRA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [vit, gpt2], ids=["linear", "conv1d"])
@pytest.mark.parametrize("rslora", [False, True])
def test_dora_magnitude_forward_gradients_and_merge_match_peft(make, rslora):
    net, targets, x = make()
    net.eval()
    theirs = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=targets, use_dora=True, use_rslora=rslora, fan_in_fan_out=make is gpt2))
    mine = copy.deepcopy(net)
    method, ctx = ours("dora", {"rank": 4, "alpha": 8, "rslora": rslora}, mine, targets)
    method.before_task(ctx)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, layer in method.layers.items():
            mod = peft_layer(theirs, name)
            branch = layer.branches[0]
            # magnitude at init: the row norms of W0, as PEFT computes them
            torch.testing.assert_close(branch.magnitude, mod.lora_magnitude_vector["default"].weight, rtol=0, atol=0)
            mod.lora_B["default"].weight.copy_(0.1 * torch.randn(mod.lora_B["default"].weight.shape, generator=g))
            mod.lora_magnitude_vector["default"].weight.mul_(1 + 0.1 * torch.rand(layer.out_features, generator=g))
            branch.lora_A.copy_(mod.lora_A["default"].weight)
            branch.lora_B.copy_(mod.lora_B["default"].weight)
            branch.magnitude.copy_(mod.lora_magnitude_vector["default"].weight)
    y_mine, y_theirs = out(mine, x), out(theirs, x)
    torch.testing.assert_close(y_mine, y_theirs, rtol=0, atol=0)
    # gradients: the norm is detached in both (paper section 4.3)
    y_mine.square().mean().backward()
    y_theirs.square().mean().backward()
    for name, layer in method.layers.items():
        mod = peft_layer(theirs, name)
        branch = layer.branches[0]
        for a, b in ((branch.lora_A, mod.lora_A["default"].weight), (branch.lora_B, mod.lora_B["default"].weight),
                     (branch.magnitude, mod.lora_magnitude_vector["default"].weight)):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        effective = {name: layer.effective_weight().clone() for name, layer in method.layers.items()}
        method.merge()
        merged = theirs.merge_and_unload()
        for name, layer in method.layers.items():
            torch.testing.assert_close(layer.base.weight, merged.get_submodule(name).weight, rtol=1e-5, atol=1e-6)
            w = merged.get_submodule(name).weight
            torch.testing.assert_close(effective[name], w.T if layer.transposed else w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out(mine, x), out(merged, x), rtol=1e-4, atol=1e-5)


# -- AdaLoRA -------------------------------------------------------------------------------------

def adalora_pair(total_step=20, tinit=2, tfinal=4, delta_t=1, init_r=6, target_r=3):
    net, targets, x = vit()
    theirs = peft.get_peft_model(copy.deepcopy(net), peft.AdaLoraConfig(
        init_r=init_r, target_r=target_r, lora_alpha=8, target_modules=targets, total_step=total_step, tinit=tinit,
        tfinal=tfinal, deltaT=delta_t, beta1=0.85, beta2=0.85, orth_reg_weight=0.5))
    mine = copy.deepcopy(net)
    opts = {"init_r": init_r, "target_r": target_r, "alpha": 8, "tinit": tinit / total_step,
            "tfinal": tfinal / total_step, "delta_t": delta_t}
    method, ctx = ours("adalora", opts, mine, targets, policy="merge", steps=total_step)
    method.before_task(ctx)
    assert (method.allocator.tinit, method.allocator.tfinal) == (tinit, tfinal)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, layer in method.layers.items():
            mod = peft_layer(theirs, name)
            branch = layer.branches[0]
            mod.lora_E["default"].copy_(torch.randn(init_r, 1, generator=g))   # non-zero, so the forward shows
            for pname in ("lora_A", "lora_B", "lora_E"):
                getattr(branch, pname).copy_(getattr(mod, pname)["default"])
    return net, mine, method, ctx, theirs, x


def test_adalora_forward_delta_and_orthogonality_regulariser_match_peft():
    net, mine, method, ctx, theirs, x = adalora_pair()
    torch.testing.assert_close(out(mine, x), out(theirs, x), rtol=0, atol=0)
    for name, layer in method.layers.items():
        torch.testing.assert_close(layer.branches[0].delta_weight(layer),
                                   peft_layer(theirs, name).get_delta_weight("default"),
                                   rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(layer.update().dense(), peft_layer(theirs, name).get_delta_weight("default"),
                                   rtol=1e-5, atol=1e-7)
    y = torch.arange(5) % 10
    theirs_loss = theirs.base_model(pixel_values=x, labels=y).loss   # AdaLoraModel.forward adds gamma * orth reg
    mine_loss = F.cross_entropy(out(mine, x), y) + method.extra_loss(StepContext(1, 1, ctx))
    torch.testing.assert_close(mine_loss, theirs_loss, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("delta_t", [1, 3])
def test_adalora_budget_schedule_matches_peft(delta_t):
    _, _, method, _, theirs, _ = adalora_pair(total_step=50, tinit=5, tfinal=10, delta_t=delta_t)
    theirs_alloc = theirs.base_model.rankallocator
    assert (method.allocator.init_bgt, method.allocator.target_bgt) == (theirs_alloc.init_bgt, theirs_alloc.target_bgt)
    for step in range(1, 51):
        assert method.allocator.budget_schedule(step) == theirs_alloc.budget_schedule(step), step


@pytest.mark.parametrize("budget", [17, 12, 9])
def test_adalora_mask_selection_matches_peft_on_the_same_importance(budget):
    _, _, method, _, theirs, _ = adalora_pair()
    theirs_alloc = theirs.base_model.rankallocator
    g = torch.Generator().manual_seed(budget)
    params = dict(theirs.named_parameters())
    for name in method.layers:
        for pname in ("lora_A", "lora_B", "lora_E"):
            key = f"base_model.model.{name}.{pname}.default"
            p = params[key]
            ipt, unc = torch.rand(p.shape, generator=g), torch.rand(p.shape, generator=g)
            theirs_alloc.exp_avg_ipt[key], theirs_alloc.exp_avg_unc[key] = ipt, unc
            method.allocator.exp_avg_ipt[(name, pname)], method.allocator.exp_avg_unc[(name, pname)] = ipt, unc
    pattern = theirs_alloc.mask_to_budget(theirs, budget)
    mine = method.allocator.mask_to_budget(budget)
    assert sum(sum(v) for v in mine.values()) == budget
    for name, layer in method.layers.items():
        assert mine[name] == pattern[f"base_model.model.{name}.lora_E.default"], name
        torch.testing.assert_close(layer.branches[0].lora_E, peft_layer(theirs, name).lora_E["default"], rtol=0, atol=0)


def test_adalora_update_and_allocate_over_a_whole_task_matches_peft():
    """Same weights, same losses, same SGD steps; after every step the masks and budgets agree."""
    total = 16
    net, mine, method, ctx, theirs, x = adalora_pair(total_step=total, tinit=2, tfinal=4)
    g = torch.Generator().manual_seed(4)
    lr = 0.5
    for step in range(1, total + 1):
        xb = torch.randn(8, 1, 8, 8, generator=g)
        yb = torch.randint(0, 10, (8,), generator=g)
        theirs_loss = theirs.base_model(pixel_values=xb, labels=yb).loss
        mine_loss = F.cross_entropy(out(mine, xb), yb) + method.extra_loss(StepContext(step, step, ctx))
        torch.testing.assert_close(mine_loss, theirs_loss, rtol=1e-5, atol=1e-6)
        theirs_loss.backward()
        mine_loss.backward()
        with torch.no_grad():
            for p in list(theirs.parameters()) + method.trainable_parameters():
                if p.requires_grad and p.grad is not None:
                    p.sub_(lr * p.grad)
        theirs.base_model.update_and_allocate(step)
        method.after_step(StepContext(step, step, ctx))
        for p in list(theirs.parameters()) + method.trainable_parameters():
            p.grad = None
        for name, layer in method.layers.items():
            a = layer.branches[0].lora_E.detach()
            b = peft_layer(theirs, name).lora_E["default"].detach()
            assert torch.equal(a == 0, b == 0), (step, name)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # PEFT's stored final pattern (its keys name the lora_E parameter, with or without the prefix)
    final = {next(n for n in method.layers if f"{n}.lora_E" in key): keep
             for key, keep in theirs.peft_config["default"].rank_pattern.items()}
    assert method.allocator.rank_pattern == final
    assert method.scalars()["active_rank_total"] == 3 * len(method.layers)   # target_r x layers


# -- LoRA-GA -------------------------------------------------------------------------------------

def _batches(n, size):
    g = torch.Generator().manual_seed(7)
    for _ in range(n):
        yield torch.randn(size, 1, 8, 8, generator=g), torch.randint(0, 10, (size,), generator=g)


def test_loraga_gradient_estimate_matches_peft_preprocess():
    from peft.tuners.lora.loraga import preprocess_loraga

    from cldash.methods.loraga import estimate_gradients

    net, targets, _ = vit()
    net.requires_grad_(False)
    theirs = copy.deepcopy(net)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights="lora_ga",
                             lora_ga_config=peft.LoraGAConfig())

    def train_step():
        for xb, yb in _batches(3, 16):
            F.cross_entropy(theirs(pixel_values=xb).logits, yb).backward()

    preprocess_loraga(theirs, config, train_step)
    mine = copy.deepcopy(net)
    method, _ = ours("loraga", {"rank": 4}, mine, targets)
    ctx = TaskContext(1, 1, "t", 1, mine, lambda b: F.cross_entropy(mine(pixel_values=b[0]).logits, b[1]), _batches,
                      torch.Generator().manual_seed(0), torch.device("cpu"))
    grads = estimate_gradients(mine, method.layers, ctx, 3, 16)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, theirs.get_submodule(name)._peft_loraga_grad, rtol=1e-6, atol=1e-9)
    assert not any(p.requires_grad for p in mine.parameters())   # restored


@pytest.mark.parametrize("make", [vit, gpt2], ids=["linear", "conv1d"])
@pytest.mark.parametrize("direction,scale", [("ArB2r", "stable"), ("ArBr", "unit"), ("A2rBr", "weight_svd"),
                                             ("random", "gd_scale")])
def test_loraga_init_matches_peft_on_the_same_gradient(make, direction, scale):
    """PEFT's scaling (B0 carries S[r:2r] and the stable factor), not the authors' fork."""
    net, targets, x = make()
    net.eval()
    rank, alpha = 4, 8
    theirs = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=targets, fan_in_fan_out=make is gpt2))
    mine = copy.deepcopy(net)
    method, ctx = ours("loraga", {"rank": rank, "alpha": alpha, "direction": direction, "scale": scale,
                                  "stable_gamma": 16}, mine, targets)
    g = torch.Generator().manual_seed(11)
    method.gradients = {}
    for name, layer in method.layers.items():
        grad = torch.randn(layer.out_features, layer.in_features, generator=g)      # (out, in)
        method.gradients[name] = grad
        mod = peft_layer(theirs, name)
        mod.get_base_layer()._peft_loraga_grad = grad.T.clone() if layer.transposed else grad.clone()
    cfg = peft.LoraGAConfig(direction=direction, scale=scale, stable_gamma=16)
    for i, (name, layer) in enumerate(method.layers.items()):
        torch.manual_seed(100 + i)
        peft_layer(theirs, name).lora_ga_init("default", cfg)
        torch.manual_seed(100 + i)
        layer.add_branch(method.new_branch(layer, ctx))
    # PEFT 0.21.2 takes d_out from the raw weight's first dimension, which for a Conv1D (stored
    # (in, out)) is d_in; we use the paper's d_out, so on Conv1D the stable factor differs by
    # (d_out / d_in)^(1/4), and only there.
    quirk = make is gpt2 and scale == "stable"
    with torch.no_grad():
        for name, layer in method.layers.items():
            mod = peft_layer(theirs, name)
            branch = layer.branches[0]
            assert torch.equal(branch.lora_A, mod.lora_A["default"].weight), name
            if quirk:
                ratio = (layer.out_features / layer.in_features) ** 0.25
                torch.testing.assert_close(branch.lora_B, mod.lora_B["default"].weight * ratio, rtol=1e-5, atol=1e-7)
            else:
                assert torch.equal(branch.lora_B, mod.lora_B["default"].weight), name
                assert torch.equal(layer.base.weight, mod.get_base_layer().weight), name
            # the update against W0 is zero at init (up to the rounding of the rewritten base)
            offset = float(layer.offset[-1].dense().norm())
            assert float(layer.update().dense().norm()) < 1e-6 * max(offset, float(layer.w0.norm()))
        if not quirk:
            torch.testing.assert_close(out(mine, x), out(theirs, x), rtol=0, atol=0)
        torch.testing.assert_close(out(mine, x), out(net, x), rtol=1e-4, atol=1e-4)
