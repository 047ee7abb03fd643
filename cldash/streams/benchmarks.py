"""The seed papers' image benchmarks by name, each with a fixed class order and train/test split shipped in
cldash/streams/splits/ (a small JSON file of ids and the order, never images):

- ``cifar100-10``: CIFAR-100 in 10 tasks of 10 classes, the official train/test split (the Hub copy's two
  splits), InfLoRA's class order (seed 1993).
- ``imagenet-r-10``: ImageNet-R in 10 tasks of 20 classes, InfLoRA's class order (seed 1993) and one fixed
  80/20 split of the Hub copy's 30,000 rows, listed by row index. The authors' split is LAE's file list
  (InfLoRA's README: "follow LAE to prepare the dataset"; LAE's libml/data/imagenet_r.py downloads
  train_list.txt / val_list.txt from a gist), which could not be read offline, so cldash ships its own fixed
  split and says so in the file.
- ``domainnet``: domain-incremental, the six domains one after the other (InfLoRA's utils/data.py order), all
  345 classes in one shared head; ``--stream-scenario class-il`` gives InfLoRA's own DomainNet setting instead
  (configs/domainnet_inflora.json: 5 tasks of 69 classes, class order 0..344, all domains together). The Hub
  copy wltjr1007/DomainNet is pinned at the commit public code pins it at; its two splits are taken as DomainNet's
  official train/test lists (not verified offline). Decoded at 224 px all of it is 88 GB, so by default a seeded
  subset of 20,000 + 5,000 images per domain is used.
- ``clip-mtil-5``: CoDyRA's MTIL-style setting in small, for a CLIP backbone (ClipMTIL below).

Reproducibility rests on the split file: a user's copy is matched against it by its row count (and the class
names the order lists), and a copy that does not match is one sentence, not a silent different split. Where no
public code pins the Hub revision (CIFAR-100, ImageNet-R, the CLIP data sets) the pin is by content: the run
records the revision it actually read (the Hub commit from the local cache's refs, and ``datasets``' fingerprints)
next to the split file's sha256 in ``stream.info``.

The data is needed only when a run builds a stream: listing streams and checking a configuration work offline.
``cldash data fetch NAME`` downloads and decodes ahead of time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cldash.core import hub
from cldash.core.cache import cache_dir, sha256_file
from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.streams.base import Split, Stream, Task, register_stream
from cldash.streams.images import (
    ImageSource,
    ImageStream,
    hub_commit,
    is_image_folder,
    read_dataset,
    seeded_subset,
)

SPLITS = Path(__file__).with_name("splits")


@functools.cache
def split_spec(name: str) -> dict:
    """A benchmark's shipped split file (class order, ids, Hub source), with its file name and sha256."""
    path = SPLITS / f"{name}.json"
    return {**json.loads(path.read_text()), "split_file": path.name, "split_sha256": sha256_file(path)}


@dataclass
class BenchmarkOptions:
    evaluation: str = option("class-il", "class-il: pick among all classes seen by the head; task-il: among the "
                                         "task's own", choices=("class-il", "task-il"))
    max_train: int = option(0, "training images per task at most (a seeded subset); 0: all", low=0,
                            high=10_000_000)
    max_test: int = option(0, "test images per task at most (a seeded subset); 0: all", low=0, high=10_000_000)
    augment: str = option("crop-flip", "crop-flip: random resized crop and horizontal flip while training "
                                       "(InfLoRA / SD-LoRA, utils/data.py); none", choices=("none", "crop-flip"))
    source: str = option("", "a local copy of the benchmark's Hub data set (a save_to_disk folder) instead of "
                             "the Hub; it must match the split file")
    seed: int = option(0, "seed of the max_train / max_test subsets", low=0, high=2**31 - 1)


