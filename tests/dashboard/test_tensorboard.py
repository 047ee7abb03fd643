"""The TensorBoard export read back with TensorBoard's own reader: every scalar, score, task-end metric and
singular-value histogram equals what the store holds; a folder that cannot be written, or a missing tensorboard
package, is one sentence with nothing written."""

import io
import sys
import zipfile

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cldash.core.errors import UserError
from cldash.dashboard import tensorboard as TB
from cldash.dashboard.tensorboard import INSTALL, run_folder, write_tensorboard

KEEP_ALL = {"scalars": 0, "histograms": 0}    # the reader keeps a sample of each tag unless told to keep all


def read(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance=KEEP_ALL)
    events.Reload()
    return events


def points(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def f32(pairs) -> list[tuple[int, float]]:
    """What TensorBoard keeps of a scalar: float32."""
    return [(int(s), float(np.float32(v))) for s, v in pairs]


@pytest.fixture(scope="module")
def exported(seeded_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorboard") / "tb"
    runs = seeded_store.runs()
    folders = write_tensorboard(seeded_store, [r["id"] for r in runs], root)
    return root, runs, folders, {r["id"]: read(f) for r, f in zip(runs, folders)}


def test_one_folder_per_run_named_by_its_id_and_name_with_one_event_file(exported):
    root, runs, folders, _ = exported
    assert folders == [root / run_folder(r) for r in runs]
    assert sorted(p.name for p in root.iterdir()) == sorted(f.name for f in folders)   # no temporary left
    assert run_folder(runs[0]) == "run-1-lora-r=8-digits-rotate-seed-0" and runs[0]["name"]
    assert run_folder({"id": 7, "name": "", "seed": 2, "config": {"method": "full", "stream": "hf:/data/x y"}}) \
        == "run-7-full-hf-data-x-y-seed-2"
    for folder in folders:
        (event_file,) = folder.iterdir()
        assert event_file.name.startswith("events.out.tfevents.")


def test_scalars_and_every_tasks_score_are_the_stored_ones_at_their_steps(exported, seeded_store):
    _, runs, _, read_back = exported
    for run in runs:
        events = read_back[run["id"]]
        scalars = seeded_store.scalars(run["id"])
        loss = scalars[scalars.name == "loss"]
        assert len(loss) > 10 and points(events, "loss/train") == f32(zip(loss.step, loss.value))
        for (name, module), g in scalars.groupby(["name", "module"]):
            tag = f"{name}/{module}" if module else "loss/train" if name == "loss" else f"train/{name}"
            assert points(events, tag) == f32(zip(g.step, g.value)), tag
        evals = seeded_store.evaluations(run["id"])
        tags = {1: "accuracy/T1 · rotate 45°", 2: "accuracy/T2 · rotate 90°", 3: "accuracy/T3 · rotate 135°",
                0: "accuracy/general: upright digits"}
        assert set(evals.task) == set(tags)
        for task, tag in tags.items():
            rows = evals[evals.task == task].sort_values("step")
            assert rows.final.any() and not rows.final.all()    # task ends and anytime scores, one line
            assert points(events, tag) == f32(zip(rows.step, rows.value)), tag
        assert set(events.Tags()["scalars"]) >= set(tags.values()) | {"loss/train", "train/lr"}


def test_the_metrics_at_each_tasks_end_sit_at_its_step_and_end_at_the_runs_summary(exported, seeded_store):
    _, runs, _, read_back = exported
    for run in runs:
        events = read_back[run["id"]]
        final = seeded_store.evaluations(run["id"], final=True)
        ends = sorted(final[final.trained_through > 0].groupby("trained_through").step.max())
        assert ends == [40, 80, 120]
        R = seeded_store.accuracy_matrix(run["id"])["R"]
        assert points(events, "task end/acc") == f32([(40, R[1, 0]), (80, R[2, :2].mean()), (120, R[3].mean())])
        assert points(events, "task end/la") == f32([(s, np.mean([R[i, i - 1] for i in range(1, t + 1)]))
                                                    for t, s in enumerate(ends, start=1)])
        # undefined after one task: no point there
        assert [s for s, _ in points(events, "task end/bwt")] == [80, 120]
        for key in ("acc", "forgetting", "bwt", "la", "fwt", "general_retention"):
            assert points(events, f"task end/{key}")[-1] == f32([(120, run["summary"][key])])[0], key
        description = events.SummaryMetadata("task end/bwt").summary_description
        assert description.startswith("Backward transfer (BWT): (1/(T-1))")


def test_singular_values_are_one_histogram_per_module_at_every_logged_step(exported, seeded_store):
    _, runs, _, read_back = exported
    for run in runs:
        events = read_back[run["id"]]
        spectra = seeded_store.spectra(run["id"])
        series = spectra.groupby(["kind", "module"])
        assert {f"singular values · {k}/{m}" for k, m in series.groups} == set(events.Tags()["histograms"])
        assert len(series) == 24      # 12 modules, cumulative and task
        for (kind, module), g in series:
            read = events.Histograms(f"singular values · {kind}/{module}")
            assert [h.step for h in read] == g.step.tolist()
            for h, values in zip(read, g["values"]):
                v = np.asarray(values, dtype=np.float64)
                hist = h.histogram_value
                assert (hist.min, hist.max, hist.num) == (v.min(), v.max(), len(v))
                assert hist.sum == pytest.approx(v.sum(), rel=1e-12)
                counts, edges = np.histogram(v, bins=TB.HISTOGRAM_BUCKETS)
                assert list(hist.bucket) == counts.tolist()
                np.testing.assert_array_equal(hist.bucket_limit, edges[1:])
    # LoRA's cumulative update has rank 8: eight singular values at every step
    lora = read_back[1].Histograms("singular values · cumulative/vit.layers.0.attention.q_proj")
    assert {h.histogram_value.num for h in lora} == {8}


def test_writing_again_replaces_the_earlier_export_and_refuses_a_folder_of_other_files(seeded_store, tmp_path):
    root = tmp_path / "tb"
    (first,) = write_tensorboard(seeded_store, [1], root)
    (again,) = write_tensorboard(seeded_store, [1], root)
    assert again == first and len(list(first.iterdir())) == 1 and [p.name for p in root.iterdir()] == [first.name]
    (first / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds more than TensorBoard event files; give another folder"):
        write_tensorboard(seeded_store, [1, 2], root)
    assert (first / "notes.txt").read_text() == "mine" and [p.name for p in root.iterdir()] == [first.name]


@pytest.mark.parametrize("where, sentence", [
    ("FILE", "is a file; give a folder to write the TensorBoard event files into."),
    ("FILE/sub", "(Not a directory); give a folder that you can write to."),
    ("/proc/cldash-tensorboard/x", "cannot write /proc/cldash-tensorboard"),
    ("", "name a folder to write the TensorBoard event files into"),
])
def test_a_folder_that_cannot_be_written_is_one_sentence_and_nothing_is_written(seeded_store, tmp_path, where,
                                                                                 sentence):
    (tmp_path / "FILE").write_text("a file\n")
    before = set(tmp_path.rglob("*"))
    with pytest.raises(UserError, match="^[^\n]*$") as error:
        write_tensorboard(seeded_store, [1], where.replace("FILE", str(tmp_path / "FILE")))
    assert sentence in str(error.value)
    assert set(tmp_path.rglob("*")) == before


def test_a_failure_half_way_leaves_nothing_behind(seeded_store, tmp_path, monkeypatch):
    """The second run's file fails (a full disk, say): the first run's finished folder is not moved into
    place either, and the folders the export made are gone."""
    write = TB._write_events
    calls = []

    def full_disk(events, folder, tb):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(folder))
        write(events, folder, tb)

    monkeypatch.setattr(TB, "_write_events", full_disk)
    with pytest.raises(UserError, match=r"\(No space left on device\); give a folder that you can write to\.$"):
        write_tensorboard(seeded_store, [1, 2], tmp_path / "new" / "tb")
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_unknown_runs_and_a_missing_tensorboard_package_are_one_sentence(seeded_store, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="there is no run 99"):
        write_tensorboard(seeded_store, [1, 99], tmp_path / "tb")
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)   # not installed
    with pytest.raises(UserError) as error:
        write_tensorboard(seeded_store, [1], tmp_path / "tb")
    assert str(error.value) == INSTALL and "pip install 'cldash[tensorboard]'" in INSTALL
    assert list(tmp_path.iterdir()) == []


def test_the_zip_holds_the_written_folders_byte_for_byte(exported):
    root, _, folders, _ = exported
    with zipfile.ZipFile(io.BytesIO(TB.folders_zip(root, folders))) as z:
        files = {p.relative_to(root).as_posix(): p.read_bytes() for f in folders for p in f.iterdir()}
        assert sorted(z.namelist()) == sorted(files) and len(files) == 2
        assert all(z.read(name) == data for name, data in files.items())
