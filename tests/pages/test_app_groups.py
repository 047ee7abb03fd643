"""Run groups (sweeps) on the Runs and Compare pages under Streamlit's AppTest, on a store written
directly (no training): a sweep of LoRA rank 4 and 8 over seeds, a claims run and a plain run."""

from pathlib import Path

import numpy as np
import pytest

from cldash.config import resolve
from cldash.measures.metrics import summarize
from cldash.store import Store

from test_app import app

ROOT = Path(__file__).resolve().parents[2]


def stored_run(store, seed, R, general, group=None, rank=8):
    """A finished run with final matrix R (rows 0..2 over tasks a, b), its general column and summary."""
    config = resolve({"method": "lora", "seed": seed, "steps_per_task": 10, "method_options": {"rank": rank},
                      "stream_options": {"angles": [45, 90]}}).to_dict()
    rid = store.create_run(config, status="finished", group_key=group)
    store.write_structure(rid, [{"position": 1, "name": "a", "kind": "stream"},
                                {"position": 2, "name": "b", "kind": "stream"},
                                {"position": 0, "name": "general", "kind": "general"}], [])
    w = store.writer(rid)
    for i, row in enumerate(R):
        for pos, v in zip([1, 2, 0], [*row, general[i]]):
            w.evaluation(10 * i, i, pos, {"accuracy": float(v)}, True)
    w.flush(num_tasks=2, progress=1.0)
    store.update_run(rid, summary=summarize(np.array(R), {"general": general}))
    return rid


def matrix(seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(0.1, 0.9, (3, 2)), 3).tolist()


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """Runs 1-6: sweep:ranks (rank 4 seeds 0-2, rank 8 seeds 0-2); 7: claims; 8: no group."""
    store = Store(str(tmp_path_factory.mktemp("groups") / "runs.db"))
    for rank in (4, 8):
        for seed in range(3):
            stored_run(store, seed, matrix(10 * rank + seed), [0.9, 0.8, 0.7], "sweep:ranks", rank)
    stored_run(store, 0, matrix(1), [0.9, 0.5, 0.4], "claims")
    stored_run(store, 0, matrix(2), [0.9, 0.6, 0.5])
    return store


def heatmaps(at) -> list[dict]:
    """The accuracy matrices on the page (the difference figure has a symmetric scale, not 0 to 1)."""
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [s for s in specs if s["data"][0]["type"] == "heatmap" and s["data"][0].get("zmin") == 0]


def z_of(spec) -> np.ndarray:
    """A heatmap's z: Plotly's JSON holds arrays as typed arrays ({"dtype", "bdata", "shape"}) or lists."""
    import base64

    z = spec["data"][0]["z"]
    if isinstance(z, dict) and "bdata" in z:
        out = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        return out.reshape([int(x) for x in str(z["shape"]).split(",")]) if z.get("shape") else out
    return np.array(z, dtype=float)


def test_runs_page_shows_filters_and_selects_a_group(sweep_store, monkeypatch):
    at = app(sweep_store.display, monkeypatch)
    df = at.dataframe[0].value
    assert df["group"].tolist() == ["sweep ranks"] * 6 + ["claims", ""]

    group_filter = at.multiselect(key="runs_group_filter")
    assert group_filter.options == ["claims (1)", "sweep ranks (6)", "no group"]   # the newest group first
    group_filter.set_value(["sweep:ranks"]).run()
    assert at.dataframe[0].value["id"].tolist() == [1, 2, 3, 4, 5, 6]
    group_filter.set_value([""]).run()
    assert at.dataframe[0].value["id"].tolist() == [8]
    group_filter.set_value([]).run()

    at.selectbox(key="runs_group_pick").set_value("sweep:ranks").run()
    button = at.button(key="runs_group_select")
    assert button.label == "Select the 6 runs of sweep ranks"
    button.click().run()
    assert not at.exception
    assert at.sidebar.multiselect[0].value == [1, 2, 3, 4, 5, 6]
    assert at.query_params["runs"] == "1,2,3,4,5,6"
    assert "**6 selected:** #1, #2, #3, #4, #5, #6" in [m.value for m in at.markdown]
    at.run()              # the table took the new selection as its own: the next run keeps it
    assert at.sidebar.multiselect[0].value == [1, 2, 3, 4, 5, 6]
    at.switch_page("pages/compare.py").run()      # the selection goes with the user
    assert at.dataframe[0].value["id"].tolist() == [1, 2, 3, 4, 5, 6]


