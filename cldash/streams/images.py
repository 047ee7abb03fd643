"""Any image classification data set as a class-incremental stream: ``--stream hf-image:SOURCE``.

SOURCE is a Hub data set name, a folder written by ``datasets``' ``save_to_disk``, or an image folder laid
out one sub-folder per class (torchvision's ImageFolder: classes and files in sorted order; an image folder
with ``train`` and ``test`` sub-folders has those two splits). The classes are put in an order
(``--stream-class-order seed:S`` a seeded permutation, as PyCIL and InfLoRA shuffle them, or ``given``: label
order) and cut into ``--stream-tasks N`` tasks, learned by one new head over all the classes and scored
class-incrementally or task-incrementally, as ``digits-split`` is.

The data lives on the device as uint8. Each image is decoded once, at the backbone's resolution
(``backbone.image_size``; an image stream needs a backbone that states one), by the authors' test transform
(the shorter side resized to S / center_crop, then a centre crop of S x S: InfLoRA's utils/data.py,
``Resize(256), CenterCrop(224)``), and the uint8 tensor is cached on disk under
``$CLDASH_CACHE/images``, keyed by the source, its revision (``datasets``' fingerprint, or a folder's file
names, sizes and times), the split, the rows, the resolution and the columns. A second run decodes nothing.
The stream turns uint8 into float pixels on the device itself, a batch at a time: in ``loss`` with the
training augmentation (a random resized crop and a horizontal flip, drawn with torch ops on the device) and
in ``logits`` without; then the backbone's ``image_mean`` / ``image_std`` normalisation.

Deviation from the authors, said here once: their RandomResizedCrop crops the original image; ours crops
the cached centre crop, so a crop never reaches the outer border that the test transform cuts away.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cldash.core import hub
from cldash.core.cache import cache_dir, cache_key, file_lock
from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.streams.base import Split, Stream, Task, register_stream_prefix
from cldash.streams.digits import DigitsSplit
from cldash.streams.hf import _datasets, train_test

PREFIX = "hf-image:"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGE_COLUMNS = ("image", "img")              # what the Hub's image data sets call the picture
LABEL_COLUMNS = ("label", "fine_label", "labels")   # ... and its class (CIFAR-100: fine_label)
# RandomResizedCrop's defaults, which InfLoRA's utils/data.py uses for CIFAR-100, ImageNet-R and DomainNet
# (``transforms.RandomResizedCrop(224)``: scale (0.08, 1.0), ratio (3/4, 4/3)), then RandomHorizontalFlip(0.5)
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10                            # torchvision's tries before it falls back to the whole image
TEST_CROP = 224 / 256    # InfLoRA's utils/data.py (ImageNet-R, DomainNet test): Resize(256), CenterCrop(224)
DECODE_CHUNK = 256
PROGRESS_FROM = 2_000    # a decode this long shows a progress bar (about 5 s on 2 cores)


@dataclass
class ImageStreamOptions:
    tasks: int = option(10, "number of tasks; the classes are split evenly among them, in the class order",
                        low=1, high=1000)
    class_order: str = option("seed:1993", "seed:S: a seeded permutation of the classes (numpy's, as PyCIL and "
                                           "InfLoRA shuffle them; 1993 is their seed); given: label order")
    image_column: str = option("", "the column holding the image; empty: 'image' or 'img', whichever there is")
    label_column: str = option("", "the column holding the class; empty: 'label', 'fine_label' or 'labels'")
    train_split: str = option("train", "split to train on")
    test_split: str = option("test", "split to score")
    test_fraction: float = option(0.2, "share kept for testing when the source has one split (a fixed split)",
                                  low=0.0, low_open=True, high=0.9)
    seed: int = option(0, "seed of the fixed train/test split of a one-split source and of the subsampling",
                       low=0, high=2**31 - 1)
    evaluation: str = option("class-il", "class-il: pick among all classes seen by the head; task-il: among the "
                                         "task's own", choices=("class-il", "task-il"))
    max_train: int = option(0, "training images per task at most; 0: all", low=0, high=10_000_000)
    max_test: int = option(0, "test images per task at most; 0: all", low=0, high=10_000_000)
    augment: str = option("crop-flip", "crop-flip: random resized crop and horizontal flip while training "
                                       "(InfLoRA / SD-LoRA); none", choices=("none", "crop-flip"))
    center_crop: float = option(TEST_CROP, "share of the shorter side kept by the centre crop when decoding "
                                           "(224/256: the authors' test transform; 1: all of it)",
                                low=0.1, high=1.0)

    def check(self, prefix: str) -> None:
        parse_class_order(self.class_order, f"{prefix}.class_order")


def parse_class_order(spec: str, field: str = "class_order") -> int | None:
    """The seed of ``seed:S`` (None for ``given``), or the one-sentence error."""
    if spec == "given":
        return None
    head, _, seed = spec.partition(":")
    if head != "seed" or not seed.isdigit():
        raise ConfigError(f"{field} must be seed:S (S a whole number) or given (got {spec!r}).", field)
    return int(seed)


def ordered_classes(classes: list[int], spec: str) -> list[int]:
    """The classes in training order. ``seed:S`` permutes them as InfLoRA's utils/data_manager.py does
    (``np.random.seed(seed); order = np.random.permutation(len(order))``), with a private RandomState."""
    classes = sorted(classes)
    seed = parse_class_order(spec)
    if seed is None:
        return classes
    return [classes[i] for i in np.random.RandomState(seed).permutation(len(classes))]


# -- reading a source ---------------------------------------------------------------------------------------
@dataclass
class ImageTable:
    """One split of a source: each row's class (as an index into `class_names`) and how to read rows' images."""
    labels: np.ndarray                                   # (N,) int64
    class_names: list[str]
    read: Callable[[list[int]], list]                    # rows -> PIL images
    ids: list[str] | None = None                         # a folder's relative file names
    extra: dict = field(default_factory=dict)            # other columns asked for: name -> (values, ClassLabel names)


@dataclass
class ImageSource:
    name: str
    revision: str                                        # what the cache key and the run's record name
    splits: dict[str, ImageTable]
    image_column: str = ""
    label_column: str = ""


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and not any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json",
                                                                     "state.json"))


def _folder_table(root: Path, base: Path) -> tuple[ImageTable, list]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(c)
    if not files:
        raise ConfigError(f"the image folder {root} has no images in class sub-folders (one folder per class, "
                          f"as torchvision's ImageFolder reads it).", "stream")

    def read(rows):
        from PIL import Image  # deferred: Pillow, only for an image folder

        return [Image.open(files[i]) for i in rows]
    ids = [str(f.relative_to(root)) for f in files]
    stats = [(str(f.relative_to(base)), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]]
    return ImageTable(np.asarray(labels, dtype=np.int64), classes, read, ids), stats


def read_image_folder(path: Path) -> ImageSource:
    """An ImageFolder layout; ``train`` and ``test`` sub-folders (each one folder per class) are two splits."""
    parts = [p for p in ("train", "test") if (path / p).is_dir()]
    roots = {p: path / p for p in parts} if len(parts) == 2 else {"all": path}
    splits, stats = {}, []
    for split, root in roots.items():
        splits[split], st = _folder_table(root, path)
        stats += st
    return ImageSource(str(path), f"folder:{cache_key({'files': stats})}", splits)


def _column(names: list[str], wanted: str, candidates: tuple[str, ...], what: str, src: str, flag: str) -> str:
    if wanted:
        if wanted in names:
            return wanted
        raise ConfigError(f"the data set {src!r} has no {what} column {wanted!r}; its columns are: "
                          f"{', '.join(names)} (name the right one with {flag}).", flag.removeprefix("--"))
    found = next((c for c in candidates if c in names), None)
    if found is None:
        raise ConfigError(f"the data set {src!r} has no {what} column named {' or '.join(candidates)}; its columns "
                          f"are: {', '.join(names)} (name the right one with {flag}).", flag.removeprefix("--"))
    return found


def _numbered(ds, column: str) -> tuple[np.ndarray, list[str]]:
    """A column as integers and the names they stand for: a ClassLabel's own, else the sorted distinct values."""
    feature, values = ds.features[column], list(ds[column])
    if hasattr(feature, "names"):
        return np.asarray(values, dtype=np.int64), list(feature.names)
    distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
    index = {v: i for i, v in enumerate(distinct)}
    return np.asarray([index[v] for v in values], dtype=np.int64), [str(v) for v in distinct]


