"""Training throughput of the engine on ViT-B/16: images/s, step time and peak memory, side by side.

Everything is built here, so it needs no network: a random-init ViT-B/16 (google/vit-base-patch16-224-in21k's
sizes: width 768, 12 layers, patch 16, 224 x 224) saved as an ``hf:`` folder, and a synthetic image data set
(uint8 noise, 20 classes) saved with ``datasets``' save_to_disk as an ``hf-image:`` stream. Each timed step is
the engine's own (cldash.engine.loop.ContinualRun.train_step: the stream's GPU-side augmentation and
normalisation of uint8 images already on the device, autocast, backward, optimizer step, the method's hooks),
so what is measured is what a run costs. Side by side, in one process, in alternating rounds:

- LoRA, InfLoRA, SD-LoRA, CoDyRA and EBLoRA, in fp32 and in bf16, with torch.compile off and (on a GPU) on;
- our LoRA step against PEFT's LoRA on the same ViT-B/16, targets and batch (ratio ours / PEFT; goal <= 1.0);
- 1 run alone against 4 runs sharing the device (4 processes at once): the aggregate images/s.

From the measured step and evaluation times it estimates the 10-task ImageNet-R recipe (InfLoRA's schedule:
cldash.streams.benchmarks and the paper preset) on this device. On a CPU it runs a small configuration (width
64, 2 layers, 32 x 32) as a smoke test, in under 2 minutes.

    python bench/gpu_throughput.py [--size full|small] [--steps 10] [--rounds 3] [--batch 128] [--no-share]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, median, save  # noqa: E402

METHODS = ("lora", "inflora", "sdlora", "codyra", "eblora")
SIZES = {   # ViT-B/16 as google/vit-base-patch16-224-in21k, and a CPU smoke-test size
    "full": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "image_size": 224, "patch_size": 16},
    "small": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
              "image_size": 32, "patch_size": 8},
}
CLASSES, PER_CLASS = 20, 16          # two tasks of ten classes; 320 images, 256 of them for training
RECIPE = {"tasks": 10, "train_images": 24_000, "test_images": 6_000}   # ImageNet-R, 80/20 of 30,000, 10 x 20


def write_inputs(root: Path, size: str) -> tuple[str, str]:
    """A random-init ViT folder and a synthetic image data set: the ``hf:`` and ``hf-image:`` names of a run."""
    import datasets
    import numpy as np
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification

    dims = SIZES[size]
    torch.manual_seed(0)
    model_dir, data_dir = root / f"vit-{size}", root / f"images-{size}"
    ViTForImageClassification(ViTConfig(**dims, num_labels=CLASSES)).save_pretrained(model_dir)
    (model_dir / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": {"height": dims["image_size"],
                                                                   "width": dims["image_size"]}}))
    rng = np.random.default_rng(0)
    side = dims["image_size"]
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
              for _ in range(CLASSES * PER_CLASS)]
    labels = [i % CLASSES for i in range(len(images))]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=CLASSES)})
    data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    data.train_test_split(test_size=0.2, seed=0, stratify_by_column="label").save_to_disk(str(data_dir))
    return f"hf:{model_dir}", f"hf-image:{data_dir}"


def run_config(backbone: str, stream: str, method: str, precision: str, compile_: bool, batch: int) -> dict:
    # one task's steps are timed; no anytime evaluation or spectra inside them (as a long run between its logs);
    # LoRA's targets are q and v (SD-LoRA's, and PEFT's usual), the other methods' their own defaults
    return {"method": method, "backbone": backbone, "stream": stream, "batch_size": batch, "steps_per_task": 1000,
            "precision": precision, "compile": compile_, "eval_interval": 0, "spectra_interval": 0,
            "dense_spectra_interval": 0, "stream_options": {"tasks": 2}, "targets": ["q_proj|v_proj"]}


def make_run(backbone: str, stream: str, method: str, precision: str, compile_: bool, batch: int):
    from cldash.config import resolve
    from cldash.engine.loop import ContinualRun

    run = ContinualRun(resolve(run_config(backbone, stream, method, precision, compile_, batch)))
    training = run.begin_task(1, run.tasks[0])
    return run, training


def timed_steps(run, training, steps: int):
    def fn():
        for s in range(steps):
            run.train_step(training, s + 1)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
    return fn


def peft_steps(backbone: str, stream: str, precision: str, batch: int, steps: int):
    """PEFT's LoRA (rank 8, alpha 16, q and v, as ours) on the same network, stream, batches and autocast: the
    stream's loss (its GPU-side augmentation included), backward, AdamW over the adapters and the new head."""
    import peft

    from cldash.config import resolve
    from cldash.engine.assembly import assemble
    from cldash.engine.loop import pick_device
    from cldash.engine.precision import Precision

    device = pick_device("auto")
    parts = assemble(resolve(run_config(backbone, stream, "lora", precision, False, batch)), device,
                     with_method=False)
    parts.model.net.requires_grad_(False)
    peft.inject_adapter_in_model(peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
                                 parts.model.net)
    params = [p for p in parts.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    amp = Precision.for_device(precision, device)
    task = parts.stream.tasks[0]
    batches = parts.stream.batches(task, batch, torch.Generator().manual_seed(1))
    parts.model.train()

    def fn():
        for _ in range(steps):
            with amp.autocast():
                loss = parts.stream.loss(parts.model, next(batches), task)
            opt.zero_grad(set_to_none=True)
            amp.step(loss, opt, params, 0.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return fn


def eval_images_per_second(run) -> float:
    start = time.perf_counter()
    run.scores.evaluate(run.model, run.step, trained_through=1, final=True)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    images = sum(len(t.test) for t in run.stream.tasks + run.stream.general)
    return images / (time.perf_counter() - start)


def peak_memory_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def recipe_minutes(images_per_s: float, eval_ips: float) -> dict:
    """The 10-task ImageNet-R recipe of `cldash run --method inflora --stream imagenet-r-10 --preset paper`: its steps
    (InfLoRA's 50 epochs of 2,400 images a task at batch 128: cldash.config.presets) at the measured training
    images/s, and every task's test set scored at each task's end at the measured evaluation images/s."""
    from cldash.config import resolve

    cfg = resolve({"method": "inflora", "stream": "imagenet-r-10", "preset": "paper"}).config
    steps = RECIPE["tasks"] * cfg.steps_per_task
    train = steps * cfg.batch_size / images_per_s
    evals = sum(RECIPE["test_images"] * t / RECIPE["tasks"] for t in range(1, RECIPE["tasks"] + 1)) / eval_ips
    return {"steps": steps, "batch": cfg.batch_size, "train_min": round(train / 60, 2),
            "eval_min": round(evals / 60, 2), "total_min": round((train + evals) / 60, 2)}


def child(args) -> None:
    """One of the processes sharing the device: time `steps` steps after the common start time, print images/s."""
    run, training = make_run(args.backbone, args.stream, "lora", args.precision, False, args.batch)
    timed_steps(run, training, 2)()   # warm-up
    while time.time() < args.start_at:
        time.sleep(0.01)
    start = time.perf_counter()
    timed_steps(run, training, args.steps)()
    print(json.dumps({"images_per_s": args.batch * args.steps / (time.perf_counter() - start)}))


def shared(args, backbone: str, stream: str, precision: str) -> dict:
    """Aggregate images/s of 1 process alone and of 4 at once on the same device."""
    out = {}
    for n in (1, 4):
        start_at = time.time() + (30 if args.size == "full" else 15)
        cmd = [sys.executable, __file__, "--child", "--backbone", backbone, "--stream", stream, "--precision",
               precision, "--batch", str(args.batch), "--steps", str(args.steps * 2), "--start-at", str(start_at)]
        env = {**os.environ, "CLDASH_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
        rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["images_per_s"] for p in procs]
        out[f"{n}_runs_images_per_s"] = round(sum(rates), 1)
    out["ratio_4_over_1"] = round(out["4_runs_images_per_s"] / out["1_runs_images_per_s"], 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", choices=tuple(SIZES), default="full" if torch.cuda.is_available() else "small")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=0, help="0: 128 at full size (InfLoRA's), 32 small")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--no-share", action="store_true", help="skip the 1-against-4-runs measurement")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="auto: on a GPU only")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    p.add_argument("--stream", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.batch = args.batch or (128 if args.size == "full" else 32)
    if args.child:
        return child(args)
    os.environ.setdefault("CLDASH_CACHE", tempfile.mkdtemp(prefix="cldash-bench-"))
    root = Path(tempfile.mkdtemp(prefix="cldash-gpu-bench-"))
    backbone, stream = write_inputs(root, args.size)
    cuda = torch.cuda.is_available()
    bf16 = "bf16" if not cuda or torch.cuda.is_bf16_supported() else "fp16"
    compiles = [False] + ([True] if args.compile == "on" or (args.compile == "auto" and cuda) else [])
    results = {"size": args.size, "batch": args.batch, "steps_per_round": args.steps, "rounds": args.rounds,
               "methods": {}}
    for method in args.methods.split(","):
        rows = {}
        for precision in ("fp32", bf16):
            for compile_ in compiles:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                run, training = make_run(backbone, stream, method, precision, compile_, args.batch)
                fn = timed_steps(run, training, args.steps)
                interleaved({"w": fn}, 1)   # warm-up (and compile)
                step_s = median(interleaved({"x": fn}, args.rounds)["x"]) / args.steps
                eval_ips = eval_images_per_second(run)
                key = f"{precision}{'+compile' if compile_ else ''}"
                rows[key] = {"ms_per_step": round(1000 * step_s, 2), "images_per_s": round(args.batch / step_s, 1),
                             "eval_images_per_s": round(eval_ips, 1), "peak_gib": peak_memory_gib(),
                             "recipe": recipe_minutes(args.batch / step_s, eval_ips)}
                del run, training
        rows["bf16_speedup"] = round(rows["fp32"]["ms_per_step"] / rows[bf16]["ms_per_step"], 3)
        results["methods"][method] = rows
        print(method, json.dumps(rows), flush=True)
    for precision in ("fp32", bf16):
        run, training = make_run(backbone, stream, "lora", precision, False, args.batch)
        fns = {"ours": timed_steps(run, training, args.steps), "peft": peft_steps(backbone, stream, precision,
                                                                                args.batch, args.steps)}
        interleaved(fns, 1)
        t = interleaved(fns, args.rounds)
        results[f"lora_vs_peft_{precision}"] = {
            "ms_per_step": {k: round(1000 * median(v) / args.steps, 2) for k, v in t.items()},
            "ratio_ours_over_peft": round(median(t["ours"]) / median(t["peft"]), 3)}
        del run, training, fns
    if not args.no_share:
        results["sharing"] = shared(args, backbone, stream, bf16)
    save(f"gpu_throughput_{'cuda' if cuda else 'cpu'}_{args.size}", results)


if __name__ == "__main__":
    main()
