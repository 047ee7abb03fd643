"""Any Hugging Face model as a backbone: ``--backbone hf:NAME_OR_PATH``.

NAME_OR_PATH is a local folder written by ``save_pretrained`` or a Hub name (downloaded once by
transformers when there is internet, then read from its cache; without network, or with HF_HUB_OFFLINE
set, only the cache is read, so a name that is not there is one sentence at once: cldash.core.hub).
Remote code is never run (``trust_remote_code=False``): a model that needs it is refused with one sentence.

What the model is comes from its config (`model_kind`):

- CLIP (model_type "clip" or "clip_vision_model") -> kind "clip": image features and zero-shot heads from
  text prompts (cldash.backbones.clip);
- an architecture with a head says it: ``*ForCausalLM`` / ``*LMHeadModel`` -> a causal language model (the
  `hf:` language streams), ``*ForSequenceClassification`` -> a text classifier, ``*ForImageClassification``
  -> an image classifier;
- otherwise (``BertForMaskedLM``, ``BertModel``, no architectures) the model type decides: a decoder
  (``is_decoder``) is a causal LM; an image model type (ViT) an image classifier; an encoder family
  (BERT, RoBERTa...: a masked-LM type that is not encoder-decoder) a text classifier with a new head,
  although transformers also lists BERT among its causal LMs (BertLMHeadModel); any other type with a
  causal LM is one.

An image model also says how its input is prepared (`image_fields`): its square resolution (the config's
image_size), normalisation (the image processor's preprocessor_config.json saved next to the model, else
the image processor's defaults: 0.5 / 0.5 as ViT's, OpenAI's CLIP mean and std for CLIP) and channels.
The weights' exact Hub commit is recorded in ``info["revision"]`` ("local" for a folder).

Target modules are found by name patterns on a weightless copy of the network (built on the
``meta`` device from the config, so checking a configuration never loads a 7B model's weights).
The default targets are every linear module but the head (``lm_head``, ``classifier``, ``score``...),
written as the patterns of their last names (``q_proj|k_proj|...``, as PEFT's ``all-linear``); for CLIP,
every linear module of the vision encoder (cldash.backbones.clip.CLIP_TARGETS).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cldash.backbones import clip
from cldash.backbones.base import Backbone, BackboneEntry, linear_modules
from cldash.core import hub
from cldash.core.errors import ConfigError
from cldash.core.options import option

PREFIX = "hf:"
HEAD_NAMES = ("lm_head", "embed_out", "classifier", "score", "pooler", "head")   # never adapted by default
KINDS = {"causal-lm": ("ForCausalLM", "LMHeadModel"), "sequence-classification": ("ForSequenceClassification",),
         "image-classification": ("ForImageClassification",)}


@dataclass
class HFOptions:
    num_labels: int = option(0, "outputs of a classifier's head; 0: the model's own (another number gives a new, "
                                "randomly initialised head: train it with --train-head true)", low=0, high=100_000)
    dtype: str = option("float32", "weights' dtype once loaded", choices=("float32", "bfloat16", "float16"))


def _auto_classes():
    from transformers import (  # deferred: loads transformers' model code
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )

    return {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification,
            "image-classification": AutoModelForImageClassification}


def _clip_class(config):
    """The transformers class of a CLIP checkpoint: the whole model, or a vision tower with or without its
    projection."""
    from transformers import (  # deferred: loads transformers' model code
        CLIPModel,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
    )

    if config.model_type == "clip":
        return CLIPModel
    return CLIPVisionModelWithProjection if clip.has_projection(config) else CLIPVisionModel


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def offline_error(what: str, name: str, offline: str) -> ConfigError:
    todo = "unset it to download the model" if offline.startswith("HF_HUB_OFFLINE") else \
        "download it once with internet"
    return ConfigError(f"cannot load {what} {name!r}: it is not a local model folder and not in the local Hugging "
                       f"Face cache, and {offline} ({todo}, or give the path of a folder written by "
                       "save_pretrained).", "backbone")


@contextlib.contextmanager
def quiet_loading():
    """transformers' own output while it loads, silenced: its load report (a table of the checkpoint's missing
    and unexpected keys, where a head cldash adds is always "missing"), its config warnings and its
    weight-loading progress bar went into a run's terminal output and log and told the user nothing to act on.
    Errors still come through (verbosity error), and the Hub's download bars stay. The settings are restored
    afterwards, so code of the caller's own that uses transformers keeps its output."""
    from huggingface_hub import utils as hub_utils  # deferred: imported by transformers anyway
    from transformers.utils import logging as hf_logging  # deferred: imports transformers

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hub_bars = not hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()     # this turns the Hub's bars off too: a first download keeps its bar
    if hub_bars:
        hub_utils.enable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if not hub_bars:
            hub_utils.disable_progress_bars()