def _dataset_table(ds, image_col: str, label_col: str, extra: tuple[str, ...] = ()) -> ImageTable:
    labels, names = _numbered(ds, label_col)
    return ImageTable(labels, names, lambda rows: list(ds.select(rows)[image_col]),
                      extra={c: _numbered(ds, c) for c in extra})


def read_dataset(src: str, image_column: str = "", label_column: str = "", revision: str | None = None,
                 extra: tuple[str, ...] = ()) -> ImageSource:
    """A ``save_to_disk`` folder or a Hub name (at `revision`, a commit), through ``datasets`` (the Hub only when
    it answers); `extra` columns are read as well (DomainNet's domain)."""
    ds = _datasets()
    p = Path(src)
    try:
        with hub.cache_only_unless_reachable(src):
            data = ds.load_from_disk(str(p)) if p.is_dir() else ds.load_dataset(src, revision=revision)
    except Exception as exc:  # noqa: BLE001 - any loader failure is one sentence naming the source
        raise ConfigError(f"cannot load the data set {src!r}: {str(exc).splitlines()[0].rstrip('.')}.",
                          "stream") from None
    parts = {"all": data} if isinstance(data, ds.Dataset) else dict(data.items())
    first = next(iter(parts.values()))
    names = list(first.column_names)
    image_col = _column(names, image_column, IMAGE_COLUMNS, "image", src, "--stream-image-column")
    label_col = _column(names, label_column, LABEL_COLUMNS, "label", src, "--stream-label-column")
    read = "+".join(f"{k}:{getattr(v, '_fingerprint', '')}" for k, v in parts.items())
    commit = None if p.is_dir() else hub_commit(src, revision)
    read = f"{commit} ({read})" if commit else read     # the Hub commit when known, and datasets' fingerprints
    missing = [c for c in extra if c not in names]
    if missing:
        raise ConfigError(f"the data set {src!r} has no column {missing[0]!r}; its columns are: {', '.join(names)}.",
                          "stream")
    return ImageSource(src, read, {k: _dataset_table(v, image_col, label_col, extra) for k, v in parts.items()},
                       image_col, label_col)


