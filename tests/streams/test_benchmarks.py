"""The named image benchmarks: the shipped split and class-order files (checksums, class counts, no overlap) and
the benchmark streams on tiny local stand-ins of their Hub data sets (the real ones are not downloaded here)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cldash.core.errors import ConfigError
from cldash.core.options import build
from cldash.streams import STREAMS, benchmarks
from cldash.streams.benchmarks import SPLITS, split_spec

from test_images import FakeBackbone, _image

# Pinned: a changed split or order is a changed benchmark, and must be a deliberate edit of these lines.
SHA256 = {
    "clip-mtil-5.json": "a0d765831207213856c741aeb91ce0401e0f08d799c6500fe206b645c436296d",
    "cifar100-10.json": "d797c12704baf1f48a90d426cc2e57f2c4c1490e9d6abd33581def3b099cf551",
    "domainnet.json": "dd6a71199a7156b0bf8fd601fd8c310e79d249f622ae8e3152439baf58d31983",
    "imagenet-r-10.json": "cf3e2fa13513cb61ce1c1e3e1bd7c244fef38cd8acb2353de825e7c9a19fc65f",
}


def test_shipped_split_files_are_the_pinned_ones():
    assert sorted(p.name for p in SPLITS.glob("*.json")) == sorted(SHA256)
    for name, digest in SHA256.items():
        assert hashlib.sha256((SPLITS / name).read_bytes()).hexdigest() == digest, name


def test_class_orders_and_splits():
    cifar, inr, dn = split_spec("cifar100-10"), split_spec("imagenet-r-10"), split_spec("domainnet")
    # InfLoRA's utils/data_manager.py: np.random.seed(1993); np.random.permutation(n); its 1993 logs begin so
    assert cifar["class_order"] == np.random.RandomState(1993).permutation(100).tolist()
    assert cifar["class_order"][:5] == [68, 56, 78, 8, 23]
    wnids = sorted(inr["class_order"])
    assert len(set(wnids)) == 200 and all(w.startswith("n") and len(w) == 9 for w in wnids)
    assert inr["class_order"] == [wnids[i] for i in np.random.RandomState(1993).permutation(200)]
    assert inr["class_order"][:2] == [wnids[168], wnids[136]]
    assert dn["class_order"] == list(range(345)) and len(dn["domains"]) == 6 == dn["tasks"]
    assert (cifar["tasks"], inr["tasks"]) == (10, 10)
    # train and test never share an image: CIFAR-100 and DomainNet use two different splits of their data sets,
    # ImageNet-R lists its test rows, and every other row of its one split trains
    for spec in (cifar, dn):
        assert spec["splits"]["train"]["split"] != spec["splits"]["test"]["split"]
    rows, test = inr["splits"]["all"]["rows"], inr["test_rows"]
    assert rows == 30000 and len(test) == 6000 == len(set(test)) and test == sorted(test)
    assert 0 <= test[0] and test[-1] < rows
    train = sorted(set(range(rows)) - set(test))
    assert len(train) == 24000 and not set(train) & set(test)


def test_named_streams_are_listed_without_the_data():
    for name in ("cifar100-10", "imagenet-r-10", "domainnet", "clip-mtil-5"):
        cls = STREAMS[name]
        assert f"(cldash data fetch {name})" in cls.summary
        build(cls.Options, {}, prefix=name)             # a configuration checks offline


@pytest.fixture
def tiny_hub(tmp_path, monkeypatch):
    """A saved stand-in of a one-split Hub data set with string labels (as axiong/imagenet-r's wnid), and a
    split spec for it in the shipped format."""
    import datasets

    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    names = [f"n0{c}" for c in range(4)]
    rows = [(c, i) for c in range(4) for i in range(5)]
    feats = datasets.Features({"image": datasets.Image(), "wnid": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [_image(c, i) for c, i in rows], "wnid": [names[c] for c, _ in rows]},
                                    features=feats)
    path = tmp_path / "inr"
    ds.save_to_disk(str(path))
    real = split_spec("imagenet-r-10")
    spec = {**real, "tasks": 2, "center_crop": 1.0, "class_order": ["n03", "n01", "n00", "n02"],
            "splits": {"all": {"split": "all", "rows": 20}}, "test_rows": [0, 5, 10, 15, 16]}
    monkeypatch.setattr(benchmarks, "split_spec", lambda name: spec)
    return path, spec


def _bench(name, **options):
    cls = STREAMS[name]
    return cls(build(cls.Options, options, prefix=name), FakeBackbone())


def test_benchmark_stream_follows_its_split_file(tiny_hub):
    path, spec = tiny_hub
    s = _bench("imagenet-r-10", source=str(path))
    assert [t.classes for t in s.tasks] == [(0, 1), (2, 3)]
    assert s.info["class_order"] == ["n03", "n01", "n00", "n02"] and s.info["split_file"] == "imagenet-r-10.json"
    assert s.info["split_sha256"] == SHA256["imagenet-r-10.json"]
    # test rows 0, 5, 10, 15, 16 are of classes n00, n01, n02, n03, n03 -> positions 2, 1, 3, 0, 0
    assert sorted(s.tasks[0].test.y.tolist()) == [0, 0, 1] and sorted(s.tasks[1].test.y.tolist()) == [2, 3]
    assert sum(len(t.train) for t in s.tasks) == 15 and s.tasks[0].train.x.dtype == torch.uint8


def test_benchmark_data_that_does_not_match_is_one_sentence(tiny_hub):
    path, spec = tiny_hub
    spec["splits"]["all"]["rows"] = 30000
    with pytest.raises(ConfigError, match=r"has 20 rows but imagenet-r-10.json lists 30000; it is another copy"):
        _bench("imagenet-r-10", source=str(path))
    spec["splits"]["all"]["rows"] = 20
    pictures = path.parent / "pictures" / "n00"
    pictures.mkdir(parents=True)
    _image(0, 0).save(pictures / "a.png")
    with pytest.raises(ConfigError, match=r"lists rows of the Hub data set axiong/imagenet-r, which an image folder"):
        _bench("imagenet-r-10", source=str(path.parent / "pictures"))
    spec["class_order"] = ["n03", "n01", "n00", "n09"]
    with pytest.raises(ConfigError, match=r"classes do not match imagenet-r-10.json \(1 of its 4 classes missing"):
        _bench("imagenet-r-10", source=str(path))


def test_benchmark_offline_without_the_data_says_what_to_run(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("cldash.core.hub.reachable", lambda: False)
    with pytest.raises(ConfigError) as err:
        _bench("imagenet-r-10")
    assert str(err.value) == ("the imagenet-r-10 data is not here and the Hub cannot be reached; run `cldash data "
                              "fetch imagenet-r-10` with internet.")


def test_domainnet_domains_are_the_tasks(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    domains = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                               "domain": datasets.ClassLabel(names=sorted(domains))})

    def split(k):
        rows = [(d, c, i) for d in range(6) for c in range(3) for i in range(k)]
        return datasets.Dataset.from_dict({"image": [_image(c, i) for _, c, i in rows],
                                           "label": [c for _, c, _ in rows], "domain": [d for d, _, _ in rows]},
                                          features=feats)
    datasets.DatasetDict({"train": split(2), "test": split(1)}).save_to_disk(str(tmp_path / "dn"))
    spec = {**split_spec("domainnet"), "class_order": [0, 1, 2], "center_crop": 1.0}
    monkeypatch.setattr(benchmarks, "split_spec", lambda name: spec)
    s = _bench("domainnet", source=str(tmp_path / "dn"))
    assert [t.name for t in s.tasks] == domains and s.heads == {"stream": 3}
    assert all(len(t.train) == 6 and len(t.test) == 3 and t.classes is None for t in s.tasks)
    with pytest.raises(ConfigError, match=r"has 3 classes, too few for 5 tasks"):   # InfLoRA's 5 x 69 setting
        _bench("domainnet", source=str(tmp_path / "dn"), scenario="class-il")


def test_clip_stream_has_zero_shot_heads_and_a_general_task(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    entries = []
    for k, (name, classes) in enumerate([("mnist", ["0", "1"]), ("eurosat", ["AnnualCrop", "SeaLake", "River"]),
                                         ("general: resisc45", ["golf_course", "lake"])]):
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
        part = lambda n, classes=classes, feats=feats: datasets.Dataset.from_dict(  # noqa: E731
            {"image": [_image(c, i) for c in range(len(classes)) for i in range(n)],
             "label": [c for c in range(len(classes)) for _ in range(n)]}, features=feats)
        datasets.DatasetDict({"train": part(3), "test": part(2)}).save_to_disk(str(tmp_path / name))
        template = {"mnist": 'a photo of the number: "{}".', "eurosat": "a centered satellite photo of {}."}
        entries.append({"name": name, "hub": str(tmp_path / name), "test_split": "test",
                        "template": template.get(name, "satellite imagery of {}."), "camel_case": name == "eurosat",
                        **({"train_split": "train"} if k < 2 else {})})
    spec = {**split_spec("clip-mtil-5"), "datasets": entries}
    monkeypatch.setattr(benchmarks, "split_spec", lambda name: spec)
    asked = []

    def embed(prompts):
        asked.extend(prompts)
        v = torch.tensor([[len(p) % 7 + 1.0, 1.0, float(i), 2.0] for i, p in enumerate(prompts)])
        return v / v.norm(dim=1, keepdim=True)

    backbone = FakeBackbone()
    backbone.prompt_embeddings, backbone.logit_scale = embed, 100.0
    cls = STREAMS["clip-mtil-5"]
    s = cls(build(cls.Options, {"max_train": 4}, prefix=cls.name), backbone)
    assert [t.name for t in s.tasks] == ["mnist", "eurosat"] and [t.name for t in s.general] == ["general: resisc45"]
    assert s.general[0].kind == "general" and s.general[0].head == "general: resisc45"
    assert s.heads == {"mnist": 2, "eurosat": 3, "general: resisc45": 2}
    assert asked[:3] == ['a photo of the number: "0".', 'a photo of the number: "1".',
                         "a centered satellite photo of Annual Crop."]
    assert asked[-1] == "satellite imagery of lake."
    weight, trainable = s.head_init["eurosat"]
    assert weight.shape == (3, 4) and trainable is False
    assert torch.allclose(weight.norm(dim=1), torch.full((3,), 100.0))     # logit_scale x unit text embeddings
    assert [len(t.train) for t in s.tasks] == [4, 4] and len(s.general[0].test) == 4
    with pytest.raises(ConfigError, match=r"needs a CLIP backbone that embeds text prompts"):
        cls(build(cls.Options, {}, prefix=cls.name), FakeBackbone())