@functools.lru_cache(maxsize=32)
def auto_config(name: str, revision: str | None = None):
    """The model's transformers config, or one sentence saying why it cannot be had."""
    from transformers import AutoConfig  # deferred: loads transformers' model code

    try:
        with hub.cache_only_unless_reachable(name) as offline, quiet_loading():
            return AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise ConfigError(f"the Hugging Face model {name!r} needs its own Python code (trust_remote_code), "
                              "which cldash never runs; choose a model that transformers supports natively.",
                              "backbone") from None
        raise ConfigError(f"cannot load the Hugging Face model {name!r}: {_first_line(exc)}.", "backbone") from None
    except (OSError, ImportError, KeyError) as exc:
        if not offline:
            raise ConfigError(f"cannot load the Hugging Face model {name!r}: {_first_line(exc)}.",
                              "backbone") from None
        raise offline_error("the Hugging Face model", name, offline) from None


def model_kind(config) -> str:
    """"clip", "causal-lm", "sequence-classification" or "image-classification", from a transformers config
    (the rules are in the module's docstring)."""
    if config.model_type in clip.CLIP_TYPES:
        return "clip"
    for arch in getattr(config, "architectures", None) or []:
        for kind, suffixes in KINDS.items():
            if arch.endswith(suffixes):
                return kind
    from transformers.models.auto.modeling_auto import (  # deferred: the Auto classes' tables are large
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )
    kind_of = config.model_type
    if getattr(config, "is_decoder", False) and kind_of in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    if kind_of in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image-classification"
    if kind_of in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False):
        return "sequence-classification"     # an encoder (BERT): transformers' BertLMHeadModel is no reason
    if kind_of in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    return "sequence-classification"


def _is_head(name: str) -> bool:
    return any(part in HEAD_NAMES for part in name.split("."))


def net_from_config(config, kind: str, num_labels: int = 0) -> nn.Module:
    """The network of `kind` for `config`, without weights (meta device): what targets are matched on."""
    if num_labels and kind not in ("causal-lm", "clip"):
        config = type(config).from_dict({**config.to_dict(), "num_labels": num_labels})
    with torch.device("meta"):
        if kind == "clip":
            return clip.tower_from_config(config)
        return _auto_classes()[kind].from_config(config, trust_remote_code=False)


def _meta_net(name: str, kind: str, num_labels: int = 0, revision: str | None = None) -> nn.Module:
    return net_from_config(auto_config(name, revision), kind, num_labels)


def default_targets(net: nn.Module, kind: str) -> list[str]:
    """The backbone's default target patterns: for CLIP its vision encoder's linears, else every linear but
    the head."""
    return list(clip.CLIP_TARGETS) if kind == "clip" else default_target_patterns(net)


def default_target_patterns(net: nn.Module) -> list[str]:
    """Every linear module but the head, as an alternation of last names; a last name that a head module
    shares (RoBERTa's classifier.dense) is replaced by the full names of its non-head modules."""
    linears = [n for n in linear_modules(net)]
    body = [n for n in linears if not _is_head(n)]
    if not body:
        return []
    last = sorted({n.rsplit(".", 1)[-1] for n in body})
    shared = {s for s in last if any(_is_head(n) and n.rsplit(".", 1)[-1] == s for n in linears)}
    parts = [s for s in last if s not in shared] + [re.escape(n) for n in body if n.rsplit(".", 1)[-1] in shared]
    return ["|".join(parts)]


