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

from cldash.config.presets import apply
from cldash.config.run_config import RunConfig
from cldash.core.errors import ConfigError
from cldash.core.options import as_dict, build, field_errors
from cldash.core.text import with_article


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
    import torch  # deferred: pages import config at start-up

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


def _check_precision(cfg: RunConfig) -> None:
    """Precision and evaluation options that cannot work together. A named device without autocast cannot run
    bf16 or fp16 (with device auto, the run falls back to fp32 and says so); CPU autocast has both. A subset
    for the anytime evaluations needs anytime evaluations: task ends always score the full test sets."""
    import torch  # deferred: pages import config at start-up

    kind = cfg.device.strip().lower().split(":", 1)[0]
    if cfg.precision != "fp32" and kind != "auto" and not torch.amp.is_autocast_available(kind):
        raise ConfigError(f"precision {cfg.precision} needs autocast, which this PyTorch does not have on {kind}; "
                          "use precision fp32 or another device.", "precision")
    if cfg.eval_subset and not cfg.eval_interval:
        raise ConfigError(f"eval_subset {cfg.eval_subset} has nothing to score: eval_interval is 0, so only task "
                          "ends are scored, and they always use the full test sets; set eval_interval or leave "
                          "eval_subset at 0.", "eval_subset")


def resolve(values: dict | RunConfig) -> Resolved:
    """Validate a run configuration and fill every default. Raises ConfigError (one sentence)."""
    from cldash.backbones import get_backbone  # deferred: imports torch; pages import config at start-up
    from cldash.methods import get_method  # deferred: imports torch; pages import config at start-up
    from cldash.streams import get_stream  # deferred: imports torch; pages import config at start-up

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
    stream_cls.check_data(stream_options, entry.kind)   # data that cannot fit the model: said before any storing
    method_cls(method_options, policy=cfg.policy)   # checks the policy against the method
    if cfg.optimizer != "adamw" and method_cls.own_optimizer:
        raise ConfigError(f"{cfg.method} trains with its own optimizer ({method_cls.own_optimizer}); "
                          f"optimizer must be adamw (got {cfg.optimizer}).", "optimizer")
    _check_device(cfg.device)
    _check_precision(cfg)
    cfg.policy = cfg.policy or (method_cls.policies[0] if method_cls.policies else None)
    cfg.lr = cfg.lr if cfg.lr is not None else method_cls.default_lr
    cfg.targets = list(cfg.targets) or list(entry.default_targets)
    if cfg.checkpoints == "auto":
        # an in-project backbone's checkpoint is small (about 634 KiB for LoRA on vit-tiny, 12 ms to write, 0.1 %
        # of the run: bench/results/checkpoint_cost_lora.json), so every task's is kept and a fork can start after
        # any; an hf: model's checkpoint holds whatever of the model trains, which can be gigabytes
        cfg.checkpoints = "all" if entry.pretrain is not None else "latest"
    cfg.method_options = as_dict(method_options)
    cfg.stream_options = as_dict(stream_options)
    cfg.backbone_options = as_dict(backbone_options)
    return Resolved(cfg, method_cls, method_options, stream_cls, stream_options, entry, backbone_options, regime)


def check_fields(values: dict) -> dict[str, ConfigError]:
    """Every error of a run configuration that a form can show at once, by field ('steps_per_task', 'seed',
    'lora.rank'): first each field on its own (run, method, stream and backbone options); when all of
    those pass, what needs the whole configuration (`resolve`: presets, checks across fields) and the
    model's layer sizes (`check_against_model`). Empty: the configuration would launch."""
    from cldash.backbones import BACKBONES  # deferred: imports torch; pages import config at start-up
    from cldash.methods import REGISTRY  # deferred: imports torch; pages import config at start-up
    from cldash.streams import STREAMS  # deferred: imports torch; pages import config at start-up

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
    from cldash.backbones import linear_modules, match_targets  # deferred: imports torch

    net = resolved.backbone.build_net(resolved.backbone_options)
    names = match_targets(net, resolved.config.targets)
    shapes = {n: s for n, s in linear_modules(net).items() if n in names}
    resolved.make_method().check_layers(shapes)
    return shapes


def check_inputs(resolved: Resolved) -> None:
    """Refuse, in one sentence, a run whose pinned backbone weights or named benchmark data can be had neither from
    the local caches nor from the Hub (no network): before it is stored, rather than a run that fails at once.
    Reads no weights and no data."""
    from cldash.backbones.pretrained import PINNED, missing_weights  # deferred: imports torch
    from cldash.streams.benchmarks import BENCHMARKS, missing_data  # deferred: imports torch

    cfg = resolved.config
    why = missing_weights(cfg.backbone) if cfg.backbone in PINNED else None
    if why:
        raise ConfigError(why, "backbone")
    why = missing_data(cfg.stream) if cfg.stream in BENCHMARKS else None
    if why:
        raise ConfigError(why, "stream")


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
