"""Training-step time of our LoRA against PEFT's LoRA on the same backbone, batch and targets.

Both wrap the same pre-trained tiny ViT (rank 8, alpha 16, every attention and MLP linear) and
run forward + backward + AdamW step on the same batches. Rounds alternate between the two in
one process; the ratio is of the medians (ours / PEFT's; below 1 means ours is faster).

    python bench/lora_vs_peft.py [--steps 50] [--rounds 15] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, median, save  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    import peft

    from cldash.backbones import match_targets
    from cldash.backbones.vit import ViTTinyOptions, load
    from cldash.core.options import build
    from cldash.methods import get_method
    from cldash.methods.base import TaskContext
    from cldash.streams.digits import digits_splits, normalize

    device = torch.device(args.device)
    backbone = load(ViTTinyOptions())
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]

    ours_net = copy.deepcopy(backbone.net)
    ours_net.requires_grad_(False)
    lora = get_method("lora")
    method = lora(build(lora.Config, {"rank": 8, "alpha": 16}, "lora"), policy="single")
    method.attach(ours_net, match_targets(ours_net, targets))
    method.before_task(TaskContext(1, 1, "bench", 1, ours_net, None, None, torch.Generator().manual_seed(0), device))
    ours_net.to(device)
    ours_opt = torch.optim.AdamW(method.trainable_parameters(), lr=5e-3)

    peft_net = peft.get_peft_model(copy.deepcopy(backbone.net),
                                   peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets)).to(device)
    peft_opt = torch.optim.AdamW([p for p in peft_net.parameters() if p.requires_grad], lr=5e-3)
    n_ours = sum(p.numel() for p in method.trainable_parameters())
    n_peft = sum(p.numel() for p in peft_net.parameters() if p.requires_grad)
    assert n_ours == n_peft, (n_ours, n_peft)

    train, _ = digits_splits()
    x, y = normalize(train.x).to(device), train.y.to(device)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(len(y), (args.batch,), generator=g).to(device) for _ in range(args.steps)]

    def steps(net, logits, opt):
        def fn():
            for idx in batches:
                loss = F.cross_entropy(logits(net, x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return fn

    hf_logits = lambda net, xb: net(pixel_values=xb).logits  # noqa: E731 - the same model forward for both
    fns = {"ours": steps(ours_net, hf_logits, ours_opt), "peft": steps(peft_net, hf_logits, peft_opt)}
    interleaved(fns, 2)   # warm-up
    t = interleaved(fns, args.rounds)
    per_step = {k: median(v) / args.steps for k, v in t.items()}
    save(f"lora_vs_peft_{device.type}", {
        "what": f"tiny ViT, rank 8, all 12 linears, batch {args.batch}, forward+backward+AdamW",
        "ms_per_step": {k: round(1000 * v, 3) for k, v in per_step.items()},
        "ratio_ours_over_peft": round(per_step["ours"] / per_step["peft"], 3),
        "rounds": args.rounds, "steps_per_round": args.steps})


if __name__ == "__main__":
    main()
