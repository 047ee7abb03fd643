"""LoRA-family adapters exported in PEFT's format load back into PEFT with the same outputs.

Each case trains on the tiny ViT of the battery, exports (adapter_model.safetensors +
adapter_config.json), loads the folder with ``peft.PeftModel.from_pretrained`` onto a fresh copy
of the *pre-trained* model and compares outputs. Also: the form chosen (native, rank 2r, or the
cumulative update), Conv1D layers, dense updates refused with a sentence, and the CLI path
(`cldash export RUN --format peft`) from a finished run's saved adapters.
"""

import json
from pathlib import Path

import pytest
import torch

peft = pytest.importorskip("peft")

from cldash.backbones.vit import ViTTinyOptions, build_net  # noqa: E402
from cldash.core.errors import UserError  # noqa: E402
from cldash.methods.peft_format import peft_adapter, save_peft  # noqa: E402

from test_methods_battery import Case, make, probe, task_context, train, two_tasks  # noqa: E402


def one_task(case):
    net, method = make(case)
    net.train()
    ctx = task_context(net, 1, 90.0)
    method.before_task(ctx)
    train(net, method, ctx)
    return net, method


def pretrained():
    torch.manual_seed(0)
    return build_net(ViTTinyOptions())


def load_and_compare(net, method, tmp_path):
    folder = save_peft(method, tmp_path / "adapter")
    theirs = peft.PeftModel.from_pretrained(pretrained(), str(folder))
    net.eval()
    theirs.eval()
    x = probe()
    with torch.no_grad():
        torch.testing.assert_close(theirs(pixel_values=x).logits, net(pixel_values=x).logits, rtol=1e-4, atol=2e-5)
    return json.loads((folder / "adapter_config.json").read_text())


@pytest.mark.parametrize("case,tasks,form", [
    (Case("lora", {}, "single"), 2, "native"),
    (Case("lora", {"rslora": True, "rank": 4}, "single"), 1, "native"),
    (Case("lora", {}, "merge"), 2, "cumulative"),
    (Case("lora", {"rank": 4}, "stack"), 2, "cumulative"),
    (Case("pissa", {}, "merge"), 1, "2r"),
    (Case("pissa", {"rslora": True, "alpha": 4}, "merge"), 1, "2r"),
    (Case("pissa", {}, "merge"), 2, "cumulative"),
    (Case("loraga", {}, "merge"), 1, "2r"),
    (Case("dora", {}, "single"), 2, "native"),
    (Case("dora", {"rslora": True}, "single"), 1, "native"),
    (Case("adalora", {}, "merge"), 2, "cumulative"),
    (Case("wegeft", {}, "merge"), 2, "cumulative"),
    (Case("loretta", {}, "stack"), 2, "cumulative"),
], ids=lambda v: v.id if isinstance(v, Case) else str(v))
def test_export_loads_into_peft_with_the_same_outputs(case, tasks, form, tmp_path):
    net, method = one_task(case) if tasks == 1 else two_tasks(case)
    cfg = load_and_compare(net, method, tmp_path)
    c = method.config
    if form == "native":
        assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == (c.rank, c.alpha, c.rslora)
        assert cfg["use_dora"] == (case.method == "dora")
    elif form == "2r":   # PEFT's conversion of a base-rewriting init: rank 2r, same scaling
        assert cfg["r"] == 2 * c.rank
        assert cfg["lora_alpha"] == pytest.approx(c.alpha * (2 ** 0.5 if c.rslora else 2))
    else:                 # the cumulative update against W0 with the scaling folded in
        assert cfg["lora_alpha"] == cfg["r"] and not cfg["use_rslora"]
    assert sorted(cfg["target_modules"]) == sorted(method.layers)


