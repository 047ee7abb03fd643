"""The columns of an hf: stream's sources, read without reading the data (cldash.streams.hf.column_names), and the
check that refuses a source whose columns do not fit the model before a run is stored (HFStream.check_data).
The whole path through cldash run, cldash sweep and the Launch page's check is in tests/backbones/test_hf.py."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from cldash.core.errors import ConfigError
from cldash.streams.hf import HFStreamOptions, column_names, hf_stream

FRAME = pd.DataFrame({"prompt": ["succ 1", "succ 2"], "answer": ["2", "3"], "split": ["train", "test"]})


def _written(tmp_path, suffix: str) -> str:
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        FRAME.to_csv(path, index=False, encoding="utf-8-sig")      # with a BOM, as spreadsheet programs write it
    elif suffix == ".jsonl":
        path.write_text("\n" + "\n".join(json.dumps(r) for r in FRAME.to_dict("records")) + "\n")
    elif suffix == ".json":
        path.write_text(json.dumps(FRAME.to_dict("records")))
    else:
        FRAME.to_parquet(path)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_a_files_columns_are_its_header(tmp_path, suffix):
    assert column_names(_written(tmp_path, suffix)) == ("prompt", "answer", "split")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="needs the datasets package")
def test_a_saved_data_sets_columns_are_its_features(tmp_path):
    import datasets

    one = datasets.Dataset.from_pandas(FRAME.drop(columns="split"))
    one.save_to_disk(str(tmp_path / "one"))
    assert column_names(str(tmp_path / "one")) == ("prompt", "answer")
    # a DatasetDict: the columns every split has
    both = datasets.DatasetDict(train=one, test=one.remove_columns("answer"))
    both.save_to_disk(str(tmp_path / "both"))
    assert column_names(str(tmp_path / "both")) == ("prompt",)
    assert column_names(str(tmp_path)) is None          # a folder that is no saved data set: no answer, no check


def test_a_changed_file_is_read_again(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,answer\n")
    assert column_names(str(path)) == ("prompt", "answer")
    path.write_text("text,label,extra\n")
    assert column_names(str(path)) == ("text", "label", "extra")


def test_check_data_names_what_is_there_and_what_is_needed(tmp_path):
    stream = hf_stream(f"hf:{_written(tmp_path, '.csv')}")
    stream.check_data(HFStreamOptions(), "causal-lm")     # prompt and answer: fits
    with pytest.raises(ConfigError) as exc:
        stream.check_data(HFStreamOptions(), "sequence-classification")
    assert str(exc.value) == ("the data set data has the columns prompt, answer, split, but a sequence-classification "
                              "model learns from the columns 'text' and 'label': name the data's own with "
                              f"{stream.name}.text_column and {stream.name}.label_column.")
    assert exc.value.field == f"{stream.name}.text_column"
    stream.check_data(HFStreamOptions(text_column="prompt", label_column="answer"), "sequence-classification")
    # the general source is checked too, and the field is the first column missing
    (tmp_path / "general.csv").write_text("prompt,reply\nsucc 1,2\n")
    with pytest.raises(ConfigError, match="the data set general has the columns prompt, reply") as exc:
        stream.check_data(HFStreamOptions(general=str(tmp_path / "general.csv")), "causal-lm")
    assert exc.value.field == f"{stream.name}.answer_column"