class Benchmark(ImageStream):
    """A named image benchmark: its source, order and split come from its split file (split_spec)."""

    Options = BenchmarkOptions

    @property
    def spec(self) -> dict:
        return split_spec(self.name)

    @classmethod
    def train_sizes(cls) -> list[int]:
        """Training images of each task with the default options, from the split file alone (no data): what a paper
        preset's epochs on this benchmark become in steps (cldash.config.presets)."""
        s = split_spec(cls.name)
        if "all" in s["splits"]:
            total = s["splits"]["all"]["rows"] - len(s["test_rows"])
        else:
            total = s["splits"]["train"]["rows"]
        return [total // s["tasks"]] * s["tasks"]

    def __init__(self, options, backbone):
        self.n_tasks = getattr(self, "n_tasks", None) or self.spec["tasks"]
        self.center_crop = self.spec["center_crop"]
        super().__init__(options, backbone)
        s = self.spec
        self.info = {**self.info, "split_file": s["split_file"], "split_sha256": s["split_sha256"],
                     "hub": s["hub"]["id"], "pinned_revision": s["hub"]["revision"]}

    def open_source(self) -> ImageSource:
        hubspec, local = self.spec["hub"], self.options.source
        src = local or hubspec["id"]
        if local and not Path(local).is_dir():
            raise ConfigError(f"the {self.name} source {local} is not a folder (give a save_to_disk copy of "
                              f"{hubspec['id']}).", f"{self.name}.source")
        if local and is_image_folder(Path(local)):
            raise ConfigError(f"{self.spec['split_file']} lists rows of the Hub data set {hubspec['id']}, which an "
                              f"image folder cannot be matched against; give a save_to_disk copy of it, or use "
                              f"--stream hf-image:{local} for a split of your own.", f"{self.name}.source")
        offline = None if local else hub.why_not(src)
        try:
            return read_dataset(src, hubspec["image_column"], hubspec["label_column"],
                                revision=None if local else hubspec["revision"],
                                extra=tuple(c for c in [hubspec.get("domain_column")] if c))
        except ConfigError:
            if offline:
                raise ConfigError(offline_sentence(self.name), "stream") from None
            raise

    def _expect_rows(self, src: ImageSource, split: str, rows: int | None) -> None:
        if split not in src.splits:
            raise ConfigError(f"the {self.name} data has no split {split!r} (its splits are: {', '.join(src.splits)}); "
                              f"it is not the data set {self.spec['split_file']} describes.", "stream")
        n = len(src.splits[split].labels)
        if rows is not None and n != rows:
            raise ConfigError(f"the {self.name} data's {split} split has {n} rows but {self.spec['split_file']} "
                              f"lists {rows}; it is another copy or version of the data set, so the shipped split "
                              "does not apply.", "stream")

    def train_test(self, src: ImageSource):
        import pandas as pd  # deferred: pandas, only to cut a source's rows into splits

        frames = {}
        for part, where in self.spec["splits"].items():
            self._expect_rows(src, where["split"], where["rows"])
            labels = src.splits[where["split"]].labels
            frames[part] = pd.DataFrame({"split": where["split"], "row": np.arange(len(labels)), "label": labels})
        if "all" in frames:                      # one split cut by the shipped test rows
            df, test = frames["all"], np.zeros(len(frames["all"]), dtype=bool)
            test[self.spec["test_rows"]] = True
            return df[~test], df[test]
        return frames["train"], frames["test"]

    def class_order(self, src: ImageSource, train) -> list[int]:
        names = next(iter(src.splits.values())).class_names
        order = self.spec["class_order"]
        if all(isinstance(c, int) for c in order):
            if len(names) != len(order):
                raise ConfigError(f"the {self.name} data has {len(names)} classes but {self.spec['split_file']} "
                                  f"orders {len(order)}; it is not the data set the file describes.", "stream")
            return list(order)
        index = {n: i for i, n in enumerate(names)}
        missing = [c for c in order if c not in index]
        if missing or len(names) != len(order):
            raise ConfigError(f"the {self.name} data's classes do not match {self.spec['split_file']} ({len(missing)} "
                              f"of its {len(order)} classes missing, e.g. {missing[:1]}); it is not the data set "
                              "the file describes.", "stream")
        return [index[c] for c in order]


@register_stream
class Cifar100(Benchmark):
    name = "cifar100-10"
    label = "CIFAR-100, 10 tasks"
    summary = ("CIFAR-100 in 10 tasks of 10 classes (official split, InfLoRA's seed-1993 class order), "
               "class-incremental; needs the data (cldash data fetch cifar100-10).")


@register_stream
class ImageNetR(Benchmark):
    name = "imagenet-r-10"
    label = "ImageNet-R, 10 tasks"
    summary = ("ImageNet-R in 10 tasks of 20 classes (InfLoRA's seed-1993 class order, a shipped fixed 80/20 "
               "split), class-incremental; needs the data (cldash data fetch imagenet-r-10).")


@dataclass
class DomainNetOptions(BenchmarkOptions):
    # DomainNet decoded at 224 px is 88 GB of uint8, more than one GPU holds: by default a seeded subset per domain
    # (20,000 + 5,000 images x 6 domains: 22.6 GB); 0 takes all
    max_train: int = option(20_000, "training images per domain at most (a seeded subset); 0: all", low=0,
                            high=10_000_000)
    max_test: int = option(5_000, "test images per domain at most (a seeded subset); 0: all", low=0, high=10_000_000)
    scenario: str = option("domain-il", "domain-il: the six domains as tasks, one shared 345-way head; class-il: "
                                        "InfLoRA's 5 tasks of 69 classes over all domains",
                           choices=("domain-il", "class-il"))


@register_stream
class DomainNet(Benchmark):
    name = "domainnet"
    label = "DomainNet"
    summary = ("DomainNet's six domains one after the other (345 classes, one shared head), domain-incremental; "
               "needs the data (cldash data fetch domainnet).")
    Options = DomainNetOptions

    @classmethod
    def train_sizes(cls) -> list[int]:
        """The default subset: max_train images of each domain (every domain's official train list is larger)."""
        return [DomainNetOptions.max_train] * len(split_spec(cls.name)["domains"])

    def __init__(self, options, backbone):
        if options.scenario == "class-il":
            self.n_tasks = 5            # InfLoRA's configs/domainnet_inflora.json: init_cls = increment = 69
        super().__init__(options, backbone)

    def build_tasks(self, src: ImageSource, train, test, order: list[int]) -> None:
        if self.options.scenario == "class-il":
            return super().build_tasks(src, train, test, order)
        o, domains = self.options, self.spec["domains"]
        column = self.spec["hub"]["domain_column"]
        train, test = train.copy(), test.copy()
        for frame in (train, test):
            values, names = src.splits[str(frame["split"].iloc[0])].extra[column]
            frame["domain"] = values[frame["row"].to_numpy()]
        unknown = [d for d in domains if d not in names]
        if unknown:
            raise ConfigError(f"the {self.name} data has no domain {unknown[0]!r} (its domains are: "
                              f"{', '.join(names)}).", "stream")
        self.heads = {"stream": len(order)}
        position = {c: i for i, c in enumerate(order)}
        per = [(self._domain_rows(train, names.index(d), o.max_train), self._domain_rows(test, names.index(d),
                                                                                         o.max_test)) for d in domains]
        x_train, x_test = self._decoded(src, [p[0] for p in per]), self._decoded(src, [p[1] for p in per])
        label = lambda df: torch.tensor([position[c] for c in df["label"]], dtype=torch.long)  # noqa: E731
        for d, (tr, te), a, b in zip(domains, per, x_train, x_test):
            self.tasks.append(Task(d, head="stream", train=Split(a, label(tr)), test=Split(b, label(te))))
        self.info = {"source": src.name, "revision": src.revision, "domains": domains, "image_size": self.size,
                     "center_crop": self.center_crop, **self.info}

    def _domain_rows(self, df, domain: int, limit: int):
        keep = seeded_subset(df[df["domain"] == domain], limit, self.options.seed)
        if len(keep) == 0:
            raise ConfigError(f"the {self.name} data has no images of domain {domain} in one of its splits.", "stream")
        return keep


@dataclass
class ClipOptions:
    max_train: int = option(5_000, "training images per data set at most (a seeded subset); 0: all", low=0,
                            high=10_000_000)
    max_test: int = option(2_000, "test images per data set (and of the general one) at most; 0: all", low=0,
                           high=10_000_000)
    augment: str = option("none", "none (CoDyRA trains on CLIP's own test-style preprocessing); crop-flip",
                          choices=("none", "crop-flip"))
    train_heads: bool = option(False, "train the zero-shot heads too (default: frozen, the text side stays CLIP's)")
    seed: int = option(0, "seed of the max_train / max_test subsets", low=0, high=2**31 - 1)


@register_stream
class ClipMTIL(Benchmark):
    """CoDyRA's setting in small (CoDyRA follows MTIL, "Boosting Continual Learning of Vision-Language Models via
    Mixture-of-Experts Adapters"): a CLIP model learns a few image classification data sets one after the other,
    each scored by its own zero-shot head built from its class names (``logit_scale * prompt_embeddings``, one
    prompt per class in the data set's template, from CoDyRA's scenario_datasets/collections.py), and a data set
    the stream never trains on is scored zero-shot throughout as the general task. The data sets are the MTIL ones
    that have small Hub copies, in MTIL's order; the list, templates and sizes are in splits/clip-mtil-5.json."""

    name = "clip-mtil-5"
    label = "CLIP: five data sets in a row (MTIL style)"
    summary = ("A CLIP model learns CIFAR-100, DTD, EuroSAT, MNIST and Stanford Cars one after the other, each with "
               "a zero-shot head from its class names; RESISC45 stays zero-shot as the general task; needs a CLIP "
               "backbone and the data (cldash data fetch clip-mtil-5).")
    Options = ClipOptions
    default_backbone = "clip-vit-b16"

    def __init__(self, options, backbone):
        Stream.__init__(self, options, backbone)
        self.center_crop = self.spec["center_crop"]
        embed = getattr(backbone, "prompt_embeddings", None)
        if embed is None and not isinstance(backbone, DecodeOnly):
            raise ConfigError(f"stream {self.name} needs a CLIP backbone that embeds text prompts "
                              "(--backbone clip-vit-b16).", "backbone")
        self.setup_pixels(backbone)
        self.primary_metric = "accuracy"
        for entry in self.spec["datasets"]:
            train, test, prompts = self._one(entry)
            head = entry["name"]
            self.heads[head] = len(prompts)
            if embed is not None:
                weight = embed(prompts) * float(getattr(backbone, "logit_scale", 1.0))
                self.head_init[head] = (weight.detach().float(), bool(options.train_heads))
            task = Task(entry["name"], test=test, train=train, head=head)
            (self.tasks if train is not None else self.general).append(task)
        for task in self.general:
            task.kind = "general"
        self.info = {"datasets": [d["hub"] for d in self.spec["datasets"]], "image_size": self.size,
                     "split_file": self.spec["split_file"], "split_sha256": self.spec["split_sha256"]}

    def _one(self, entry: dict):
        """(train Split or None for the general data set, test Split, the class prompts) of one data set."""
        o = self.options
        try:
            src = read_dataset(entry["hub"], entry.get("image_column", ""), entry.get("label_column", ""),
                               revision=entry.get("revision"))
        except ConfigError:
            if hub.why_not(entry["hub"]):
                raise ConfigError(offline_sentence(self.name), "stream") from None
            raise
        parts = [entry.get("train_split")] if entry.get("train_split") else []
        out = []
        for part, limit in zip(parts + [entry["test_split"]], ([o.max_train] if parts else []) + [o.max_test]):
            self._expect_rows(src, part, None)
            labels = src.splits[part].labels
            frame = seeded_subset(_frame(part, np.arange(len(labels)), labels), limit, o.seed)
            rows = frame["row"].to_numpy()
            x = self._decoded(src, [frame])[0]
            out.append(Split(x, torch.as_tensor(labels[rows], dtype=torch.long)))
        names = next(iter(src.splits.values())).class_names
        prompts = [entry["template"].format(class_name(n, entry.get("camel_case", False))) for n in names]
        return (out[0] if parts else None), out[-1], prompts


def _frame(split: str, rows, labels):
    import pandas as pd  # deferred: pandas, as ImageStream.train_test

    return pd.DataFrame({"split": split, "row": rows, "label": labels})


def class_name(name: str, camel_case: bool = False) -> str:
    """A label as CoDyRA words it in a prompt: underscores as spaces (collections.py's underline_to_space), and
    for EuroSAT CamelCase split into words (its process_labels: a space before each inner capital)."""
    words = name.replace("_", " ")
    return re.sub(r"(\w)([A-Z])", r"\1 \2", words) if camel_case else words


BENCHMARKS = {cls.name: cls for cls in (Cifar100, ImageNetR, DomainNet, ClipMTIL)}


@dataclass
class DecodeOnly:
    """What decoding needs of a backbone, for preparing a benchmark's cache before any model is loaded."""
    image_size: int
    num_channels: int = 3


def hub_ids(name: str) -> list[str]:
    """The Hub data sets benchmark `name` reads."""
    spec = split_spec(name)
    return [d["hub"] for d in spec["datasets"]] if "datasets" in spec else [spec["hub"]["id"]]


def prepare(name: str, size: int, source: str = "") -> dict:
    """Download (when needed) and decode benchmark `name` into the image cache at `size` x `size`, as a run
    with a backbone of that resolution will read it; returns the stream's provenance (stream.info)."""
    cls = BENCHMARKS[name]
    if source and "source" not in {f.name for f in dataclasses.fields(cls.Options)}:
        raise ConfigError(f"{name} reads {len(hub_ids(name))} data sets from the Hub; a --source folder stands for "
                          "one data set, so it does not apply.", "source")
    options = cls.Options(**({"source": source} if source else {}))
    return cls(options, DecodeOnly(size)).info


def offline_sentence(name: str) -> str:
    return f"the {name} data is not here and the Hub cannot be reached; run `cldash data fetch {name}` with internet."


def missing_data(name: str) -> str | None:
    """Why benchmark `name`'s data cannot be had now (one sentence), or None: each of its Hub data sets is in the
    local Hugging Face cache, or the Hub can be asked. Reads no data (a check before a run is stored)."""
    for repo in hub_ids(name):
        if hub.why_not(repo) is not None and hub_commit(repo) is None:
            return offline_sentence(name)
    return None


def cached_sizes(name: str) -> dict[int, int]:
    """{resolution: bytes} of the benchmark's decoded images in the cache (from the notes beside them)."""
    sizes: dict[int, int] = {}
    for note in (cache_dir() / "images").glob("*.json"):
        try:
            meta = json.loads(note.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("benchmark") == name:
            sizes[meta["size"]] = sizes.get(meta["size"], 0) + int(meta.get("bytes", 0))
    return sizes


def disk_estimate(name: str, size: int) -> tuple[int, int]:
    """(bytes of the decoded cache at `size`, bytes of the download): images x 3 x size x size, and the
    download size the split file records (approximate, from the Hub pages and the original archives)."""
    spec = split_spec(name)
    return spec["images"] * 3 * size * size, spec["download_bytes"]