def hub_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit of a Hub data set as the local Hugging Face cache recorded it when it was downloaded (its refs
    file), read offline; `revision` itself when it is already a commit hash; None when not known."""
    from huggingface_hub import constants  # deferred: huggingface_hub, only for a Hub name

    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def read_images(src: str, image_column: str = "", label_column: str = "") -> ImageSource:
    p = Path(src)
    return read_image_folder(p) if is_image_folder(p) else read_dataset(src, image_column, label_column)


# -- decoding, once, into the cache -------------------------------------------------------------------------
def decode_image(image, size: int, channels: int = 3, crop: float = TEST_CROP) -> np.ndarray:
    """One image as the authors' test transform makes it: the shorter side to round(size / crop) (bilinear,
    antialiased), then the centre size x size; uint8 (C, size, size)."""
    from PIL import Image  # deferred: Pillow, only when images are decoded

    img = image.convert("RGB" if channels == 3 else "L")
    w, h = img.size
    short = max(size, int(round(size / crop)))
    scale = short / min(w, h)
    nw, nh = max(short, int(round(w * scale))), max(short, int(round(h * scale)))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - size) / 2)), int(round((nh - size) / 2))   # torchvision's CenterCrop
    arr = np.array(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def decode_rows(table: ImageTable, rows: list[int], size: int, channels: int, crop: float) -> torch.Tensor:
    """uint8 (N, C, size, size) of `rows`, decoded by a thread pool (Pillow releases the GIL while it works)."""
    out = torch.empty((len(rows), channels, size, size), dtype=torch.uint8)
    chunks = [rows[i:i + DECODE_CHUNK] for i in range(0, len(rows), DECODE_CHUNK)]

    from tqdm.auto import tqdm  # deferred: tqdm (a dependency of datasets), only while images are decoded

    bar = tqdm(total=len(rows), unit="img", desc="decoding images once", disable=len(rows) < PROGRESS_FROM)

    def work(k: int) -> None:
        images = table.read(chunks[k])
        for j, im in enumerate(images):
            out[k * DECODE_CHUNK + j] = torch.from_numpy(decode_image(im, size, channels, crop))
        bar.update(len(images))

    workers = max(1, min(8, os.cpu_count() or 1, len(chunks)))
    with bar, concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(len(chunks))))
    return out


def image_cache_path(payload: dict) -> Path:
    return cache_dir() / "images" / f"{cache_key(payload)}.pt"


def cached_images(payload: dict, decode: Callable[[], torch.Tensor], note: dict | None = None) -> torch.Tensor:
    """The uint8 tensor cached under `payload`'s key, decoded (once, under a lock, written atomically) when it
    is not there yet. `note` goes into the JSON beside it (what `cldash data list` reads)."""
    path = image_cache_path(payload)
    if not path.is_file():
        with file_lock(path.with_suffix(".lock")):
            if not path.is_file():               # another run may have decoded it while this one waited
                x = decode()
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                torch.save(x, tmp)
                os.replace(tmp, path)
                path.with_suffix(".json").write_text(json.dumps({**payload, **(note or {}), "bytes":
                                                                 path.stat().st_size}, default=str))
                return x
    return torch.load(path, weights_only=True, mmap=True)   # mapped: the tasks' copies are the only ones in memory


# -- the augmentation and the pixels, on the device ----------------------------------------------------------
def crop_flip_params(n: int, generator: torch.Generator, scale=CROP_SCALE, ratio=CROP_RATIO) -> torch.Tensor:
    """(n, 4) affine parameters (x scale with the flip's sign, y scale, x centre, y centre) in affine_grid's
    [-1, 1] coordinates, drawn as torchvision's RandomResizedCrop draws a square image's crop: area share in
    `scale`, log aspect ratio uniform in `ratio`, the first of 10 tries that fits, else the whole image."""
    u = torch.rand(n, CROP_ATTEMPTS, 5, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * u[..., 0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)          # shares of the side
    fits = (w <= 1) & (h <= 1)
    first = fits.to(torch.int8).argmax(1)
    pick = lambda t: t.gather(1, first[:, None])[:, 0]   # noqa: E731
    ok = fits.any(1)
    w, h = torch.where(ok, pick(w), 1.0), torch.where(ok, pick(h), 1.0)
    cx, cy = (2 * pick(u[..., 2]) - 1) * (1 - w), (2 * pick(u[..., 3]) - 1) * (1 - h)
    flip = torch.where(pick(u[..., 4]) < 0.5, -1.0, 1.0)
    return torch.stack([w * flip, h, cx, cy], 1).float()


def crop_flip(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Float images (N, C, H, W) cropped by `params` (crop_flip_params) and resized back to H x W (bilinear)."""
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)
    # drawn on the CPU (a seeded CPU generator, the same crops on every device); copied from pinned memory without
    # blocking, so a training step does not wait for the GPU to drain
    p = (params.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else params).to(dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def image_geometry(backbone, stream: str) -> tuple[int, int]:
    """(resolution, channels): what the backbone states, else what its transformers config says (an hf: image
    model's config has image_size and num_channels); no resolution at all is one sentence."""
    config = getattr(getattr(backbone, "net", None), "config", None)
    size = int(getattr(backbone, "image_size", 0) or getattr(config, "image_size", 0) or 0)
    if size <= 0:
        raise ConfigError(f"stream {stream} needs an image backbone that states its input resolution (a Hugging "
                          "Face image model: --backbone vit-b16-in21k, clip-vit-b16 or hf:NAME_OR_PATH).",
                          "backbone")
    return size, int(getattr(backbone, "num_channels", 0) or getattr(config, "num_channels", 0) or 3)


def seeded_subset(rows, limit: int, seed: int):
    """At most `limit` of the frame's rows (0: all), a seeded choice kept in the rows' order."""
    if limit and len(rows) > limit:
        pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + 1))[:limit]
        rows = rows.iloc[pick.sort().values.tolist()]
    return rows


