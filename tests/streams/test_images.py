"""The hf-image stream on tiny local data written by the tests (an image folder and a saved `datasets` data set
with PIL images): the class order and split, the decode cache, the one-sentence errors, the GPU-style
augmentation and the uint8 -> float conversion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cldash.core.errors import ConfigError
from cldash.core.options import build
from cldash.streams import get_stream, images as images_module
from cldash.streams.images import (
    ImageStreamOptions,
    crop_flip,
    crop_flip_params,
    decode_image,
    ordered_classes,
)

CLASSES, PER_CLASS, SIDE = 6, 5, 16


@dataclass
class FakeBackbone:
    """What an image stream reads from a backbone (interface 1 of the issue-24 plan)."""
    image_size: int = 16
    num_channels: int = 3
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.25, 0.25, 0.25)
    kind: str = "image-classification"


def _image(c: int, i: int, size=(SIDE + 4, SIDE)):
    from PIL import Image

    rng = np.random.default_rng(100 * c + i)
    arr = np.full((size[1], size[0], 3), 20 * c, dtype=np.uint8) + rng.integers(0, 10, (size[1], size[0], 3),
                                                                                 dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pics"
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(PER_CLASS):
            _image(c, i).save(root / f"class{c}" / f"{i}.png")
    (root / "class0" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def saved(tmp_path):
    import datasets

    feats = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(
        names=[f"c{c}" for c in range(CLASSES)]), "extra": datasets.Value("int64")})

    def split(offset):
        rows = [(c, i) for c in range(CLASSES) for i in range(offset, offset + 3)]
        return datasets.Dataset.from_dict({"img": [_image(c, i) for c, i in rows], "fine_label": [c for c, _ in rows],
                                           "extra": [0] * len(rows)}, features=feats)
    path = tmp_path / "saved"
    datasets.DatasetDict({"train": split(0), "test": split(3)}).save_to_disk(str(path))
    return path


def _stream(src, **options):
    cls = get_stream(f"hf-image:{src}")
    return cls(build(cls.Options, options, prefix=cls.name), FakeBackbone())


class Counting:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = images_module.decode_image

        def counted(*a, **k):
            self.calls += 1
            return real(*a, **k)
        monkeypatch.setattr(images_module, "decode_image", counted)


def test_image_folder_class_order_split_and_uint8(cache, folder):
    s = _stream(folder, tasks=3, class_order="seed:1993", test_fraction=0.2)
    order = [int(name.removeprefix("class")) for name in s.info["class_order"]]
    assert order == np.random.RandomState(1993).permutation(CLASSES).tolist()   # InfLoRA's permutation
    assert s.heads == {"stream": CLASSES} and [t.classes for t in s.tasks] == [(0, 1), (2, 3), (4, 5)]
    n_train = sum(len(t.train) for t in s.tasks)
    n_test = sum(len(t.test) for t in s.tasks)
    assert (n_train, n_test) == (24, 6)   # 30 images, 20 % of them kept out once
    for t in s.tasks:
        assert t.train.x.dtype == torch.uint8 and t.train.x.shape[1:] == (3, SIDE, SIDE)
        assert set(t.train.y.tolist()) <= set(t.classes) and set(t.test.y.tolist()) <= set(t.classes)
    # the head's output j is the j-th class of the order: task 0's images are of the order's first two classes
    task0 = s.tasks[0].train
    brightness = task0.x.float().mean(dim=(1, 2, 3))
    expected = torch.tensor([20.0 * order[int(y)] + 4.5 for y in task0.y])
    assert torch.allclose(brightness, expected, atol=1.0)
    again = _stream(folder, tasks=3, class_order="seed:1993", test_fraction=0.2)
    assert all(torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
               for a, b in zip(s.tasks, again.tasks))
    given = _stream(folder, tasks=2, class_order="given")
    assert given.info["class_order"] == [f"class{c}" for c in range(CLASSES)]
    assert ordered_classes([3, 1, 2], "given") == [1, 2, 3]


def test_second_construction_decodes_nothing(cache, folder, monkeypatch):
    count = Counting(monkeypatch)
    a = _stream(folder, tasks=2)
    assert count.calls == CLASSES * PER_CLASS
    count.calls = 0
    b = _stream(folder, tasks=2)
    assert count.calls == 0
    assert all(torch.equal(x.train.x, y.train.x) for x, y in zip(a.tasks, b.tasks))
    assert len(list((cache / "images").glob("*.pt"))) == 2          # train and test rows of the one split
    _stream(folder, tasks=2, center_crop=1.0)                       # another resolution recipe: decoded anew
    assert count.calls == CLASSES * PER_CLASS


def test_saved_dataset_with_pil_images_and_its_splits(cache, saved):
    s = _stream(saved, tasks=2, class_order="given", max_train=5)
    assert s.info["class_order"] == [f"c{c}" for c in range(CLASSES)]
    assert [len(t.train) for t in s.tasks] == [5, 5] and [len(t.test) for t in s.tasks] == [9, 9]
    assert s.tasks[1].test.y.tolist() == [3] * 3 + [4] * 3 + [5] * 3
    assert s.info["revision"].startswith("train:")


def test_errors_are_one_sentence(cache, saved, folder, monkeypatch):
    with pytest.raises(ConfigError, match=r"no image column 'picture'; its columns are: img, fine_label, extra"):
        _stream(saved, image_column="picture")
    with pytest.raises(ConfigError, match=r"has 6 classes, too few for 7 tasks; choose at most 6 tasks"):
        _stream(folder, tasks=7)
    with pytest.raises(ConfigError, match=r"class_order must be seed:S"):
        _stream(folder, class_order="random")
    with pytest.raises(ConfigError, match=r"no split 'validation'; its splits are: train, test"):
        _stream(saved, test_split="validation")
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("cldash.core.hub.reachable", lambda: False)
    with pytest.raises(ConfigError, match=r"cannot load the data set 'someone/pictures': it is not a local folder, "
                                          r"and cldash cannot reach the Hugging Face Hub"):
        get_stream("hf-image:someone/pictures")
    with pytest.raises(ConfigError, match=r"needs an image backbone that states its input resolution"):
        cls = get_stream(f"hf-image:{folder}")
        cls(build(cls.Options, {}, prefix=cls.name), FakeBackbone(image_size=0))


def test_missing_datasets_package_is_one_sentence(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets":
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    images_module.image_stream.cache_clear()
    with pytest.raises(ConfigError, match=r"needs the optional datasets package"):
        get_stream("hf-image:someone/other-pictures")


def test_decode_is_the_test_transform():
    from PIL import Image

    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 40:] = 200                                    # right half bright
    out = decode_image(Image.fromarray(arr), 16, crop=1.0)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert out[:, :, :7].max() < 30 and out[:, :, 9:].min() > 170   # the centre square straddles the edge
    gray = decode_image(Image.fromarray(arr), 8, channels=1)
    assert gray.shape == (1, 8, 8)


def test_crop_flip_is_seeded_and_keeps_shape():
    x = torch.rand(64, 3, 16, 16)
    a = crop_flip_params(64, torch.Generator().manual_seed(3))
    b = crop_flip_params(64, torch.Generator().manual_seed(3))
    c = crop_flip_params(64, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    area = (a[:, 0].abs() * a[:, 1])
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1.0 + 1e-6
    ratio = a[:, 0].abs() / a[:, 1]
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert 16 < int((a[:, 0] < 0).sum()) < 48                        # about half flipped
    y = crop_flip(x, a)
    assert y.shape == x.shape and y.dtype == x.dtype
    ident = torch.tensor([[-1.0, 1.0, 0.0, 0.0]])                  # the whole image, mirrored
    assert torch.allclose(crop_flip(x[:1], ident), x[:1].flip(-1), atol=1e-5)


def test_loss_and_logits_convert_uint8_on_the_fly(cache, folder):
    s = _stream(folder, tasks=2, augment="crop-flip")
    seen = []

    class Model(torch.nn.Module):
        def forward(self, x, head):
            seen.append(x)
            return torch.zeros(len(x), CLASSES, requires_grad=True)
    task = s.tasks[0]
    s.loss(Model(), task.train, task)
    assert seen[-1].dtype == torch.float32 and seen[-1].shape == task.train.x.shape
    logits = s.logits(Model(), task, batch_size=2)
    assert logits.shape == (len(task.test), CLASSES) and all(len(x) <= 2 for x in seen[1:])
    plain = (task.test.x[:2].float() / 255 - 0.5) / 0.25
    assert torch.allclose(seen[1], plain)
    scores = s.evaluate(Model(), task)
    assert set(scores) == {"accuracy", "task_il_accuracy"}
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    next(s.batches(task, 4, g1))
    p1 = crop_flip_params(4, s.augment_generator)
    next(s.batches(task, 4, g2))
    assert torch.equal(p1, crop_flip_params(4, s.augment_generator))   # re-seeded from the task's generator


def test_options_defaults_check():
    o = build(ImageStreamOptions, {}, prefix="hf-image:x")
    assert o.class_order == "seed:1993" and o.augment == "crop-flip" and o.center_crop == pytest.approx(0.875)


@pytest.mark.slow
def test_cli_run_on_an_image_folder_with_a_tiny_local_vit(cache, folder, tmp_path):
    """The whole path: `cldash run --stream hf-image:DIR --backbone hf:DIR` on a random-init ViT saved locally."""
    from transformers import ViTConfig, ViTForImageClassification

    from cldash.cli import main
    from cldash.store import Store

    vit = tmp_path / "vit"
    config = ViTConfig(image_size=SIDE, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=3)
    ViTForImageClassification(config).save_pretrained(vit)
    db = str(tmp_path / "runs.db")
    assert main(["--db", db, "run", "--method", "lora", "--backbone", f"hf:{vit}", "--stream", f"hf-image:{folder}",
                 "--stream-tasks", "3", "--steps-per-task", "3", "--batch-size", "4", "--eval-interval", "0",
                 "--spectra-interval", "0", "--dense-spectra-interval", "0", "--quiet"]) == 0
    (run,) = Store(db).runs()
    m = Store(db).accuracy_matrix(run["id"])
    assert len(m["tasks"]) == 3 and m["tasks"][0].startswith("classes class")
    R = np.asarray(m["R"], dtype=float)
    assert R.shape == (4, 3) and np.isfinite(R).all() and ((R >= 0) & (R <= 1)).all()   # rows 0..3, scored
    assert run["status"] == "finished"
    assert len(list((cache / "images").glob("*.pt"))) == 2


def test_hub_commit_is_read_from_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from cldash.streams.images import hub_commit

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "datasets--someone--pictures" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert hub_commit("someone/pictures") == "0123456789abcdef0123456789abcdef01234567"
    assert hub_commit("someone/other") is None
    pinned = "ee20570ae7a29c51571e55a9a17983f7625295d6"
    assert hub_commit("someone/pictures", pinned) == pinned


def test_two_constructions_at_once_decode_once(cache, folder, monkeypatch):
    """The cache's lock: two streams built at the same moment (two runs starting together) decode each image
    once between them, and both get the same pixels."""
    import threading

    count = Counting(monkeypatch)
    built, start = [], threading.Barrier(2)

    def build_one():
        start.wait()
        built.append(_stream(folder, tasks=2))
    threads = [threading.Thread(target=build_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count.calls == CLASSES * PER_CLASS
    assert torch.equal(built[0].tasks[1].test.x, built[1].tasks[1].test.x)
    assert not list((cache / "images").glob("*.tmp"))         # written atomically: no half-written file left
