"""RunConfig: every field of a run, with its default, its meaning and its allowed range.

Its defaults are the common regime (cldash.config.presets); `cldash.config.resolve` checks a run's
values against these fields and fills the rest in.
"""

from __future__ import annotations

from dataclasses import dataclass

from cldash.core.options import option


@dataclass
class RunConfig:
    method: str = option("lora", "adapter method (see `cldash methods`)")
    stream: str = option("digits-rotate", "task stream (see `cldash streams`)")
    backbone: str = option("", "backbone; empty: the stream's default")
    preset: str = option("common", "training regime: common (the shared defaults every comparison uses), paper "
                                   "(the method's authors' published regime, each value cited; see `cldash presets`) "
                                   "or paper:METHOD (METHOD's authors' training regime applied to this method, "
                                   "for a baseline on the same schedule); values set explicitly win")
    policy: str | None = option(None, "task-boundary policy (single, merge, stack) where the method leaves it "
                                      "open; empty: the method's default")
    method_options: dict = option({}, "the method's hyper-parameters")
    stream_options: dict = option({}, "the stream's options")
    backbone_options: dict = option({}, "the backbone's options")
    targets: list[str] = option([], "name patterns of the linear modules to adapt; empty: the backbone's default")
    steps_per_task: int = option(300, "optimizer steps on each task", low=1, high=10_000_000)
    batch_size: int = option(64, "training batch size", low=1, high=65_536)
    lr: float | None = option(None, "learning rate; empty: the method's default", low=0.0, low_open=True, high=10.0)
    optimizer: str = option("adamw", "optimizer of every task: adamw, adam (L2 weight decay in the gradient) or sgd "
                                     "(with momentum); a method with its own optimizer (EBLoRA's Riemannian AdamW) "
                                     "needs adamw", choices=("adamw", "adam", "sgd"))
    momentum: float = option(0.9, "SGD momentum (optimizer sgd only)", source="SD-LoRA's models/sdlora.py: 0.9",
                             low=0.0, high=0.999)
    weight_decay: float = option(0.0, "weight decay (decoupled for adamw, L2 for adam and sgd)", low=0.0, high=10.0)
    lr_schedule: str = option("constant", "learning-rate schedule within each task", choices=("constant", "cosine"))
    warmup_steps: int = option(0, "linear warm-up steps at the start of each task", low=0, high=10_000_000)
    warmup_ratio: float = option(0.0, "linear warm-up over this share of each task's steps (used when warmup_steps "
                                      "is 0)", source="EBLoRA's scripts: warmup_ratio 0.03", low=0.0, high=1.0)
    loss_classes: str = option("all", "classes in a class-incremental task's loss: all (every class of the head) or "
                                      "current (only the task's own classes: earlier classes' logits are masked "
                                      "out, as the CoDyRA, InfLoRA and SD-LoRA code trains); domain-incremental "
                                      "tasks have every class either way", choices=("all", "current"))
    max_grad_norm: float = option(0.0, "clip the gradient norm to this value; 0: no clipping", low=0.0, high=1_000_000)
    eval_interval: int = option(50, "evaluate every task every this many steps; 0: only at task ends", low=0,
                                high=10_000_000)
    spectra_interval: int = option(10, "log low-rank update spectra every this many steps; 0: only at task ends",
                                   low=0, high=10_000_000)
    dense_spectra_interval: int = option(50, "log dense update spectra (full fine-tuning, DoRA's effective "
                                             "update) every this many steps; 0: only at task ends", low=0,
                                        high=10_000_000)
    eval_batch_size: int = option(1024, "batch size for evaluation", low=1, high=1_000_000)
    eval_subset: int = option(0, "anytime evaluations (between task ends) score a fixed, seeded subset of this many "
                                 "test examples per task; the task-end rows of R always score the full test sets; "
                                 "0: the full test sets every time", low=0, high=100_000_000)
    validation: float = option(0.0, "hold out this share of each task's training data (a fixed split, the same at "
                                    "every seed) and score it in place of the test sets, which the run then never "
                                    "reads: what a tuning trial runs on (cldash tune); 0: train on all of it and "
                                    "score the test sets", low=0.0, high=0.5)
    precision: str = option("fp32", "precision of the forward passes and losses: fp32, bf16 or fp16 (autocast; the "
                                    "weights that train stay float32, fp16 scales the loss, spectra are always "
                                    "float32 or finer); a GPU without bf16 uses fp16 and says so",
                            choices=("fp32", "bf16", "fp16"))
    compile: bool = option(False, "compile the model's forward with torch.compile where the method allows it "
                                  "(a method that cannot says why, and the run goes on without); each new model "
                                  "structure compiles first (tens of seconds), so it pays on long GPU runs")
    seed: int = option(0, "seed of everything random in the run (inits, batch order, dropout)",
                       low=0, high=2**31 - 1)
    device: str = option("auto", "cpu, cuda, cuda:N, mps, or auto (a GPU when there is one)")
    threads: int = option(1, "CPU threads for this run. 1 (the default) gives the same numbers on every machine, "
                             "whatever its core count and however many runs share it (more threads sum in "
                             "another order); more can be faster for a large hf: model; 0: the launcher's share "
                             "of the cores", low=0, high=1024)
    aid_preset: str = option("", "TRACE's settings for an aid, on top of the regime: replay (a buffer of 200, "
                                 "balanced) or ewc (online EWC, lambda 400); each value cited (cldash presets); "
                                 "empty: none")
    replay: int = option(0, "replay buffer size, in examples of finished tasks mixed into every step; 0: no replay",
                         source="experience replay, arXiv 1902.10486", low=0, high=10_000_000)
    replay_rule: str = option("balanced", "how the buffer is filled: balanced (an equal, class-balanced share per "
                                          "finished task) or reservoir (reservoir sampling over all examples)",
                              choices=("balanced", "reservoir"))
    replay_batch_size: int = option(0, "replayed examples per step; 0: the training batch size", low=0, high=65_536)
    ewc_lambda: float = option(0.0, "EWC strength lambda (the penalty is lambda/2 sum F (theta - theta*)^2); 0: no EWC",
                               source="arXiv 1612.00796; TRACE's default is 400", low=0.0, high=100_000_000)
    ewc_online: bool = option(False, "online EWC: one running Fisher gamma F + F_t anchored at the last task's end",
                              source="arXiv 1805.06370")
    ewc_gamma: float = option(1.0, "decay of the running Fisher in online EWC", low=0.0, high=1.0)
    ewc_batches: int = option(16, "mini-batches used to estimate each task's diagonal Fisher", low=1, high=100_000)
    train_head: bool | None = option(None, "also train the pre-trained classifier head; empty: only "
                                           "full fine-tuning does (new heads always train)")
    checkpoints: str = option("auto", "checkpoints at task ends, for resume and fork: all (every task's, so a fork "
                                      "can start after any task), latest (only the last task's is kept) or none; "
                                      "auto: all for cldash's own tiny backbones (about 630 KiB a task), latest for "
                                      "an hf: model (a checkpoint holds what trains: all of it under full "
                                      "fine-tuning); a value given explicitly always wins",
                              choices=("auto", "latest", "all", "none"))
    name: str = option("", "a label for the run")
    regime: dict = option({}, "filled in by resolve, not an input: what the preset set, where each value comes "
                              "from, what was translated, and which values the user's own overrode")
