"""Training-step time of every registered method relative to LoRA, side by side in one process.

Each method wraps its own copy of the same pre-trained tiny ViT (all 12 linears adapted, its
default options and policy) and runs the same batches through one full training step: the
task loss plus the method's extra loss, backward, AdamW step and the method's after-step hook
(AdaLoRA's importance update and masking, for instance). Rounds alternate the order of the
methods, so drift and the noise of a shared machine hit all of them alike; the ratio is of the
medians (method / LoRA; above 1 means slower). LoRA-GA's gradient estimation and PiSSA's SVD
happen once per task (before_task) and are timed separately. ``--task N`` first takes every method
through N - 1 short tasks (a few steps each and the task boundary), so the methods that keep one
frozen branch per finished task (O-LoRA, SD-LoRA) are timed with them.

    python bench/method_step_time.py [--steps 30] [--rounds 11] [--threads 1] [--device cpu] [--task 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, median, save  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0: PyTorch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--task", type=int, default=1, help="time the steps of this task (after task - 1 short ones)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from cldash.backbones import match_targets
    from cldash.backbones.vit import VIT_TARGETS, ViTTinyOptions, load
    from cldash.core.options import build
    from cldash.methods import REGISTRY, StepContext, TaskContext
    from cldash.streams.digits import digits_splits, normalize, rotate

    device = torch.device(args.device)
    backbone = load(ViTTinyOptions())
    train, _ = digits_splits()
    x, y = normalize(rotate(train.x, 90.0)).to(device), train.y.to(device)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(len(y), (args.batch,), generator=g).to(device) for _ in range(args.steps)]

    def batch_fn(n, size):
        gen = torch.Generator().manual_seed(1)
        for _ in range(n):
            idx = torch.randint(len(y), (size,), generator=gen).to(device)
            yield x[idx], y[idx]

    fns, params, setup_s = {}, {}, {}
    for name in ["lora"] + sorted(n for n in REGISTRY if n != "lora"):
        cls = REGISTRY[name]
        net = copy.deepcopy(backbone.net).to(device)
        net.requires_grad_(cls.trains_backbone)
        method = cls(build(cls.Config, {}, name), policy=cls.policies[0] if cls.policies else None)
        method.attach(net, match_targets(net, VIT_TARGETS))
        net.to(device)

        def loss_fn(b, net=net):
            return F.cross_entropy(net(pixel_values=b[0]).logits, b[1])

        gen = torch.Generator().manual_seed(0)
        for k in range(1, args.task):   # earlier tasks: a few steps each, then the boundary
            done = TaskContext(k, args.task, f"bench {k}", 5, net, loss_fn, batch_fn, gen, device)
            method.before_task(done)
            opt = method.make_optimizer(method.trainable_parameters(), cls.default_lr, 0.0)
            for s, batch in enumerate(batch_fn(5, args.batch), start=1):
                total = loss_fn(batch)
                extra = method.extra_loss(StepContext(s, s, done))
                total = total if extra is None else total + extra
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                method.after_step(StepContext(s, s, done))
            method.after_task(done)
        ctx = TaskContext(args.task, args.task, "bench", 10**9, net, loss_fn, batch_fn, gen, device)
        start = time.perf_counter()
        method.before_task(ctx)
        setup_s[name] = time.perf_counter() - start
        trainable = method.trainable_parameters()
        params[name] = sum(p.numel() for p in trainable)
        opt = method.make_optimizer(trainable, cls.default_lr, 0.0)
        net.train()

        def fn(method=method, opt=opt, loss_fn=loss_fn, ctx=ctx, counter=[0]):  # noqa: B006 - a call counter on purpose
            for idx in batches:
                counter[0] += 1
                sctx = StepContext(counter[0], counter[0], ctx)
                loss = loss_fn((x[idx], y[idx]))
                extra = method.extra_loss(sctx)
                total = loss if extra is None else loss + extra
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                method.after_step(sctx)
        fns[name] = fn

    interleaved(fns, 2)   # warm-up
    t = interleaved(fns, args.rounds)
    per_step = {k: median(v) / args.steps for k, v in t.items()}
    rows = {k: {"ms_per_step": round(1000 * v, 3), "ratio_to_lora": round(v / per_step["lora"], 3),
                "trainable_parameters": params[k], "before_task_ms": round(1000 * setup_s[k], 1)}
            for k, v in per_step.items()}
    for k, r in rows.items():
        print(f"{k:<8} {r['ms_per_step']:8.2f} ms/step  x{r['ratio_to_lora']:.2f}  "
              f"{r['trainable_parameters']:>7} params"
              f"  before_task {r['before_task_ms']:.0f} ms")
    save(f"method_step_time_{device.type}" + (f"_task{args.task}" if args.task > 1 else ""), {
        "what": f"tiny ViT, 12 linears, default options, batch {args.batch}, loss + extra loss + backward + AdamW + "
                f"after_step, steps of task {args.task}",
        "command": " ".join(["python", "bench/method_step_time.py", *sys.argv[1:]]),
        "rounds": args.rounds, "steps_per_round": args.steps, "methods": rows})


if __name__ == "__main__":
    main()
