"""Pre-trained image backbones through the hf: path, with tiny random-init stand-ins saved here (no download):
a ViT image classifier and a CLIP model with its tokenizer. Their input fields, the features a new head reads,
CLIP's zero-shot heads from prompts, heads started from a given weight, LoRA on them against PEFT's, the model
kind read from a config, and the pinned short names (vit-b16-in21k, clip-vit-b16) offline."""

from __future__ import annotations

import copy
import io
import json
import math
import string

import pytest
import torch

from cldash.backbones import BACKBONES, get_backbone, match_targets, task_model
from cldash.backbones.hf import HFOptions, model_kind
from cldash.core.errors import ConfigError

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]


def _clip_tokenizer(folder):
    """A CLIP tokenizer over single letters (every word is spelled out; no merges), written to `folder`."""
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase) + ["."]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """vit: a tiny ViTForImageClassification (16 px, patch 4, width 32, 2 layers, 5 classes) with a
    preprocessor_config.json; vit-bare: the same without one; clip: a tiny CLIPModel with its tokenizer."""
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTForImageClassification

    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=64, num_labels=5))
    for name in ("vit", "vit-bare"):
        vit.save_pretrained(root / name)
    (root / "vit" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "do_normalize": True, "image_mean": MEAN, "image_std": STD,
         "size": {"height": 16, "width": 16}}))
    tok = _clip_tokenizer(root / "vocab")
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                vocab_size=len(tok), max_position_embeddings=32, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=16,
                  patch_size=4)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).save_pretrained(root / "clip")
    tok.save_pretrained(root / "clip")
    return root


def _load(folder):
    return get_backbone(f"hf:{folder}").load(HFOptions())


def test_an_hf_vit_has_its_image_fields_and_a_new_head_reads_what_its_classifier_reads(models):
    b = _load(models / "vit")
    assert (b.kind, b.image_size, b.num_channels, b.hidden_size) == ("image-classification", 16, 3, 32)
    assert b.image_mean == tuple(MEAN) and b.image_std == tuple(STD)
    assert b.info["revision"] == "local" and b.prompt_embeddings is None and b.logit_scale == 1.0
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        feats = b.features(b.net, x)
        # the [CLS] token after the final layer norm: the pre-trained classifier's own input
        torch.testing.assert_close(b.net.classifier(feats), b.logits(b.net, x), rtol=0, atol=1e-6)
        before_norm = b.net(pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 0]
    assert (feats - before_norm).abs().max() > 0.1
    bare = _load(models / "vit-bare")
    assert bare.image_mean == bare.image_std == (0.5, 0.5, 0.5) and bare.image_size == 16   # ViT's defaults