def tokenizer_for(name: str, revision: str | None = None):
    from transformers import AutoTokenizer  # deferred: loads transformers' model code

    try:
        with hub.cache_only_unless_reachable(name), quiet_loading():
            tok = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=False)
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"cannot load the tokenizer of the Hugging Face model {name!r} (a text model needs its "
                          "tokenizer saved next to it).", "backbone") from None
    if tok.pad_token_id is None:    # GPT-2 style tokenizers have none; right padding with EOS is harmless here
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def _hidden_size(config) -> int:
    for key in ("hidden_size", "n_embd", "d_model", "dim"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    sizes = getattr(config, "hidden_sizes", None)
    return sizes[-1] if sizes else 0


def entry(spec: str):
    """A BackboneEntry for ``hf:NAME_OR_PATH`` (the config is read now; the weights when a run loads it)."""
    name = spec[len(PREFIX):].strip()
    if not name:
        raise ConfigError("a Hugging Face backbone needs a name or a path after 'hf:' (e.g. hf:gpt2).", "backbone")
    config = auto_config(name)
    kind = model_kind(config)
    targets = default_targets(_meta_net(name, kind), kind)
    if not targets:
        raise ConfigError(f"the Hugging Face model {name!r} has no linear module outside its head to adapt.",
                          "backbone")
    return BackboneEntry(spec, f"Hugging Face {name} ({kind})", kind, HFOptions,
                         functools.partial(build_net, name, kind), functools.partial(load, name, kind),
                         tuple(targets))


def build_net(name: str, kind: str, o: HFOptions) -> nn.Module:
    """The network without weights (meta device): enough to match targets and check ranks."""
    return _meta_net(name, kind, o.num_labels)


def _from_pretrained(cls, name: str, revision: str | None, label: str, **kwargs):
    """`cls.from_pretrained(name)` at `revision`, or one sentence saying why not (offline: cldash.core.hub)."""
    try:
        with hub.cache_only_unless_reachable(name) as offline, quiet_loading():
            return cls.from_pretrained(name, revision=revision, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        if offline:
            raise offline_error(f"the weights of {label}", name, offline) from None
        raise ConfigError(f"cannot load the weights of {label} {name!r}: "
                          f"{str(exc).splitlines()[0].rstrip('.')}.", "backbone") from None


def hub_file(name: str, filename: str, revision: str | None) -> Path | None:
    """The local path of one file of the model (a folder's own, or the Hub cache's snapshot), or None."""
    from transformers.utils import cached_file  # deferred: loads transformers' hub code

    try:
        with hub.cache_only_unless_reachable(name):
            found = cached_file(name, filename, revision=revision, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def resolved_revision(name: str, revision: str | None) -> str:
    """The commit hash of the weights in use: the Hub cache's snapshot folder they were read from (named by
    the commit), "local" for a model folder."""
    if Path(name).is_dir():
        return "local"
    found = hub_file(name, "config.json", revision)
    if found is not None:
        return found.parent.name
    return revision if revision and re.fullmatch(r"[0-9a-f]{40}", revision) else "unknown"


def image_fields(name: str, config, revision: str | None = None) -> dict:
    """image_size, image_mean, image_std and num_channels of an image model: the resolution from its config
    (image_size, the position embeddings' grid), the normalisation from its preprocessor_config.json when
    one is saved with it, else the image processor's defaults (transformers' ViTImageProcessor: 0.5 / 0.5;
    CLIPImageProcessor: OpenAI's CLIP mean and std)."""
    from transformers.image_utils import (  # deferred: loads transformers' image code
        IMAGENET_STANDARD_MEAN,
        IMAGENET_STANDARD_STD,
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
    )

    vision = clip.vision_config(config) if config.model_type in clip.CLIP_TYPES else config
    file = hub_file(name, "preprocessor_config.json", revision)
    processor = json.loads(file.read_text()) if file is not None else {}
    clip_like = config.model_type in clip.CLIP_TYPES
    mean = processor.get("image_mean") or (OPENAI_CLIP_MEAN if clip_like else IMAGENET_STANDARD_MEAN)
    std = processor.get("image_std") or (OPENAI_CLIP_STD if clip_like else IMAGENET_STANDARD_STD)
    size = getattr(vision, "image_size", None) or _processor_size(processor)
    return {"image_size": int(size if isinstance(size, int) else size[0]), "image_mean": tuple(map(float, mean)),
            "image_std": tuple(map(float, std)), "num_channels": int(getattr(vision, "num_channels", 3))}


def _processor_size(processor: dict) -> int:
    """The square input an image processor makes: its crop when it crops, else its size."""
    size = processor.get("crop_size") if processor.get("do_center_crop") else processor.get("size")
    if isinstance(size, dict):
        return int(size.get("height") or size.get("shortest_edge") or 0)
    return int(size or 0)


def load(name: str, kind: str, o: HFOptions, revision: str | None = None, short: str | None = None) -> Backbone:
    """The pre-trained backbone `name` (at `revision`; `short`: the registered name it goes by)."""
    kwargs = {} if o.dtype == "float32" else {"dtype": getattr(torch, o.dtype)}
    label = short or "the Hugging Face model"
    if kind == "clip":
        return _load_clip(name, o, revision, short, kwargs)
    if o.num_labels and kind != "causal-lm":
        kwargs.update(num_labels=o.num_labels, ignore_mismatched_sizes=True)
    net = _from_pretrained(_auto_classes()[kind], name, revision, label, **kwargs).eval()
    tokenizer = tokenizer_for(name, revision) if kind != "image-classification" else None
    pad = tokenizer.pad_token_id if tokenizer is not None else None
    if tokenizer is not None and getattr(net.config, "pad_token_id", None) is None:
        net.config.pad_token_id = pad    # sequence classifiers find each row's last token by it

    # module-level functions (bound with partial), not closures: a run's checkpoint pickles the model with them
    image = {}
    if kind == "causal-lm":
        logits, features = _lm_logits, _lm_features
    elif kind == "sequence-classification":
        logits, features = functools.partial(_seq_logits, pad=pad), functools.partial(_seq_features, pad=pad)
    else:
        logits, features = _image_logits, _image_features
        image = image_fields(name, net.config, revision)
    heads = tuple(sorted({n.split(".")[0] for n in linear_modules(net) if _is_head(n)})) or ("classifier",)
    return Backbone(name=short or f"{PREFIX}{name}", net=net, kind=kind, default_targets=default_target_patterns(net),
                    hidden_size=_hidden_size(net.config), num_labels=getattr(net.config, "num_labels", 0),
                    features=features, logits=logits, head_modules=heads, tokenizer=tokenizer,
                    info={"source": "hugging-face", "name": name, "revision": resolved_revision(name, revision)},
                    **image)


def _clip_text(name: str, revision: str | None, dtype: str):
    """The text side of a CLIP checkpoint (text_model, text_projection, tokenizer), loaded again after a
    checkpoint was unpickled (clip.PromptEncoder)."""
    kwargs = {} if dtype == "float32" else {"dtype": getattr(torch, dtype)}
    model = _from_pretrained(_clip_class(auto_config(name, revision)), name, revision, "the CLIP model", **kwargs)
    return model.text_model, model.text_projection, tokenizer_for(name, revision)


def _load_clip(name: str, o: HFOptions, revision: str | None, short: str | None, kwargs: dict) -> Backbone:
    from transformers import AutoConfig  # deferred: loads transformers' model code

    label = short or "the CLIP model"
    config = _from_pretrained(AutoConfig, name, revision, label)     # which class: whole model or vision tower
    model = _from_pretrained(_clip_class(config), name, revision, label, **kwargs).eval()
    tower, text, text_projection, scale = clip.split(model)
    prompts = None
    if text is not None:
        prompts = clip.PromptEncoder(text, text_projection, tokenizer_for(name, revision),
                                     functools.partial(_clip_text, name, revision, o.dtype))
    return Backbone(name=short or f"{PREFIX}{name}", net=tower, kind="clip", default_targets=list(clip.CLIP_TARGETS),
                    hidden_size=clip.embedding_size(config), num_labels=0, features=clip.features,
                    logits=clip.logits, head_modules=("visual_projection",) if tower.visual_projection else (),
                    info={"source": "hugging-face", "name": name, "revision": resolved_revision(name, revision)},
                    prompt_embeddings=prompts, logit_scale=scale, **image_fields(name, config, revision))


# How each kind of model gives logits and the features a new head reads.
def _lm_logits(net, x):
    # right padding and a causal mask: no real token attends to a pad, so no attention mask
    # (which also keeps an EOS used as pad visible where it ends an answer)
    return net(input_ids=x).logits


def _lm_features(net, x):
    return net(input_ids=x, output_hidden_states=True).hidden_states[-1]


def _seq_logits(net, x, pad):
    return net(input_ids=x, attention_mask=(x != pad).long()).logits


def _seq_features(net, x, pad):   # mean of the last hidden states over the real tokens
    mask = (x != pad).unsqueeze(-1).to(torch.float32)
    h = net(input_ids=x, attention_mask=mask[..., 0].long(), output_hidden_states=True).hidden_states[-1]
    return (h * mask).sum(1) / mask.sum(1).clamp(min=1)


def _image_logits(net, x):
    return net(pixel_values=x).logits


def _image_features(net, x):
    """What the pre-trained head reads: a ViT's [CLS] token after the final layer norm (transformers'
    modeling_vit.py ViTForImageClassification.forward: classifier(outputs.last_hidden_state[:, 0, :]), and
    ViTModel.forward's last_hidden_state is layernorm(encoder output)), or the pooled output of a model with
    a pooler (ConvNeXt, ResNet, Swin, BEiT's mean pooling)."""
    out = net.base_model(pixel_values=x)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled.flatten(1)
    return out.last_hidden_state[:, 0]