def test_conv1d_layers_export_with_fan_in_fan_out(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from cldash.backbones import match_targets
    from cldash.core.options import build
    from cldash.methods import TaskContext, get_method

    def gpt2():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=40, n_positions=16,
                                          bos_token_id=0, eos_token_id=0))

    for name in ("lora", "pissa"):
        net = gpt2()
        cls = get_method(name)
        method = cls(build(cls.Config, {"rank": 4}, name), policy=cls.policies[0])
        method.attach(net, match_targets(net, ["c_attn", "c_proj", "c_fc"]))
        method.before_task(TaskContext(1, 1, "t", 1, net, None, None, torch.Generator().manual_seed(0),
                                       torch.device("cpu")))
        with torch.no_grad():   # training-like change of every adapter
            for p in method.trainable_parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        folder = save_peft(method, tmp_path / name)
        assert json.loads((folder / "adapter_config.json").read_text())["fan_in_fan_out"] is True
        theirs = peft.PeftModel.from_pretrained(gpt2(), str(folder))
        x = torch.randint(0, 40, (3, 10))
        net.eval()
        theirs.eval()
        with torch.no_grad():
            torch.testing.assert_close(theirs(x).logits, net(x).logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", [Case("full", {}, None), Case("dora", {}, "merge")], ids=lambda c: c.id)
def test_dense_updates_are_refused_with_a_sentence(case):
    _, method = two_tasks(case)
    with pytest.raises(UserError, match="(dense|full-rank)") as err:
        peft_adapter(method)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_cli_exports_a_finished_run_and_delete_removes_its_adapters(tmp_path, capsys):
    from cldash.cli import main
    from cldash.engine.adapters import load_adapted_model
    from cldash.store import Store
    from cldash.streams.digits import digits_splits, normalize

    db = str(tmp_path / "runs.db")
    assert main(["--db", db, "run", "--method", "pissa", "--steps-per-task", "8", "--stream-angles", "60,120",
                 "--eval-interval", "0", "--quiet"]) == 0
    store = Store(db)
    saved = Path(store.artifacts(1).adapter_file(1))
    assert saved.exists() and saved.parent.name == "runs.adapters"   # the default: next to the SQLite file
    capsys.readouterr()
    assert main(["--db", db, "export", "1", "--format", "peft", "--out", str(tmp_path / "adapter")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "adapter")
    resolved, stream, model, method = load_adapted_model(store, 1)
    fresh = resolved.backbone.load(resolved.backbone_options)
    theirs = peft.PeftModel.from_pretrained(fresh.net, str(tmp_path / "adapter")).eval()
    x = normalize(digits_splits()[1].x[:128])
    with torch.no_grad():
        torch.testing.assert_close(theirs(pixel_values=x).logits, model.net(pixel_values=x).logits,
                                   rtol=1e-4, atol=2e-5)
    # the reloaded model reproduces the run's final accuracy on its last task
    assert stream.evaluate(model, stream.tasks[-1], 1024)["accuracy"] == store.accuracy_matrix(1)["R"][-1][-1]
    assert main(["--db", db, "export", "1", "--format", "peft", "--out", "-"]) == 2
    assert main(["--db", db, "delete", "1", "--yes"]) == 0
    assert not saved.exists()
    assert main(["--db", db, "export", "1", "--format", "peft", "--out", str(tmp_path / "again")]) == 2


@pytest.mark.parametrize("args", [["--method", "lora", "--stream", "digits-split"],
                                  ["--method", "adalora", "--train-head", "true"]], ids=["new-head", "train-head"])
def test_a_finished_run_reloads_with_its_trained_heads(tmp_path, args):
    """The saved state holds the heads that trained, so the rebuilt model scores what the run scored."""
    from cldash.cli import main
    from cldash.engine.adapters import load_adapted_model
    from cldash.store import Store

    db = str(tmp_path / "runs.db")
    assert main(["--db", db, "run", *args, "--steps-per-task", "6", "--eval-interval", "0", "--quiet"]) == 0
    store = Store(db)
    _, stream, model, _ = load_adapted_model(store, 1)
    R = store.accuracy_matrix(1)["R"]
    for j, task in enumerate(stream.tasks):
        scores = stream.evaluate(model, task, 1024)
        assert scores[stream.primary_metric] == R[-1][j], (j, scores, R[-1])