def test_a_pooled_image_model_gives_a_new_head_its_classifiers_input(tmp_path):
    """A convolutional classifier's head reads the pooled, normalised last feature map (ConvNeXt's pooler)."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(0)
    ConvNextForImageClassification(ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3,
                                                  image_size=32)).save_pretrained(tmp_path / "convnext")
    b = _load(tmp_path / "convnext")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = b.features(b.net, x)
        assert feats.shape == (2, b.hidden_size) == (2, 16)
        torch.testing.assert_close(b.net.classifier(feats), b.logits(b.net, x), rtol=0, atol=1e-6)
    assert b.image_size == 32 and b.image_mean == (0.5, 0.5, 0.5)


def test_vit_tiny_says_its_input_is_the_digits_normalisation():
    from cldash.streams.digits import normalize

    b = BACKBONES["vit-tiny"].load(BACKBONES["vit-tiny"].Options())
    assert (b.image_size, b.num_channels, b.image_mean, b.image_std) == (8, 1, (0.5,), (0.5,))
    x = torch.rand(2, 8, 8)
    torch.testing.assert_close(normalize(x), ((x - 0.5) / 0.5).unsqueeze(1))


def test_clip_loads_with_zero_shot_heads_that_give_clips_own_logits(models):
    from transformers import CLIPModel

    entry = get_backbone(f"hf:{models / 'clip'}")
    chosen = match_targets(entry.build_net(HFOptions()), list(entry.default_targets))
    assert entry.kind == "clip" and len(chosen) == 2 * 6 and all(n.startswith("vision_model.") for n in chosen)
    b = entry.load(HFOptions())
    ref = CLIPModel.from_pretrained(models / "clip").eval()
    assert (b.kind, b.hidden_size, b.num_labels, b.image_size, b.num_channels) == ("clip", 24, 0, 16, 3)
    assert b.logit_scale == pytest.approx(math.exp(2.6592), rel=1e-6)   # CLIPConfig's logit_scale_init_value
    assert b.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))   # OpenAI CLIP's, no processor file
    assert not any("text" in n for n, _ in b.net.named_parameters())    # the text tower is never adapted
    prompts = ["a photo of a cat.", "a photo of a dog.", "a bird."]
    emb = b.prompt_embeddings(prompts)
    assert emb.shape == (3, 24) and not emb.requires_grad
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    model = task_model(b, {"zero-shot": 3}, head_init={"zero-shot": (b.logit_scale * emb, False)})
    x = torch.randn(4, 3, 16, 16)
    tokens = b.prompt_embeddings.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(x, head="zero-shot")
        theirs = ref(pixel_values=x, **tokens).logits_per_image        # (images, prompts)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no classifier of its own"):
        model(x)


def test_head_init_copies_the_weight_zeroes_the_bias_and_freezes_unless_trainable(models):
    b = _load(models / "vit")
    w = torch.randn(4, 32)
    model = task_model(b, {"frozen": 4, "trained": 4, "fresh": 4},
                       head_init={"frozen": (w, False), "trained": (2 * w, True)})
    frozen, trained = model.heads["frozen"], model.heads["trained"]
    assert torch.equal(frozen.weight, w) and torch.equal(trained.weight, 2 * w)
    assert frozen.bias.abs().sum() == 0 and trained.bias.abs().sum() == 0
    assert not frozen.weight.requires_grad and not frozen.bias.requires_grad
    assert trained.weight.requires_grad and model.heads["fresh"].weight.requires_grad
    assert model.heads["fresh"].bias.abs().sum() > 0                   # nn.Linear's own init
    with pytest.raises(ValueError, match=r"needs \(4, 32\)"):
        task_model(b, {"h": 4}, head_init={"h": (torch.zeros(4, 31), False)})
    # every head is made as nn.Linear makes it first: the global generator moves the same with an initial weight
    torch.manual_seed(3)
    task_model(b, {"h": 4})
    after_plain = torch.randn(1)
    torch.manual_seed(3)
    task_model(b, {"h": 4}, head_init={"h": (w, False)})
    assert torch.equal(torch.randn(1), after_plain)


def test_a_checkpoint_does_not_carry_clips_text_tower_and_the_prompts_still_embed_after(models):
    b = _load(models / "clip")
    prompts = ["a cat.", "a dog."]
    before = b.prompt_embeddings(prompts)
    text_bytes = sum(p.numel() * p.element_size() for p in b.prompt_embeddings.text_model.parameters())
    buf = io.BytesIO()
    torch.save(task_model(b, {"h": 2}), buf)
    bare = io.BytesIO()
    torch.save(b.net, bare)
    assert buf.tell() - bare.tell() < text_bytes / 4          # the text tower is not in the pickle
    buf.seek(0)
    restored = torch.load(buf, weights_only=False)
    assert restored.backbone.prompt_embeddings.text_model is None
    torch.testing.assert_close(restored.backbone.prompt_embeddings(prompts), before, rtol=0, atol=0)


# -- our LoRA against PEFT's on the loaded networks (as tests/methods/test_lora_peft_parity.py)

def _lora_pair(net, targets, rank=4, alpha=8):
    peft = pytest.importorskip("peft")
    from cldash.core.options import build
    from cldash.methods import get_method
    from cldash.methods.base import TaskContext

    net.eval()
    theirs = peft.get_peft_model(copy.deepcopy(net), peft.LoraConfig(r=rank, lora_alpha=alpha,
                                                                      target_modules=targets, lora_dropout=0.0))
    lora = get_method("lora")
    method = lora(build(lora.Config, {"rank": rank, "alpha": alpha}, "lora"), policy="single")
    ours = copy.deepcopy(net)
    method.attach(ours, match_targets(ours, targets))
    method.before_task(TaskContext(1, 1, "t", 1, ours, None, None, torch.Generator().manual_seed(0),
                                   torch.device("cpu")))
    g = torch.Generator().manual_seed(1)
    for name, layer in method.layers.items():
        mod = theirs.base_model.model.get_submodule(name)
        mod.lora_B["default"].weight.data = torch.randn(mod.lora_B["default"].weight.shape, generator=g) * 0.1
        layer.branches[0].lora_A.data.copy_(mod.lora_A["default"].weight.data)
        layer.branches[0].lora_B.data.copy_(mod.lora_B["default"].weight.data)
    return ours, method, theirs


@pytest.mark.parametrize("model,targets,adapted", [("vit", ["q_proj", "v_proj"], 4),
                                                   ("clip", ["q_proj", "v_proj"], 4)])
def test_lora_on_a_loaded_image_backbone_matches_peft(models, model, targets, adapted):
    b = _load(models / model)
    ours, method, theirs = _lora_pair(b.net, targets)
    assert len(method.layers) == adapted
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        mine, peft_out = b.features(ours, x), b.features(theirs.base_model.model, x)
        assert (mine - b.features(b.net, x)).abs().max() > 1e-3     # the update is visible
        torch.testing.assert_close(mine, peft_out, rtol=0, atol=1e-6)
        for name, layer in method.layers.items():
            delta = theirs.base_model.model.get_submodule(name).get_delta_weight("default")
            torch.testing.assert_close(layer.branches[0].delta_weight(layer), delta, rtol=1e-6, atol=1e-7)


# -- the model kind from the config

def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "[CLS]", "[SEP]", "good", "bad"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


@pytest.mark.parametrize("architectures", [["BertForMaskedLM"], ["BertModel"], None])
def test_a_bert_checkpoint_is_a_text_classifier_with_a_classification_head(tmp_path, architectures):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=6, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, architectures=architectures)
    torch.manual_seed(0)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "bert")
    _word_tokenizer().save_pretrained(tmp_path / "bert")
    if architectures is None:      # save_pretrained writes the class's name; a config without any says nothing
        path = tmp_path / "bert" / "config.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "architectures"}))
    entry = get_backbone(f"hf:{tmp_path / 'bert'}")
    assert entry.kind == "sequence-classification"
    net = entry.build_net(HFOptions(num_labels=3))
    assert type(net).__name__ == "BertForSequenceClassification" and tuple(net.classifier.weight.shape) == (3, 16)
    assert "classifier" not in "".join(match_targets(net, list(entry.default_targets)))
    b = entry.load(HFOptions(num_labels=3))
    ids = b.tokenizer(["good bad", "bad"], padding=True, return_tensors="pt")["input_ids"]
    assert b.logits(b.net, ids).shape == (2, 3) and b.features(b.net, ids).shape == (2, 16)


def test_gpt2_vit_and_clip_configs_keep_their_kinds():
    from transformers import BertConfig, CLIPConfig, CLIPVisionConfig, GPT2Config, ViTConfig

    assert model_kind(GPT2Config()) == "causal-lm"
    assert model_kind(GPT2Config(architectures=["GPT2ForSequenceClassification"])) == "sequence-classification"
    assert model_kind(BertConfig(is_decoder=True)) == "causal-lm"        # a BERT made a decoder says so
    assert model_kind(ViTConfig()) == model_kind(ViTConfig(architectures=["ViTModel"])) == "image-classification"
    assert model_kind(CLIPConfig()) == model_kind(CLIPVisionConfig()) == "clip"


# -- the pinned short names, offline (conftest.no_network: every name lookup fails and is counted)

def test_the_short_names_resolve_and_match_targets_without_a_download(no_network):
    from cldash.config import check_against_model, resolve

    for name, kind, first in (("vit-b16-in21k", "image-classification", "vit.layers.0.attention.q_proj"),
                              ("clip-vit-b16", "clip", "vision_model.encoder.layers.0.self_attn.k_proj")):
        entry = BACKBONES[name]
        net = entry.build_net(HFOptions())
        assert entry.kind == kind and next(net.parameters()).device.type == "meta"
        chosen = match_targets(net, list(entry.default_targets))
        assert len(chosen) == 12 * 6 and chosen[0] == first            # q, k, v, o, fc1, fc2 of 12 blocks
        assert 85_000_000 < sum(p.numel() for p in net.parameters()) < 87_000_000   # ViT-B/16's 86M
    shapes = check_against_model(resolve({"method": "inflora", "preset": "paper", "backbone": "vit-b16-in21k",
                                          "stream": "digits-rotate"}))
    assert len(shapes) == 24 and all(n.endswith(("k_proj", "v_proj")) for n in shapes)   # InfLoRA's k and v
    assert set(shapes.values()) == {(768, 768)}
    assert no_network == []


@pytest.mark.parametrize("name,repo", [("vit-b16-in21k", "google/vit-base-patch16-224-in21k"),
                                       ("clip-vit-b16", "openai/clip-vit-base-patch16")])
def test_loading_a_short_name_offline_is_one_sentence(no_network, tmp_path, monkeypatch, name, repo):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError) as err:
        BACKBONES[name].load(HFOptions())
    msg = str(err.value)
    assert msg.startswith(f"cannot load the weights of {name} {repo!r}: it is not a local model folder and not in "
                          "the local Hugging Face cache, and cldash cannot reach the Hugging Face Hub")
    assert "\n" not in msg and msg.endswith(".") and err.value.field == "backbone"
    assert len(no_network) <= 1                                         # the probe's lookup at most


@pytest.mark.parametrize("name,model", [("vit-b16-in21k", "vit"), ("clip-vit-b16", "clip")])
def test_a_pinned_name_loads_from_the_cache_at_its_commit_and_records_it(models, no_network, tmp_path, monkeypatch,
                                                                           name, model):
    """The tiny stand-in placed in a Hugging Face cache where the pinned commit's snapshot would be: loaded
    offline through the pinned path, the run records that commit."""
    import shutil

    import huggingface_hub.constants

    from cldash.backbones.pretrained import PINNED, missing_weights

    pinned = PINNED[name]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    folder = tmp_path / f"models--{pinned.repo.replace('/', '--')}"
    assert "cannot reach the Hugging Face Hub" in missing_weights(name)
    shutil.copytree(models / model, folder / "snapshots" / pinned.revision)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(pinned.revision)
    assert missing_weights(name) is None
    b = BACKBONES[name].load(HFOptions())
    assert b.name == name and b.info["revision"] == pinned.revision and b.info["name"] == pinned.repo
    assert b.default_targets == list(pinned.targets) and b.image_size == 16
    if name == "clip-vit-b16":
        assert b.prompt_embeddings(["a cat."]).shape == (1, 24)
    else:
        assert b.image_mean == tuple(MEAN)
    assert len(no_network) <= 1