class ImageStream(Stream):
    """Class-incremental tasks from an image source (see the module docstring)."""

    source: str = ""
    backbone_kinds = ("image-classification", "clip")   # a CLIP image tower scores through new or prompt heads
    default_backbone = "vit-b16-in21k"
    Options = ImageStreamOptions
    metrics = ("accuracy", "task_il_accuracy")
    evaluate = DigitsSplit.evaluate        # class-IL over the whole head, task-IL within task.classes

    def __init__(self, options, backbone):
        super().__init__(options, backbone)
        self.n_tasks = getattr(self, "n_tasks", None) or options.tasks         # a named benchmark fixes both
        self.center_crop = getattr(self, "center_crop", None) or options.center_crop
        self.setup_pixels(backbone)
        self.primary_metric = "accuracy" if options.evaluation == "class-il" else "task_il_accuracy"
        src = self.open_source()
        train, test = self.train_test(src)
        order = self.class_order(src, train)
        self.build_tasks(src, train, test, order)

    def setup_pixels(self, backbone) -> None:
        """The resolution and normalisation of the backbone, and the augmentation's generator."""
        self.size, self.channels = image_geometry(backbone, self.name)
        self.mean = torch.tensor(getattr(backbone, "image_mean", (0.5,) * self.channels)).view(1, -1, 1, 1)
        self.std = torch.tensor(getattr(backbone, "image_std", (0.5,) * self.channels)).view(1, -1, 1, 1)
        # the training augmentation's own generator: seeded from the run's seed (the engine seeds torch's global
        # generator with it first) and re-seeded from each task's batch generator (batches), so a resumed run
        # draws the same crops as one that was never stopped
        self.augment_generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)

    # -- what a named benchmark overrides ------------------------------------------------------------------
    def open_source(self) -> ImageSource:
        o = self.options
        return read_images(self.source, o.image_column, o.label_column)

    def train_test(self, src: ImageSource):
        """(train, test) DataFrames of (split, row, label): the source's two splits, or one cut once."""
        import pandas as pd  # deferred: pandas, only to cut a source's rows into splits

        frames = {name: pd.DataFrame({"split": name, "row": np.arange(len(t.labels)), "label": t.labels})
                  for name, t in src.splits.items()}
        return train_test(frames, self.options, src.name)

    def class_order(self, src: ImageSource, train) -> list[int]:
        return ordered_classes(sorted(set(train["label"].tolist())), self.options.class_order)

    # -- building the tasks --------------------------------------------------------------------------------
    def build_tasks(self, src: ImageSource, train, test, order: list[int]) -> None:
        o = self.options
        if len(order) < self.n_tasks:
            raise ConfigError(f"the data set {src.name!r} has {len(order)} classes, too few for {self.n_tasks} tasks; "
                              f"choose at most {len(order)} tasks.", f"{self.name}.tasks")
        names = next(iter(src.splits.values())).class_names
        position = {c: i for i, c in enumerate(order)}          # a class's output in the head = its place in order
        groups = np.array_split(np.arange(len(order)), self.n_tasks)
        picked = [(self._rows(train, order, g, o.max_train), self._rows(test, order, g, o.max_test)) for g in groups]
        x_train, x_test = self._decoded(src, [p[0] for p in picked]), self._decoded(src, [p[1] for p in picked])
        self.heads = {"stream": len(order)}
        label = lambda df: torch.tensor([position[c] for c in df["label"]], dtype=torch.long)  # noqa: E731
        for t, g in enumerate(groups):
            (tr, te), a, b = picked[t], x_train[t], x_test[t]
            self.tasks.append(Task(f"classes {', '.join(names[order[i]] for i in g[:3])}"
                                   f"{' ...' if len(g) > 3 else ''}", head="stream",
                                   classes=tuple(int(i) for i in g), train=Split(a, label(tr)),
                                   test=Split(b, label(te))))
        self.info = {"source": src.name, "revision": src.revision, "class_order": [names[c] for c in order],
                     "image_size": self.size, "center_crop": self.center_crop, **self.info}

    def _rows(self, df, order: list[int], group, limit: int):
        keep = seeded_subset(df[df["label"].isin([order[i] for i in group])], limit, self.options.seed)
        if len(keep) == 0:
            raise ConfigError(f"a task of stream {self.name} has no images in one of its splits.", "stream")
        return keep

    def _decoded(self, src: ImageSource, per_task) -> list[torch.Tensor]:
        """Each task's uint8 images of one split (every frame of `per_task` is of the same split): the rows the
        tasks need, decoded once into the cache or read from it."""
        split = str(per_task[0]["split"].iloc[0])
        table = src.splits[split]
        wanted = sorted(set().union(*(df["row"].tolist() for df in per_task)))
        payload = {"source": src.name, "revision": src.revision, "split": split, "size": self.size,
                   "channels": self.channels, "crop": round(self.center_crop, 6),
                   "columns": [src.image_column, src.label_column], "rows": cache_key({"rows": wanted})}
        x = cached_images(payload, lambda: decode_rows(table, wanted, self.size, self.channels, self.center_crop),
                          {"benchmark": self.name, "images": len(wanted)})
        where = np.full(len(table.labels), -1, dtype=np.int64)
        where[wanted] = np.arange(len(wanted))
        return [x[torch.from_numpy(where[df["row"].to_numpy()])] for df in per_task]

    # -- uint8 -> the model's input, on the device --------------------------------------------------------
    def pixels(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 (N, C, S, S) -> normalised float32 on x's device (augmented when training)."""
        f = x.float().div_(255.0)
        if train and self.options.augment == "crop-flip":
            f = crop_flip(f, crop_flip_params(len(f), self.augment_generator))
        return (f - self.mean) / self.std

    def to(self, device) -> Stream:
        self.mean, self.std = self.mean.to(device), self.std.to(device)   # once, not a copy per batch
        return super().to(device)

    def batches(self, task: Task, batch_size: int, generator: torch.Generator):
        self.augment_generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        yield from super().batches(task, batch_size, generator)

    def loss(self, model, batch: Split, task: Task) -> torch.Tensor:
        return super().loss(model, Split(self.pixels(batch.x, True), batch.y), task)

    @torch.no_grad()
    def logits(self, model, task: Task, batch_size: int) -> torch.Tensor:
        x = task.test.x     # converted a batch at a time: a 6,000-image test set never exists as float at once
        return torch.cat([model(self.pixels(x[i:i + batch_size], False), task.head)
                          for i in range(0, len(x), batch_size)])


@functools.lru_cache(maxsize=64)
def image_stream(spec: str) -> type[Stream]:
    """The stream class of ``hf-image:SOURCE`` (one per spec)."""
    src = spec[len(PREFIX):].strip()
    if not src:
        raise ConfigError("an image stream needs a data set after 'hf-image:' (an image folder, a saved data set "
                          "folder or a Hub name).", "stream")
    if not Path(src).is_dir():
        _datasets()   # a Hub name: said now if the package is missing, not once the run has started
        offline = hub.why_not(src)
        if offline and not offline.startswith("HF_HUB_OFFLINE"):   # offline, datasets reads its cache at once
            raise ConfigError(f"cannot load the data set {src!r}: it is not a local folder, and {offline} (set "
                              "HF_HUB_OFFLINE=1 to use a copy in the local Hugging Face cache, or give an image "
                              "folder).", "stream")
    label = Path(src).name if Path(src).is_dir() else src
    return type("ImageStream", (ImageStream,), {
        "name": spec, "label": f"Images: {label}", "source": src,
        "summary": "Class-incremental tasks from an image data set (a Hub name, a saved data set or an image "
                   "folder), decoded once to uint8 on the device."})


register_stream_prefix(PREFIX, image_stream, "hf-image:SOURCE for image data sets")
