"""`cldash data`: list the named benchmarks and their cache, fetch one (here from a tiny local stand-in, since
nothing is downloaded in the tests); an unknown name or an unreachable Hub is one sentence and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cldash.cli import main
from cldash.streams import benchmarks
from cldash.streams.benchmarks import split_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streams"))
from test_images import _image  # noqa: E402


def test_fetch_unknown_benchmark_exits_2(capsys):
    assert main(["data", "fetch", "cifar1000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: there is no benchmark 'cifar1000'; the benchmarks are: cifar100-10, imagenet-r-10")
    assert err.count("\n") == 1


def test_fetch_offline_exits_2_with_one_sentence(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("cldash.core.hub.reachable", lambda: False)
    assert main(["data", "fetch", "cifar100-10"]) == 2
    err = capsys.readouterr().err
    assert "cannot fetch cifar100-10: cldash cannot reach the Hugging Face Hub" in err and err.count("\n") == 1


def test_list_then_fetch_a_local_copy(tmp_path, monkeypatch, capsys):
    import datasets

    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "imagenet-r-10      10   30,000    2.1 GB    4.5 GB  no" in out      # 30,000 x 3 x 224 x 224 bytes
    feats = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["a", "b"])})
    part = lambda k: datasets.Dataset.from_dict({"img": [_image(c, i) for c in range(2) for i in range(k)],  # noqa: E731
                                                 "fine_label": [c for c in range(2) for _ in range(k)]}, features=feats)
    datasets.DatasetDict({"train": part(3), "test": part(2)}).save_to_disk(str(tmp_path / "cifar"))
    spec = {**split_spec("cifar100-10"), "tasks": 2, "class_order": [1, 0], "images": 10,
            "splits": {"train": {"split": "train", "rows": 6}, "test": {"split": "test", "rows": 4}}}
    monkeypatch.setattr(benchmarks, "split_spec", lambda name: spec)
    assert main(["data", "fetch", "cifar100-10", "--size", "16", "--source", str(tmp_path / "cifar")]) == 0
    out = capsys.readouterr().out
    need = out.index(f"cifar100-10: 10 images; read from {tmp_path / 'cifar'} and about 0 MB of decoded 16 x 16")
    assert need < out.index("cifar100-10 is ready")                       # the disk it needs is said first
    assert main(["data", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cifar100-10"))
    assert line.endswith("16 px: 0 MB")


@pytest.mark.parametrize("argv", [["data", "fetch"], ["data", "fetch", "cifar100-10", "--size", "4"]])
def test_fetch_bad_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
