"""Any data set as a task stream: ``--stream hf:SOURCE[,SOURCE...]`` with an ``hf:`` backbone.

A SOURCE is a local CSV / JSON / JSON-lines / Parquet file (read with pandas), a folder written by
``datasets``' ``save_to_disk``, or a Hub data set name (both through the optional ``datasets``
package: ``pip install 'cldash[hf]'``; a Hub name is refused at once when the Hub cannot be reached,
rather than after the downloader's retries: cldash.core.hub). Either every source is one task (in the order
given), or one source holds several tasks in a task column (``--stream-task-column``). Which columns hold what
is a stream option:

- a causal language model learns ``prompt -> answer`` (loss on the answer tokens only; scored by
  exact match of the greedy answer and token accuracy, like the `skills` stream);
- a sequence classifier learns ``text -> label`` with its own head (scored by accuracy).

A file without splits is cut once into train and test by ``test_fraction`` (seeded), or by a
``split`` column when it has one. An optional ``general`` source (same columns) is scored
throughout as the general task, to see how much of what the model could do before survives.
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cldash.core import hub
from cldash.core.errors import ConfigError
from cldash.core.options import option
from cldash.core.text import with_article
from cldash.streams.base import Split, Stream, Task, register_stream_prefix
from cldash.streams.skills import IGNORE, LanguageStream

PREFIX = "hf:"
FILE_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


@dataclass
class HFStreamOptions:
    task_column: str = option("", "column naming each row's task (one source holding several tasks); empty: each "
                                  "source is one task")
    tasks: list[str] = option([], "the tasks to learn, in training order (task-column values, or the sources' names); "
                                  "empty: all of them, in the order given")
    prompt_column: str = option("prompt", "causal LM: the column holding the prompt")
    answer_column: str = option("answer", "causal LM: the column holding the answer to produce")
    text_column: str = option("text", "text classification: the column holding the input text")
    label_column: str = option("label", "text classification: the column holding the label")
    train_split: str = option("train", "split to train on (saved and Hub data sets, or a file's split column)")
    test_split: str = option("test", "split to score (saved and Hub data sets, or a file's split column)")
    test_fraction: float = option(0.2, "share of a file without splits kept for testing", low=0.0, low_open=True,
                                  high=0.9)
    max_train: int = option(2000, "training examples per task at most", low=1, high=10_000_000)
    max_test: int = option(300, "test examples per task at most", low=1, high=1_000_000)
    max_length: int = option(128, "tokens per example at most (a long prompt loses its beginning)", low=4,
                             high=32_768)
    general: str = option("", "a source with the same columns scored as the general task throughout; empty: none")
    seed: int = option(0, "seed of the file split and of the subsampling", low=0, high=2**31 - 1)


def source_name(src: str) -> str:
    p = Path(src)
    return p.stem if p.suffix in FILE_SUFFIXES else src.rstrip("/").rsplit("/", 1)[-1]


# the options naming the columns each kind of model learns from (HFStream.encode reads them)
COLUMNS = {"causal-lm": ("prompt_column", "answer_column"),
           "sequence-classification": ("text_column", "label_column")}


def column_names(src: str) -> tuple[str, ...] | None:
    """The columns of a source, read cheaply: a CSV file's header, a JSON-lines file's first record, a Parquet
    file's schema, a saved data set's features (its dataset_info.json), a Hub data set's features in the local
    cache or from the Hub. None where they cannot be had without loading the data (the run then reads it). A
    file's answer is kept while the file is unchanged, so a sweep's many runs read each header once."""
    p = Path(src)
    try:
        stat = p.stat()
    except OSError:
        return _hub_columns(src)
    return _file_columns(str(p), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _file_columns(path: str, mtime_ns: int, size: int) -> tuple[str, ...] | None:
    p = Path(path)
    try:
        if p.suffix == ".csv":
            with open(p, newline="", encoding="utf-8-sig") as fh:    # -sig: a BOM is not part of the first name
                return tuple(next(csv.reader(fh), []))
        if p.suffix == ".jsonl":
            with open(p, encoding="utf-8") as fh:
                first = next((line for line in fh if line.strip()), "{}")
            record = json.loads(first)
            return tuple(record) if isinstance(record, dict) else None
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq  # deferred: pyarrow (pandas' Parquet engine), only for a Parquet file

            return tuple(pq.read_schema(p).names)
        if p.suffix == ".json":   # one JSON document: its records have to be read to know their keys
            import pandas as pd  # deferred: pandas, only for a data set read from files

            return tuple(map(str, pd.read_json(p, dtype=False).columns))
        if p.is_dir():
            return _saved_columns(p)
    except (OSError, ValueError, UnicodeDecodeError):   # unreadable here: the run's own reading says why
        return None
    return None


def _saved_columns(folder: Path) -> tuple[str, ...] | None:
    """The columns of a folder written by datasets' save_to_disk (a Dataset, or a DatasetDict: those every split
    has), from the features in its JSON metadata, without importing datasets."""
    splits = [folder]
    if (folder / "dataset_dict.json").is_file():
        splits = [folder / name for name in json.loads((folder / "dataset_dict.json").read_text())["splits"]]
    columns = None
    for split in splits:
        info = split / "dataset_info.json"
        if not info.is_file():
            return None
        features = json.loads(info.read_text()).get("features")
        if not isinstance(features, dict):
            return None
        columns = [c for c in (columns or features) if c in features]
    return tuple(columns) if columns is not None else None


def _hub_columns(name: str) -> tuple[str, ...] | None:
    """A Hub data set's columns from its builder's features (its card or the local cache; nothing is
    downloaded but metadata); None where they cannot be had so."""
    try:
        ds = _datasets()
        with hub.cache_only_unless_reachable(name):
            features = ds.load_dataset_builder(name).info.features
    except Exception:  # noqa: BLE001 - no answer here is no check: the run loads the data and says what is wrong
        return None
    return tuple(features) if features else None


def _datasets():
    try:
        import datasets  # deferred: an extra (cldash[hf]), only for a saved or Hub data set
    except ImportError:
        raise ConfigError("reading saved or Hub data sets needs the optional datasets package: "
                          "pip install 'cldash[hf]' (local CSV, JSON and Parquet files need nothing more).",
                          "stream") from None
    return datasets


def read_source(src: str, o: HFStreamOptions) -> dict:
    """{split name: DataFrame} of one source; a file without a split column gives {"all": df}."""
    import pandas as pd  # deferred: pandas, only for a data set read from files

    p = Path(src)
    if p.suffix in FILE_SUFFIXES:
        if not p.is_file():
            raise ConfigError(f"the data file {src} does not exist.", "stream")
        if p.suffix == ".csv":
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
        elif p.suffix == ".parquet":
            df = pd.read_parquet(p)
        else:
            df = pd.read_json(p, lines=p.suffix == ".jsonl", dtype=False)
        if "split" in df.columns:
            return {name: g.drop(columns="split") for name, g in df.groupby("split", sort=False)}
        return {"all": df}
    ds = _datasets()
    try:
        with hub.cache_only_unless_reachable(src):
            data = ds.load_from_disk(str(p)) if p.is_dir() else ds.load_dataset(src)
    except Exception as exc:  # noqa: BLE001 - any loader failure is one sentence naming the source
        raise ConfigError(f"cannot load the data set {src!r}: {str(exc).splitlines()[0].rstrip('.')}.",
                          "stream") from None
    if isinstance(data, ds.Dataset):
        return {"all": data.to_pandas()}
    return {name: split.to_pandas() for name, split in data.items()}


def train_test(frames: dict, o: HFStreamOptions, src: str):
    """(train, test) DataFrames of one source."""
    if "all" in frames:
        df = frames["all"]
        order = torch.randperm(len(df), generator=torch.Generator().manual_seed(o.seed)).tolist()
        n_test = max(1, int(round(o.test_fraction * len(df))))
        return df.iloc[order[n_test:]], df.iloc[order[:n_test]]
    missing = [s for s in (o.train_split, o.test_split) if s not in frames]
    if missing:
        raise ConfigError(f"the data set {src!r} has no split {missing[0]!r}; its splits are: {', '.join(frames)}.",
                          "stream")
    return frames[o.train_split], frames[o.test_split]


def _pack(rows: list[tuple[list[int], list[int]]], pad: int) -> Split:
    """(prompt ids, answer ids) pairs as right-padded input ids and answer-only next-token labels."""
    width = max(len(p) + len(a) for p, a in rows)
    x = torch.full((len(rows), width), pad, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (p, a) in enumerate(rows):
        seq = p + a
        x[i, :len(seq)] = torch.tensor(seq)
        y[i, len(p) - 1:len(seq) - 1] = torch.tensor(a)
    return Split(x, y)


class HFStream(LanguageStream):
    """A stream built from data sets for an hf: backbone (see the module docstring)."""

    sources: tuple[str, ...] = ()
    backbone_kinds = ("causal-lm", "sequence-classification")
    default_backbone = "hf:"     # no default: the stream needs --backbone hf:NAME_OR_PATH
    Options = HFStreamOptions

    def __init__(self, options: HFStreamOptions, backbone):
        super().__init__(options, backbone)
        self.tokenizer = getattr(backbone, "tokenizer", None)
        if self.tokenizer is None:
            raise ConfigError(f"stream {self.name} needs a Hugging Face text model with a tokenizer "
                              "(--backbone hf:NAME_OR_PATH).", "backbone")
        self.causal = backbone.kind == "causal-lm"
        self.pad = self.tokenizer.pad_token_id
        if not self.causal:
            self.primary_metric = "accuracy"
        o = options
        named = self._named_frames()
        wanted = list(o.tasks) or list(named)
        unknown = [t for t in wanted if t not in named]
        if unknown:
            raise ConfigError(f"{self.name}.tasks: there is no task {unknown[0]!r}; the tasks are: "
                              f"{', '.join(named)}.", f"{self.name}.tasks")
        self.labels = self._label_index([df for pair in named.values() for df in pair]) if not self.causal else {}
        if not self.causal and len(self.labels) > backbone.num_labels:
            raise ConfigError(f"the data has {len(self.labels)} labels but the model's head has {backbone.num_labels} "
                              f"outputs; set --backbone-num-labels {len(self.labels)} (and --train-head true to "
                              "train the new head).", "backbone_options.num_labels")
        for name in wanted:
            train, test = named[name]
            self.tasks.append(Task(name, train=self.encode(train, o.max_train), test=self.encode(test, o.max_test)))
        if o.general:
            _, test = train_test(read_source(o.general, o), o, o.general)
            self.general.append(Task(f"general: {source_name(o.general)}", kind="general",
                                     test=self.encode(test, o.max_test)))

    @classmethod
    def check_data(cls, options: HFStreamOptions, backbone_kind: str) -> None:
        """Each source has the columns a model of `backbone_kind` learns from (and the task column, where one is
        named), by their names alone (column_names): a file with text/label for a causal LM is one sentence
        before anything is stored."""
        needed = COLUMNS.get(backbone_kind)
        if needed is None:
            return
        for src in (*cls.sources, *([options.general] if options.general else [])):
            columns = column_names(src)
            if columns is None:
                continue
            if options.task_column and src in cls.sources and options.task_column not in columns:
                raise ConfigError(f"the task column {options.task_column!r} is not in the data set "
                                  f"{source_name(src)}, whose columns are: {', '.join(columns)}.",
                                  f"{cls.name}.task_column")
            missing = [key for key in needed if getattr(options, key) not in columns]
            if missing:
                wanted = " and ".join(repr(getattr(options, key)) for key in needed)
                raise ConfigError(f"the data set {source_name(src)} has the columns {', '.join(columns)}, but "
                                  f"{with_article(backbone_kind)} model learns from the columns {wanted}: name the "
                                  f"data's own with {' and '.join(f'{cls.name}.{key}' for key in needed)}.",
                                  f"{cls.name}.{missing[0]}")

    def _named_frames(self) -> dict:
        o = self.options
        pairs = {source_name(s): train_test(read_source(s, o), o, s) for s in self.sources}
        if not o.task_column:
            return pairs
        named: dict = {}
        for train, test in pairs.values():
            if o.task_column not in train.columns:
                raise ConfigError(f"the task column {o.task_column!r} is not in the data; its columns are: "
                                  f"{', '.join(map(str, train.columns))}.", f"{self.name}.task_column")
            for value in dict.fromkeys(train[o.task_column].astype(str)):
                named[value] = (train[train[o.task_column].astype(str) == value],
                                test[test[o.task_column].astype(str) == value])
        return named

    def _columns(self, df, *cols) -> None:
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ConfigError(f"the data has no column {missing[0]!r} "
                              f"(its columns are: {', '.join(map(str, df.columns))}); "
                              f"name the right one with --stream-{'prompt' if self.causal else 'text'}-column and "
                              f"--stream-{'answer' if self.causal else 'label'}-column.", "stream_options")

    def _label_index(self, frames) -> dict:
        col = self.options.label_column
        for df in frames:
            self._columns(df, self.options.text_column, col)
        values = sorted({v for df in frames for v in df[col].tolist()}, key=lambda v: (str(type(v)), v))
        if all(isinstance(v, int) or (isinstance(v, str) and v.isdigit()) for v in values):
            return {v: int(v) for v in values}       # integer labels are the head's own indices
        return {v: i for i, v in enumerate(values)}

    def encode(self, df, limit: int) -> Split:
        o = self.options
        if len(df) > limit:
            df = df.iloc[torch.randperm(len(df), generator=torch.Generator().manual_seed(o.seed + 1))[:limit].sort()
                         .values.tolist()]
        if len(df) == 0:
            raise ConfigError(f"a task of stream {self.name} has no examples in one of its splits.", "stream")
        tok = self.tokenizer
        if self.causal:
            self._columns(df, o.prompt_column, o.answer_column)
            eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
            rows = []
            for prompt, answer in zip(df[o.prompt_column].astype(str), df[o.answer_column].astype(str)):
                a = tok(answer, add_special_tokens=False)["input_ids"] + eos
                p = tok(prompt)["input_ids"]
                p = p[-max(1, o.max_length - len(a)):]               # keep the end of a long prompt
                rows.append((p, a[:o.max_length - 1]))
            return _pack(rows, self.pad)
        self._columns(df, o.text_column, o.label_column)
        enc = tok(df[o.text_column].astype(str).tolist(), truncation=True, max_length=o.max_length,
                  padding="longest", return_tensors="pt")
        x = torch.where(enc["attention_mask"].bool(), enc["input_ids"], torch.full_like(enc["input_ids"], self.pad))
        return Split(x, torch.tensor([self.labels[v] for v in df[o.label_column].tolist()], dtype=torch.long))

    def loss(self, model, batch: Split, task: Task) -> torch.Tensor:
        return super().loss(model, batch, task) if self.causal else Stream.loss(self, model, batch, task)

    @torch.no_grad()
    def evaluate(self, model, task: Task, batch_size: int = 1024) -> dict[str, float]:
        return super().evaluate(model, task, batch_size) if self.causal else Stream.evaluate(self, model, task,
                                                                                              batch_size)

    def reordered(self, order: list[int]) -> dict:
        """The stream options that learn the same tasks in `order` (positions in the current order)."""
        return {"tasks": [self.tasks[i].name for i in order]}


@functools.lru_cache(maxsize=64)
def hf_stream(spec: str) -> type[Stream]:
    """The stream class of ``hf:SOURCE[,SOURCE...]`` (one per spec, so a spec names one class)."""
    sources = tuple(s.strip() for s in spec[len(PREFIX):].split(",") if s.strip())
    if not sources:
        raise ConfigError("a Hugging Face stream needs at least one data set after 'hf:' (a CSV/JSON file, a saved "
                          "data set folder or a Hub name).", "stream")
    for s in sources:
        if Path(s).suffix in FILE_SUFFIXES:
            if not Path(s).is_file():
                raise ConfigError(f"the data file {s} does not exist.", "stream")
            continue
        _datasets()   # a saved or Hub data set: said now if the package is missing, not once the run has started
        offline = hub.why_not(s)
        if offline and not offline.startswith("HF_HUB_OFFLINE"):   # offline, datasets reads its cache at once
            raise ConfigError(f"cannot load the data set {s!r}: it is not a local file or folder, and {offline} "
                              "(set HF_HUB_OFFLINE=1 to use a copy in the local Hugging Face cache, or give CSV, "
                              "JSON or Parquet files).", "stream")
    return type("HFStream", (HFStream,), {
        "name": spec, "label": f"Data sets: {', '.join(map(source_name, sources))}", "sources": sources,
        "summary": "Tasks from data sets for a Hugging Face model (prompt -> answer for a causal LM, text -> label "
                   "for a classifier)."})


register_stream_prefix(PREFIX, hf_stream, "hf:SOURCE[,SOURCE...] for data sets")
