"""The Hugging Face path with tiny models, tokenizers and data sets built here (no download):
``--backbone hf:PATH`` and ``--stream hf:FILES`` through the CLI, target patterns, and one sentence
for what cannot be loaded."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pandas as pd
import pytest

from cldash.cli import main
from cldash.store import Store

WORDS = [str(d) for d in range(10)] + ["succ", "pred", "good", "bad", "fine", "awful", "movie", "day", "it", "was"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny GPT-2 language model and a tiny GPT-2 sequence classifier, each saved with a word-level
    tokenizer; two prompt/answer CSV files, one JSON-lines classification file with a task column."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("hf")
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=2, n_head=2, pad_token_id=0)
    GPT2LMHeadModel(GPT2Config(**cfg)).save_pretrained(root / "lm")
    GPT2ForSequenceClassification(GPT2Config(**cfg, num_labels=2)).save_pretrained(root / "cls")
    for name in ("lm", "cls"):
        tok.save_pretrained(root / name)
    rng = random.Random(0)
    for op, shift in (("succ", 1), ("pred", -1)):
        rows = [(f"{op} {d}", str((d + shift) % 10)) for d in (rng.randrange(10) for _ in range(200))]
        pd.DataFrame(rows, columns=["prompt", "answer"]).to_csv(root / f"{op}.csv", index=False)
    with open(root / "reviews.jsonl", "w") as fh:
        for i in range(240):
            task = "movies" if i % 2 else "days"
            good = rng.random() < 0.5
            word = rng.choice(["good", "fine"] if good else ["bad", "awful"])
            fh.write(json.dumps({"review": f"it was {word} {'movie' if task == 'movies' else 'day'}",
                                 "sentiment": "pos" if good else "neg", "domain": task}) + "\n")
    return root


def test_default_targets_are_every_linear_but_the_head(hf_dir):
    from cldash.backbones import get_backbone, linear_modules, match_targets

    lm = get_backbone(f"hf:{hf_dir / 'lm'}")
    assert lm.kind == "causal-lm" and lm.default_targets == ("c_attn|c_fc|c_proj",)
    cls = get_backbone(f"hf:{hf_dir / 'cls'}")
    assert cls.kind == "sequence-classification"
    from cldash.backbones.hf import HFOptions

    net = cls.build_net(HFOptions())
    assert next(net.parameters()).device.type == "meta"      # no weights loaded to check a configuration
    chosen = match_targets(net, list(cls.default_targets))
    assert len(chosen) == 8 and "score" in linear_modules(net) and "score" not in chosen


@pytest.mark.floors
def test_loading_an_hf_model_prints_none_of_transformers_load_report_or_progress_bars(hf_dir, capfd):
    """A classifier with a new number of labels: transformers reports the resized head and draws a progress bar
    while it loads the weights; none of that reaches a run's output, and transformers' settings come back.
    (transformers' log handler holds the stderr of the moment it was made, so its records are read here.)"""
    import logging

    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from cldash.backbones import hf

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    records = Records()
    hf_logging.get_logger("transformers").addHandler(records)
    try:
        AutoModelForSequenceClassification.from_pretrained(hf_dir / "cls", num_labels=3, ignore_mismatched_sizes=True)
        plain, plain_log = capfd.readouterr(), list(records.messages)
        records.messages.clear()
        before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        backbone = hf.load(str(hf_dir / "cls"), "sequence-classification", hf.HFOptions(num_labels=3))
        quiet, quiet_log = capfd.readouterr(), records.messages
    finally:
        hf_logging.get_logger("transformers").removeHandler(records)
    # the noise this test is about, from transformers itself
    assert "Loading weights" in plain.err and any("LOAD REPORT" in m for m in plain_log)
    assert backbone.num_labels == 3
    assert quiet == ("", "") and quiet_log == []
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_cli_run_on_local_files_with_a_local_causal_lm(hf_dir, tmp_path, method, capsys):
    db = str(tmp_path / "runs.db")
    stream = f"hf:{hf_dir / 'succ.csv'},{hf_dir / 'pred.csv'}"
    args = ["--db", db, "run", "--method", method, "--backbone", f"hf:{hf_dir / 'lm'}", "--stream", stream,
            "--steps-per-task", "80", "--batch-size", "32", "--eval-interval", "0", "--spectra-interval", "40",
            "--dense-spectra-interval", "40", "--lr", "1e-2" if method == "lora" else "3e-3", "--quiet"]
    assert main(args) == 0
    assert "Accuracy matrix R[i][j] (exact_match)" in capsys.readouterr().out
    (run,) = Store(db).runs()
    m = Store(db).accuracy_matrix(run["id"])
    assert m["tasks"] == ["succ", "pred"] and m["R"].shape == (3, 2)
    # a random model knows neither task; each is learned (10 possible prompts: exact match can reach 1)
    assert m["R"][0].max() < 0.3 and m["R"][1, 0] > 0.8 and m["R"][2, 1] > 0.8, m["R"]
    assert run["config"]["targets"] == ["c_attn|c_fc|c_proj"]


@pytest.mark.slow
def test_cli_run_on_a_task_column_with_a_local_classifier_and_a_general_source(hf_dir, tmp_path):
    db = str(tmp_path / "runs.db")
    assert main(["--db", db, "run", "--method", "lora", "--backbone", f"hf:{hf_dir / 'cls'}",
                 "--stream", f"hf:{hf_dir / 'reviews.jsonl'}", "--stream-task-column", "domain",
                 "--stream-tasks", "movies,days", "--stream-text-column", "review", "--stream-label-column",
                 "sentiment", "--stream-general", str(hf_dir / "reviews.jsonl"), "--train-head", "true",
                 "--steps-per-task", "60", "--batch-size", "32", "--lr", "1e-2", "--eval-interval", "0",
                 "--spectra-interval", "0", "--dense-spectra-interval", "0", "--quiet"]) == 0
    (run,) = Store(db).runs()
    assert run["primary_metric"] == "accuracy"
    m = Store(db).accuracy_matrix(run["id"])
    assert m["tasks"] == ["movies", "days"] and list(m["general"]) == ["general: reviews"]
    assert np.isfinite(m["R"]).all() and m["R"][1, 0] > 0.9, m["R"]    # one word decides the label


def test_a_target_pattern_matching_nothing_lists_the_linear_modules(hf_dir, tmp_path, capsys):
    code = main(["--db", str(tmp_path / "r.db"), "run", "--method", "lora", "--backbone", f"hf:{hf_dir / 'lm'}",
                 "--stream", f"hf:{hf_dir / 'succ.csv'}", "--targets", "q_proj", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "target pattern 'q_proj' matches no linear module" in err
    assert "transformer.h.0.attn.c_attn" in err and "lm_head" in err and err.count("\n") == 1
    assert Store(str(tmp_path / "r.db")).runs() == []


def test_a_name_that_cannot_be_loaded_offline_is_one_sentence(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")       # as a machine without internet, without waiting for timeouts
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)   # read once at import
    code = main(["--db", str(tmp_path / "r.db"), "run", "--method", "lora", "--backbone",
                 "hf:cldash-test/no-such-model", "--stream", "skills", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot load the Hugging Face model 'cldash-test/no-such-model'")
    assert err.count("\n") == 1 and err.rstrip().endswith(".")


def test_bad_streams_are_one_sentence(hf_dir, tmp_path, capsys):
    base = ["--db", str(tmp_path / "r.db"), "run", "--method", "lora", "--quiet"]
    cases = [
        (["--backbone", f"hf:{hf_dir / 'lm'}", "--stream", f"hf:{tmp_path / 'missing.csv'}"], "does not exist"),
        (["--stream", f"hf:{hf_dir / 'succ.csv'}"], "needs a name or a path after 'hf:'"),
        (["--backbone", "vit-tiny", "--stream", f"hf:{hf_dir / 'succ.csv'}"],
         "needs a causal-lm or sequence-classification backbone"),
        (["--backbone", f"hf:{hf_dir / 'cls'}", "--stream", "skills"], "stream skills needs a causal-lm backbone"),
    ]
    for extra, phrase in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert phrase in err and err.count("\n") == 1, err


def test_wrong_columns_are_one_sentence_before_anything_is_stored(hf_dir, tmp_path, capsys):
    """Columns that do not fit the model are refused from the files' headers, by cldash run and cldash sweep:
    exit 2, one sentence naming the columns found and the ones needed, and no store created."""
    pd.DataFrame({"text": ["it was good"] * 4, "label": ["pos"] * 4}).to_csv(tmp_path / "reviews.csv", index=False)
    db = tmp_path / "r.db"
    lm, cls = f"hf:{hf_dir / 'lm'}", f"hf:{hf_dir / 'cls'}"
    cases = [
        (["run", "--method", "lora", "--backbone", lm, "--stream", f"hf:{tmp_path / 'reviews.csv'}", "--quiet"],
         "the data set reviews has the columns text, label, but a causal-lm model learns from the columns 'prompt' "
         "and 'answer': name the data's own with --stream-prompt-column and --stream-answer-column."),
        (["run", "--method", "lora", "--backbone", lm, "--stream", f"hf:{hf_dir / 'succ.csv'}",
          "--stream-prompt-column", "question", "--quiet"],
         "the data set succ has the columns prompt, answer, but a causal-lm model learns from the columns "
         "'question' and 'answer'"),
        (["run", "--method", "lora", "--backbone", cls, "--stream", f"hf:{hf_dir / 'reviews.jsonl'}", "--quiet"],
         "the data set reviews has the columns review, sentiment, domain, but a sequence-classification model "
         "learns from the columns 'text' and 'label'"),
        (["run", "--method", "lora", "--backbone", cls, "--stream", f"hf:{hf_dir / 'reviews.jsonl'}",
          "--stream-text-column", "review", "--stream-label-column", "sentiment", "--stream-task-column", "topic",
          "--quiet"], "the task column 'topic' is not in the data set reviews, whose columns are: review, "),
        (["sweep", "--methods", "lora,full", "--backbone", lm, "--stream", f"hf:{tmp_path / 'reviews.csv'}"],
         "the data set reviews has the columns text, label, but a causal-lm model learns from the columns"),
    ]
    for argv, phrase in cases:
        assert main(["--db", str(db), *argv]) == 2
        err = capsys.readouterr().err
        assert phrase in err and err.count("\n") == 1, err
        assert not db.exists()


def test_an_hf_model_keeps_only_the_latest_checkpoint_unless_told_otherwise(hf_dir):
    from cldash.config import resolve

    base = {"method": "lora", "backbone": f"hf:{hf_dir / 'lm'}", "stream": f"hf:{hf_dir / 'succ.csv'}"}
    assert resolve(base).config.checkpoints == "latest"
    assert resolve({**base, "checkpoints": "all"}).config.checkpoints == "all"


def test_the_launch_page_check_puts_wrong_columns_under_the_column_field(hf_dir, tmp_path):
    """The Launch page's check (cldash.config.check_fields) says it under the field of the first missing column."""
    from cldash.config import check_fields

    stream = f"hf:{hf_dir / 'succ.csv'}"
    errors = check_fields({"method": "lora", "stream": stream, "backbone": f"hf:{hf_dir / 'lm'}",
                           "stream_options": {"answer_column": "result"}})
    assert list(errors) == [f"{stream}.answer_column"]
    assert "has the columns prompt, answer" in str(errors[f"{stream}.answer_column"])
    assert check_fields({"method": "lora", "stream": stream, "backbone": f"hf:{hf_dir / 'lm'}"}) == {}


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_a_saved_data_set_without_the_datasets_package_says_how_to_install_it(hf_dir, tmp_path):
    from cldash.core.errors import ConfigError
    from cldash.streams.hf import HFStreamOptions, read_source

    (tmp_path / "saved").mkdir()
    with pytest.raises(ConfigError, match=r"pip install 'cldash\[hf\]'"):
        read_source(str(tmp_path / "saved"), HFStreamOptions())


def test_adversarial_order_on_an_hf_stream(hf_dir, tmp_path):
    db = str(tmp_path / "r.db")
    assert main(["--db", db, "order", "--stream", f"hf:{hf_dir / 'succ.csv'},{hf_dir / 'pred.csv'}",
                 "--backbone", f"hf:{hf_dir / 'lm'}", "--batches", "1", "--batch-size", "8"]) == 0
    (o,) = Store(db).orders()
    assert o["tasks"] == ["succ", "pred"] and sorted(o["ordered_options"]["tasks"]) == ["pred", "succ"]


def test_launch_page_launches_a_run_on_local_hf_files_and_model(hf_dir, tmp_path, monkeypatch):
    """The Launch page takes hf: data sets and an hf: model; a bad source is one sentence under its field."""
    from test_app import app, no_starts

    no_starts(monkeypatch)   # store the runs, start none
    db = tmp_path / "hf.db"
    at = app(db, monkeypatch, "pages/launch.py")
    at.selectbox(key="launch-stream").set_value("hf:").run()
    at.text_input(key="launch-hf-stream").set_value(str(hf_dir / "missing.csv")).run()
    at.button(key="launch-button").click().run()
    assert any("does not exist" in e.value for e in at.error), [e.value for e in at.error]
    assert Store(str(db)).runs() == []
    at.text_input(key="launch-hf-stream").set_value(f"{hf_dir / 'succ.csv'},{hf_dir / 'pred.csv'}").run()
    at.selectbox(key="launch-backbone").set_value("hf:").run()
    at.text_input(key="launch-hf-backbone").set_value(str(hf_dir / "lm")).run()
    at.button(key="launch-button").click().run()
    assert not at.error, [e.value for e in at.error]
    (run,) = Store(str(db)).runs()
    assert run["config"]["backbone"] == f"hf:{hf_dir / 'lm'}"
    assert run["config"]["stream"] == f"hf:{hf_dir / 'succ.csv'},{hf_dir / 'pred.csv'}"


# -- no network (conftest.no_network): a Hub name is one sentence at once, and the downloader (five retries,
# about 25 s) is never tried

def test_a_hub_name_without_network_is_one_sentence_without_a_download(no_network, tmp_path, capfd):
    db = tmp_path / "r.db"
    code = main(["--db", str(db), "run", "--method", "lora", "--backbone", "hf:cldash-test/no-such-model",
                 "--stream", "skills", "--quiet"])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert err == ("error: cannot load the Hugging Face model 'cldash-test/no-such-model': it is not a local model "
                   "folder and not in the local Hugging Face cache, and cldash cannot reach the Hugging Face Hub "
                   "(huggingface.co) from here (download it once with internet, or give the path of a folder "
                   "written by save_pretrained).\n")
    assert len(no_network) <= 1 and not db.exists()     # the probe's lookup at most: no download was tried


def test_hf_hub_offline_is_honoured_even_when_set_after_huggingface_hub_was_imported(no_network, monkeypatch,
                                                                                     tmp_path, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["--db", str(tmp_path / "r.db"), "run", "--method", "lora", "--backbone",
                 "hf:cldash-test/no-such-model", "--stream", "skills", "--quiet"])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "and HF_HUB_OFFLINE is set (unset it to download the model, or give the path of a folder" in err
    assert no_network == []                             # not even the probe


def test_a_hub_data_set_without_network_is_one_sentence_before_the_run_is_stored(no_network, hf_dir, monkeypatch,
                                                                                 tmp_path, capfd):
    import types

    import cldash.streams.hf as hf_streams

    loads = []

    def load_dataset(name, *args, **kwargs):     # the slow path: the datasets package's Hub download
        loads.append(name)
        raise ConnectionError("no network")

    fake = types.SimpleNamespace(load_dataset=load_dataset, load_from_disk=load_dataset, Dataset=type(None))
    monkeypatch.setattr(hf_streams, "_datasets", lambda: fake)
    db = tmp_path / "r.db"
    code = main(["--db", str(db), "run", "--method", "lora", "--backbone", f"hf:{hf_dir / 'lm'}", "--stream",
                 "hf:cldash-test/no-such-data", "--quiet"])
    err = capfd.readouterr().err
    assert code == 2 and err == ("error: cannot load the data set 'cldash-test/no-such-data': it is not a local file "
                                 "or folder, and cldash cannot reach the Hugging Face Hub (huggingface.co) from here "
                                 "(set HF_HUB_OFFLINE=1 to use a copy in the local Hugging Face cache, or give CSV, "
                                 "JSON or Parquet files).\n")
    assert loads == [] and len(no_network) <= 1 and not db.exists()


def test_the_launch_form_answers_a_hub_name_without_network_under_its_field(no_network, tmp_path, monkeypatch):
    from test_app import app

    db = tmp_path / "hub.db"
    at = app(db, monkeypatch, "pages/launch.py")
    at.selectbox(key="launch-backbone").set_value("hf:").run()
    at.text_input(key="launch-hf-backbone").set_value("cldash-test/no-such-model").run()
    at.button(key="launch-button").click().run()
    errors = [e.value for e in at.error]
    assert any("cldash cannot reach the Hugging Face Hub" in e for e in errors), errors
    assert len(no_network) <= 1 and Store(str(db)).runs() == []


def test_the_hub_probe_gives_up_after_its_timeout_and_skips_local_folders(monkeypatch, tmp_path):
    import socket
    import threading

    from cldash.core import hub

    released = threading.Event()

    def hanging(*args, **kwargs):       # a resolver that hangs until the test is over
        released.wait()
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hanging)
    assert hub.probe(("huggingface.co", 443), timeout=0.05) is False
    released.set()

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Connection())
    assert hub.probe(("huggingface.co", 443), timeout=5) is True
    monkeypatch.setattr(hub, "reachable", lambda: pytest.fail("a local folder needs no probe"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert hub.why_not(str(tmp_path)) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub._probe_address() == ("proxy.example", 3128)


def test_a_run_on_a_local_hf_model_resumes_to_the_same_rows(hf_dir, tmp_path):
    """The checkpoint pickles a Hugging Face model with its logits and features functions; resumed after task
    1, the run stores what the uninterrupted one does."""
    from cldash.config import resolve
    from cldash.runs import lineage
    from cldash.runs.execute import execute

    from test_checkpoints import interrupt_in_task_2, rows

    store = Store(str(tmp_path / "runs.db"))
    cfg = resolve({"method": "lora", "backbone": f"hf:{hf_dir / 'lm'}", "stream": f"hf:{hf_dir / 'succ.csv'},"
                   f"{hf_dir / 'pred.csv'}", "steps_per_task": 4, "batch_size": 8, "eval_interval": 0,
                   "spectra_interval": 2}).to_dict()
    whole, cut = store.create_run(cfg), store.create_run(cfg)
    assert execute(store, whole) == "finished"
    assert execute(store, cut, progress=interrupt_in_task_2(at_step=6)) == "interrupted"
    assert lineage.resume(store, cut, start=False) == 1 and execute(store, cut) == "finished"
    assert rows(store, whole) == rows(store, cut)
