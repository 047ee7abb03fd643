"""The run configuration: one validated, fully resolved description of a run.

`resolve()` turns user input (a dict from the CLI, a form or a JSON file) into a `Resolved`
run: every field checked, with one sentence naming the field and its allowed range for any bad
value, and every default filled in (the method's learning rate and policy, the backbone's
target patterns, each option's paper default), so that what is stored with a run is exactly
what ran. `check_against_model()` then checks what needs the model's layer sizes (a rank no
larger than every targeted layer, target patterns that match) without pre-training anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cldash.core.errors import ConfigError
from cldash.core.options import as_dict, build, field_errors, option
from cldash.core.text import with_article


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
    checkpoints: str = option("latest", "checkpoints at task ends, for resume and fork: latest (only the last task's "
                                        "is kept), all (every task's, so a fork can start after any task) or none",
                              choices=("latest", "all", "none"))
    name: str = option("", "a label for the run")
    regime: dict = option({}, "filled in by resolve, not an input: what the preset set, where each value comes "
                              "from, what was translated, and which values the user's own overrode")


@dataclass
class Resolved:
    config: RunConfig
    method_cls: type
    method_options: object
    stream_cls: type
    stream_options: object
    backbone: object            # BackboneEntry
    backbone_options: object
    regime: dict = dataclasses.field(default_factory=dict)   # cldash.config.presets.apply's record of the preset

    def warmup(self) -> int:
        """Warm-up steps of each task: warmup_steps, else warmup_ratio of the task's steps."""
        c = self.config
        return c.warmup_steps or round(c.warmup_ratio * c.steps_per_task)

    def make_method(self):
        return self.method_cls(self.method_options, policy=self.config.policy)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self.config)


def _check_device(device: str) -> None:
    import torch

    d = device.strip().lower()
    if d in ("auto", "cpu"):
        return
    if d == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' is not available on this machine; use cpu or auto.", "device")
        return
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} is not available: this PyTorch build sees no CUDA GPU; "
                              "use cpu or auto.", "device")
        if ":" in d:
            idx = d.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                raise ConfigError(f"device {device!r} does not exist; this machine has "
                                  f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...).", "device")
        return
    raise ConfigError(f"device must be cpu, cuda, cuda:N, mps or auto (got {device!r}).", "device")


def resolve(values: dict | RunConfig) -> Resolved:
    """Validate a run configuration and fill every default. Raises ConfigError (one sentence)."""
    from cldash.backbones import get_backbone
    from cldash.methods import get_method
    from cldash.streams import get_stream

    from cldash.config.presets import apply

    raw = as_dict(values)
    cfg = build(RunConfig, raw, prefix="")     # every field checked before the preset reads any
    method_cls = get_method(cfg.method)
    stored = raw.get("regime") or {}
    raw, regime = apply({k: v for k, v in raw.items() if k != "regime"}, cfg.method)
    if regime["values"]:
        cfg = build(RunConfig, raw, prefix="")
    # a stored, already resolved config sets every field itself: it keeps the record made when it was created
    cfg.regime = stored if stored.get("preset") == regime["preset"] and stored.get("aid", "") == regime["aid"] \
        and not regime["values"] else regime
    stream_cls = get_stream(cfg.stream)
    cfg.backbone = cfg.backbone or stream_cls.default_backbone
    entry = get_backbone(cfg.backbone)
    if entry.kind not in stream_cls.backbone_kinds:
        raise ConfigError(f"stream {cfg.stream} needs {with_article(' or '.join(stream_cls.backbone_kinds))} "
                          f"backbone; {cfg.backbone} is {with_article(entry.kind)} model.", "backbone")
    method_options = build(method_cls.Config, cfg.method_options, prefix=cfg.method)
    stream_options = build(stream_cls.Options, cfg.stream_options, prefix=cfg.stream)
    backbone_options = build(entry.Options, cfg.backbone_options, prefix=cfg.backbone)
    method_cls(method_options, policy=cfg.policy)   # checks the policy against the method
    if cfg.optimizer != "adamw" and method_cls.own_optimizer:
        raise ConfigError(f"{cfg.method} trains with its own optimizer ({method_cls.own_optimizer}); "
                          f"optimizer must be adamw (got {cfg.optimizer}).", "optimizer")
    _check_device(cfg.device)
    cfg.policy = cfg.policy or (method_cls.policies[0] if method_cls.policies else None)
    cfg.lr = cfg.lr if cfg.lr is not None else method_cls.default_lr
    cfg.targets = list(cfg.targets) or list(entry.default_targets)
    cfg.method_options = as_dict(method_options)
    cfg.stream_options = as_dict(stream_options)
    cfg.backbone_options = as_dict(backbone_options)
    return Resolved(cfg, method_cls, method_options, stream_cls, stream_options, entry, backbone_options, regime)


