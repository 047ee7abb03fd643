"""Any Hugging Face model as a backbone: ``--backbone hf:NAME_OR_PATH``.

NAME_OR_PATH is a local folder written by ``save_pretrained`` or a Hub name (downloaded once by
transformers when there is internet, then read from its cache; without network, or with HF_HUB_OFFLINE
set, only the cache is read, so a name that is not there is one sentence at once: cldash.core.hub). What the
model is follows its config's ``architectures``: ``*ForCausalLM`` / ``*LMHeadModel`` -> a causal language
model (the `hf:` language streams), ``*ForSequenceClassification`` -> a text classifier, and
``*ForImageClassification`` -> an image classifier. Remote code is never run
(``trust_remote_code=False``): a model that needs it is refused with one sentence.

Target modules are found by name patterns on a weightless copy of the network (built on the
``meta`` device from the config, so checking a configuration never loads a 7B model's weights).
The default targets are every linear module but the head (``lm_head``, ``classifier``, ``score``...),
written as the patterns of their last names (``q_proj|k_proj|...``, as PEFT's ``all-linear``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch
from torch import nn

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


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


@functools.lru_cache(maxsize=32)
def auto_config(name: str):
    """The model's transformers config, or one sentence saying why it cannot be had."""
    from transformers import AutoConfig  # deferred: loads transformers' model code

    try:
        with hub.cache_only_unless_reachable(name) as offline:
            return AutoConfig.from_pretrained(name, trust_remote_code=False)
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
        todo = "unset it to download the model" if offline.startswith("HF_HUB_OFFLINE") else \
            "download it once with internet"
        raise ConfigError(f"cannot load the Hugging Face model {name!r}: it is not a local model folder and not in "
                          f"the local Hugging Face cache, and {offline} ({todo}, or give the path of a folder "
                          "written by save_pretrained).", "backbone") from None


def model_kind(config) -> str:
    for arch in getattr(config, "architectures", None) or []:
        for kind, suffixes in KINDS.items():
            if arch.endswith(suffixes):
                return kind
    from transformers.models.auto.modeling_auto import (  # deferred: the Auto classes' tables are large
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    if config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image-classification"
    return "sequence-classification"


def _is_head(name: str) -> bool:
    return any(part in HEAD_NAMES for part in name.split("."))


def _meta_net(name: str, kind: str, num_labels: int = 0) -> nn.Module:
    config = auto_config(name)
    if num_labels and kind != "causal-lm":
        config = type(config).from_dict({**config.to_dict(), "num_labels": num_labels})
    with torch.device("meta"):
        return _auto_classes()[kind].from_config(config, trust_remote_code=False)


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


def tokenizer_for(name: str):
    from transformers import AutoTokenizer  # deferred: loads transformers' model code

    try:
        with hub.cache_only_unless_reachable(name):
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
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
    targets = default_target_patterns(_meta_net(name, kind))
    if not targets:
        raise ConfigError(f"the Hugging Face model {name!r} has no linear module outside its head to adapt.",
                          "backbone")
    return BackboneEntry(spec, f"Hugging Face {name} ({kind})", kind, HFOptions,
                         functools.partial(build_net, name, kind), functools.partial(load, name, kind),
                         tuple(targets))


def build_net(name: str, kind: str, o: HFOptions) -> nn.Module:
    """The network without weights (meta device): enough to match targets and check ranks."""
    return _meta_net(name, kind, o.num_labels)


def load(name: str, kind: str, o: HFOptions) -> Backbone:
    cls = _auto_classes()[kind]
    kwargs = {"trust_remote_code": False}
    if o.dtype != "float32":
        kwargs["dtype"] = getattr(torch, o.dtype)
    if o.num_labels and kind != "causal-lm":
        kwargs.update(num_labels=o.num_labels, ignore_mismatched_sizes=True)
    try:
        with hub.cache_only_unless_reachable(name):
            net = cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the weights of the Hugging Face model {name!r}: "
                          f"{str(exc).splitlines()[0].rstrip('.')}.", "backbone") from None
    net.eval()
    tokenizer = tokenizer_for(name) if kind != "image-classification" else None
    pad = tokenizer.pad_token_id if tokenizer is not None else None
    if tokenizer is not None and getattr(net.config, "pad_token_id", None) is None:
        net.config.pad_token_id = pad    # sequence classifiers find each row's last token by it

    # module-level functions (bound with partial), not closures: a run's checkpoint pickles the model with them
    if kind == "causal-lm":
        logits, features = _lm_logits, _lm_features
    elif kind == "sequence-classification":
        logits, features = functools.partial(_seq_logits, pad=pad), functools.partial(_seq_features, pad=pad)
    else:
        logits, features = _image_logits, _image_features
    heads = tuple(sorted({n.split(".")[0] for n in linear_modules(net) if _is_head(n)})) or ("classifier",)
    return Backbone(name=f"{PREFIX}{name}", net=net, kind=kind, default_targets=default_target_patterns(net),
                    hidden_size=_hidden_size(net.config), num_labels=getattr(net.config, "num_labels", 0),
                    features=features, logits=logits, head_modules=heads, tokenizer=tokenizer,
                    info={"source": "hugging-face", "name": name})


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


def _image_features(net, x):   # a ViT's [CLS] token, or a convolutional net's pooled last feature map
    h = net(pixel_values=x, output_hidden_states=True).hidden_states[-1]
    return h.flatten(2).mean(-1) if h.dim() == 4 else h[:, 0]