def test_compare_page_takes_a_group_and_shows_one_row_per_setting(sweep_store, monkeypatch):
    at = app(sweep_store.display, monkeypatch, "pages/compare.py", runs=[8])
    source = at.selectbox(key="compare_from_widget")
    assert source.options == ["the selected runs", "claims · 1 runs", "sweep ranks · 6 runs"]
    assert at.dataframe[0].value["id"].tolist() == [8]       # a few selected runs: today's page, metrics first
    source.set_value("sweep:ranks").run()
    assert not at.exception
    assert at.caption[0].value == "6 runs · 2 settings × 3 seeds · 6 finished"

    # the headline: one row per setting with its seed count and the mean ± sd of each metric
    seeds = at.dataframe[0].value.set_index("setting")
    assert seeds["seeds"].to_dict() == {"lora r=4 single · digits-rotate": 3, "lora r=8 single · digits-rotate": 3}
    bwt = [sweep_store.get_run(i)["summary"]["bwt"] for i in (4, 5, 6)]
    assert seeds.loc["lora r=8 single · digits-rotate", "bwt"] == f"{np.mean(bwt):.3f} ± {np.std(bwt, ddof=1):.3f}"
    assert at.dataframe[1].value["id"].tolist() == [1, 2, 3, 4, 5, 6]     # then every run's metrics

    # one mean matrix per setting, cell by cell over its seeds
    drawn = heatmaps(at)
    # a short title on the chart; its whole label (the setting and "mean of 3 seeds") heads every cell's hover
    assert len(drawn) == 2 and drawn[0]["layout"]["title"]["text"] == "lora r=4 single"
    assert "lora r=4 single · digits-rotate · mean of 3 seeds" in drawn[0]["data"][0]["hovertemplate"]
    expected = np.mean([sweep_store.accuracy_matrix(i)["R"] for i in (1, 2, 3)], axis=0)
    np.testing.assert_allclose(z_of(drawn[0])[:, :2], expected)
    np.testing.assert_allclose(z_of(drawn[0])[:, 2], [0.9, 0.8, 0.7])
    assert [s.label for s in at.selectbox][-2:] == ["setting A", "setting B"]

    at.radio(key="cmp-matrix-kind").set_value("one per run").run()
    assert len(heatmaps(at)) == 6
    assert [s.label for s in at.selectbox][-2:] == ["run A", "run B"]

    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/compare.py").run()      # the choice outlives a page switch
    assert at.selectbox(key="compare_from_widget").value == "sweep:ranks"


def test_compare_page_draws_many_matrices_a_page_at_a_time(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "runs.db"))
    ids = [stored_run(store, seed, matrix(seed), [0.9, 0.8, 0.7], "sweep:seeds") for seed in range(14)]
    at = app(store.display, monkeypatch, "pages/compare.py", runs=ids)
    assert len(heatmaps(at)) == 1                     # one setting: its mean over the 14 seeds
    at.radio(key="cmp-matrix-kind").set_value("one per run").run()
    page = at.selectbox(key="cmp-matrix-page")
    assert page.options == ["1 to 12 of 14", "13 to 14 of 14"]
    drawn = heatmaps(at)
    assert len(drawn) == 12 and drawn[0]["layout"]["title"]["text"].startswith("#1 ")
    page.set_value(1).run()
    drawn = heatmaps(at)
    assert [d["layout"]["title"]["text"].split()[0] for d in drawn] == ["#13", "#14"]
    np.testing.assert_allclose(z_of(drawn[1])[:, :2], store.accuracy_matrix(ids[13])["R"])
    everything = at.get("download_button")
    assert any(b.proto.label == "all 14 matrices as CSV" for b in everything)


def test_without_groups_the_compare_page_has_no_runs_from_choice(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "runs.db"))
    a, b = stored_run(store, 0, matrix(0), [0.9, 0.8, 0.7]), stored_run(store, 0, matrix(1), [0.9, 0.8, 0.7], rank=4)
    at = app(store.display, monkeypatch, "pages/compare.py", runs=[a, b])
    assert [s.label for s in at.selectbox] == ["run A", "run B"]
    assert len(heatmaps(at)) == 2 and at.dataframe[0].value["id"].tolist() == [a, b]
    import json  # every chart's PNG is named after the chart and its runs, never Plotly's "plot-image.png"
    names = [json.loads(c.proto.config)["toImageButtonOptions"]["filename"] for c in at.get("plotly_chart")]
    assert f"cldash-compare-matrix-run-{a}" in names and f"cldash-compare-headline-runs-{a}-{b}" in names
    assert all(n.startswith("cldash-compare-") for n in names)
    at = app(store.display, monkeypatch)
    assert not [s for s in at.selectbox if s.key == "runs_group_pick"]


def test_a_lesson_steps_link_to_compare_shows_its_selected_runs_not_the_group_shown_before(sweep_store, monkeypatch):
    at = app(sweep_store.display, monkeypatch, "pages/compare.py", runs=[8])
    at.selectbox(key="compare_from_widget").set_value("sweep:ranks").run()
    at.switch_page("pages/runs.py").run()
    at.query_params["section"] = "metrics"       # a step's link (pages/links.py): the runs it selected, at Metrics
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert at.selectbox(key="compare_from_widget").value == ""
    assert at.dataframe[0].value["id"].tolist() == [8]
    at.selectbox(key="compare_from_widget").set_value("sweep:ranks").run()    # the group is still the user's to pick
    assert at.selectbox(key="compare_from_widget").value == "sweep:ranks" and len(at.dataframe) >= 2
