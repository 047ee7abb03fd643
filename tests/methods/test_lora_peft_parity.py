"""Our LoRA against HF PEFT's on the same weights: forward output, delta weight, merged weight.

Covers nn.Linear (the tiny ViT) and transformers' Conv1D (GPT-2, weight stored transposed,
PEFT's fan_in_fan_out), with and without rsLoRA scaling.
"""

import copy

import pytest
import torch

peft = pytest.importorskip("peft")

from cldash.core.options import build  # noqa: E402
from cldash.methods import get_method  # noqa: E402
from cldash.methods.base import TaskContext  # noqa: E402


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


def run(net, x):
    out = net(x)
    return out.logits


def ours_and_peft(make, rank, alpha, rslora):
    net, targets, x = make()
    net.eval()
    theirs = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=targets, use_rslora=rslora, lora_dropout=0.0,
        fan_in_fan_out=make is gpt2))
    from cldash.backbones import match_targets

    method = get_method("lora")(build(get_method("lora").Config, {"rank": rank, "alpha": alpha, "rslora": rslora},
                                      "lora"), policy="single")
    ours = copy.deepcopy(net)
    names = match_targets(ours, targets)
    method.attach(ours, names)
    ctx = TaskContext(1, 1, "t", 1, ours, None, None, torch.Generator().manual_seed(0), torch.device("cpu"))
    method.before_task(ctx)
    # the same non-trivial factors in both (B random, not PEFT's zero init, so the update is visible)
    g = torch.Generator().manual_seed(1)
    for name, layer in method.layers.items():
        mod = theirs.base_model.model.get_submodule(name)
        branch = layer.branches[0]
        mod.lora_B["default"].weight.data = torch.randn(mod.lora_B["default"].weight.shape, generator=g) * 0.1
        branch.lora_A.data.copy_(mod.lora_A["default"].weight.data)
        branch.lora_B.data.copy_(mod.lora_B["default"].weight.data)
        assert branch.scaling == pytest.approx(mod.scaling["default"])
    return ours, method, theirs, x


@pytest.mark.parametrize("make", [vit, gpt2], ids=["linear", "conv1d"])
@pytest.mark.parametrize("rank,alpha,rslora", [(4, 8, False), (8, 16, True)])
def test_forward_delta_and_merge_match_peft(make, rank, alpha, rslora):
    ours, method, theirs, x = ours_and_peft(make, rank, alpha, rslora)
    with torch.no_grad():
        torch.testing.assert_close(run(ours, x), run(theirs, x), rtol=0, atol=0)   # op for op: bit-exact
        for name, layer in method.layers.items():
            mod = theirs.base_model.model.get_submodule(name)
            delta = mod.get_delta_weight("default")            # PEFT returns the base layer's layout
            mine = layer.branches[0].delta_weight(layer)        # ours is always (out, in)
            torch.testing.assert_close(mine.T if layer.transposed else mine, delta, rtol=1e-6, atol=1e-7)
        method.merge()
        merged = theirs.merge_and_unload()
        for name, layer in method.layers.items():
            torch.testing.assert_close(layer.base.weight, merged.get_submodule(name).weight, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(run(ours, x), run(merged, x), rtol=1e-5, atol=1e-6)


def test_lora_init_matches_peft_distribution_and_is_a_no_op():
    """B = 0 at init (the adapter changes nothing) and A is Kaiming-uniform in (-1/sqrt(n), 1/sqrt(n))."""
    net, targets, x = vit()
    before = run(net, x).detach()
    method = get_method("lora")(build(get_method("lora").Config, {"rank": 8}, "lora"), policy="single")
    from cldash.backbones import match_targets

    method.attach(net, match_targets(net, targets))
    method.before_task(TaskContext(1, 1, "t", 1, net, None, None, torch.Generator().manual_seed(0),
                                   torch.device("cpu")))
    torch.testing.assert_close(run(net, x), before, rtol=0, atol=0)
    for layer in method.layers.values():
        A = layer.branches[0].lora_A
        bound = 1 / layer.in_features ** 0.5
        assert A.abs().max() <= bound and A.abs().max() > 0.5 * bound
        assert layer.branches[0].lora_B.abs().max() == 0
