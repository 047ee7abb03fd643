"""Training-step time of our LoRA against PEFT's LoRA on the pre-trained tiny GPT-2 (skills stream).

Both wrap the same pre-trained GPT-2 (rank 8, alpha 16, every c_attn / c_proj / c_fc: transformers
Conv1D, weight stored transposed, so PEFT runs with fan_in_fan_out=True) and run forward + backward +
AdamW step on the same batches of the `sort` skill. Rounds alternate between the two in one
process; the ratio is of the medians (ours / PEFT's; below 1 means ours is faster).

    python bench/gpt2_lora_vs_peft.py [--steps 50] [--rounds 15] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

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
    from cldash.backbones.gpt2 import GPT2_TARGETS, GPT2TinyOptions, load
    from cldash.core.options import build
    from cldash.methods import get_method
    from cldash.methods.base import TaskContext
    from cldash.streams.skills import lm_loss, skill_split, trim

    device = torch.device(args.device)
    backbone = load(GPT2TinyOptions())

    ours_net = copy.deepcopy(backbone.net)
    ours_net.requires_grad_(False)
    lora = get_method("lora")
    method = lora(build(lora.Config, {"rank": 8, "alpha": 16}, "lora"), policy="single")
    method.attach(ours_net, match_targets(ours_net, GPT2_TARGETS))
    method.before_task(TaskContext(1, 1, "bench", 1, ours_net, None, None, torch.Generator().manual_seed(0), device))
    ours_net.to(device)
    ours_opt = torch.optim.AdamW(method.trainable_parameters(), lr=5e-3)

    peft_net = peft.get_peft_model(copy.deepcopy(backbone.net), peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)).to(device)
    peft_opt = torch.optim.AdamW([p for p in peft_net.parameters() if p.requires_grad], lr=5e-3)
    n_ours = sum(p.numel() for p in method.trainable_parameters())
    n_peft = sum(p.numel() for p in peft_net.parameters() if p.requires_grad)
    assert n_ours == n_peft, (n_ours, n_peft)

    data = skill_split("sort", 4096, seed=1)
    x, y = data.x.to(device), data.y.to(device)
    g = torch.Generator().manual_seed(0)
    batches = [trim(x[i], y[i]) for i in
               (torch.randint(len(y), (args.batch,), generator=g).to(device) for _ in range(args.steps))]

    def steps(net, opt):
        def fn():
            for xb, yb in batches:
                loss = lm_loss(net(input_ids=xb).logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return fn

    fns = {"ours": steps(ours_net, ours_opt), "peft": steps(peft_net, peft_opt)}
    interleaved(fns, 2)   # warm-up
    t = interleaved(fns, args.rounds)
    per_step = {k: median(v) / args.steps for k, v in t.items()}
    save(f"gpt2_lora_vs_peft_{device.type}", {
        "what": f"pre-trained tiny GPT-2 (skills), rank 8, all 8 Conv1D linears, batch {args.batch} of `sort`, "
                "forward+backward+AdamW",
        "ms_per_step": {k: round(1000 * v, 3) for k, v in per_step.items()},
        "steps_per_second": {k: round(1 / v, 1) for k, v in per_step.items()},
        "ratio_ours_over_peft": round(per_step["ours"] / per_step["peft"], 3),
        "rounds": args.rounds, "steps_per_round": args.steps})


if __name__ == "__main__":
    main()