def check_fields(values: dict) -> dict[str, ConfigError]:
    """Every error of a run configuration that a form can show at once, by field ('steps_per_task', 'seed',
    'lora.rank'): first each field on its own (run, method, stream and backbone options); when all of
    those pass, what needs the whole configuration (`resolve`: presets, checks across fields) and the
    model's layer sizes (`check_against_model`). Empty: the configuration would launch."""
    from cldash.backbones import BACKBONES
    from cldash.methods import REGISTRY
    from cldash.streams import STREAMS

    raw = as_dict(values)
    owned = {"method_options", "stream_options", "backbone_options", "regime"}
    errors = field_errors(RunConfig, {k: v for k, v in raw.items() if k not in owned}, "")
    method, stream = raw.get("method"), raw.get("stream", "digits-rotate")
    backbone = raw.get("backbone") or (STREAMS[stream].default_backbone if stream in STREAMS else "")
    for owner, key, cls in ((method, "method_options", getattr(REGISTRY.get(method), "Config", None)),
                            (stream, "stream_options", getattr(STREAMS.get(stream), "Options", None)),
                            (backbone, "backbone_options", getattr(BACKBONES.get(backbone), "Options", None))):
        if cls is not None and isinstance(raw.get(key), dict):
            errors.update(field_errors(cls, raw[key], owner))
    if not errors:
        try:
            check_against_model(resolve(raw))
        except ConfigError as exc:
            errors[exc.field or "method"] = exc
    return errors


def check_against_model(resolved: Resolved) -> dict[str, tuple[int, int]]:
    """Match the target patterns on the bare (untrained) network and check the method's options
    against the sizes of the matched layers. Returns {target name: (out, in)}."""
    from cldash.backbones import linear_modules, match_targets

    net = resolved.backbone.build_net(resolved.backbone_options)
    names = match_targets(net, resolved.config.targets)
    shapes = {n: s for n, s in linear_modules(net).items() if n in names}
    resolved.make_method().check_layers(shapes)
    return shapes


def aids_label(cfg: RunConfig | dict) -> str:
    """The continual-learning aids of a run in words ('replay 200 (balanced) + EWC 100'), or ''."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    bits = []
    if get("replay", 0):
        bits.append(f"replay {get('replay')} ({get('replay_rule', 'balanced')})")
    if get("ewc_lambda", 0):
        bits.append(f"{'online ' if get('ewc_online') else ''}EWC {get('ewc_lambda'):g}")
    return " + ".join(bits)


def describe_run(cfg: RunConfig) -> str:
    """A short human label: 'lora r=8 · digits-rotate · seed 0' ('lora r=8 + replay 200 ...')."""
    opts = cfg.method_options or {}
    bits = [cfg.method]
    if "rank" in opts:
        bits.append(f"r={opts['rank']}")
    if cfg.policy and cfg.policy != "single":
        bits.append(cfg.policy)
    if cfg.preset not in ("", "common"):
        bits.append(f"[{cfg.preset}]")
    if aids_label(cfg):
        bits.append("+ " + aids_label(cfg))
    return f"{' '.join(bits)} · {cfg.stream} · seed {cfg.seed}"
