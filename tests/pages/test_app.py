"""Every dashboard page under Streamlit's AppTest, against a store seeded with real short runs:
no page raises, and the numbers on screen are the stored ones."""

import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cldash.methods import REGISTRY
from cldash.store import Store

from conftest import keep_runs_queued

pytestmark = pytest.mark.floors   # run again at the lowest declared versions (.ci/floors.sh)

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["pages/runs.py", "pages/lessons.py", "pages/launch.py", "pages/live.py", "pages/compare.py",
         "pages/claims.py", "pages/spectra.py", "pages/ranks.py", "pages/methods.py", "pages/orders.py"]


def v2_navigation(monkeypatch) -> None:
    """Run AppTest like a served dashboard after its first page load.

    AppTest resets Streamlit's "pages/ folder" mode at every run, so each run would start in the
    old multipage mode and the page's `through_app()` would spend the run re-routing it (losing a
    button click). A real server leaves that mode once, on its first page load; the browser test
    covers that first load.
    """
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", patched)


def app(db, monkeypatch, page=None, runs=None) -> AppTest:
    monkeypatch.setenv("CLDASH_DB", str(db))
    v2_navigation(monkeypatch)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if runs:
        at.query_params["runs"] = ",".join(map(str, runs))
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def array(value) -> np.ndarray:
    """Plotly's JSON holds numpy arrays as typed arrays ({"dtype", "bdata", "shape"}) or as lists."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return out.reshape([int(x) for x in str(shape).split(",")]) if shape else out
    return np.array(value, dtype=float)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_seeded_store(seeded_store, monkeypatch, page):
    at = app(seeded_store.display, monkeypatch, page, runs=[1, 2])
    assert not at.error, [e.value for e in at.error]


def test_runs_page_shows_stored_metrics(seeded_store, monkeypatch):
    at = app(seeded_store.display, monkeypatch)
    df = at.dataframe[0].value
    assert df["method"].tolist() == ["lora", "full"] and (df["status"] == "finished").all()
    run = seeded_store.runs()[0]
    assert df["final acc"].iloc[0] == pytest.approx(run["summary"]["acc"])
    assert df["forgetting"].iloc[1] == pytest.approx(seeded_store.runs()[1]["summary"]["forgetting"])
    assert df["weights"].tolist() == ["shipped", "shipped"]    # the backbone weights each run used


def test_runs_page_counts_the_runs_each_action_takes_and_leaves_missing_metrics_empty(tmp_path, monkeypatch):
    from cldash.config import resolve

    no_starts(monkeypatch)
    db = tmp_path / "runs.db"
    store = Store(str(db))
    config = resolve({"method": "lora"}).to_dict()
    ids = [store.create_run(config, status=status) for status in ("finished", "failed", "queued", "queued")]
    store.update_run(ids[0], summary={"acc": 0.5, "bwt": -0.25, "forgetting": 0.25, "general_retention": 0.75})
    at = app(db, monkeypatch, runs=ids)
    table = at.dataframe[0]
    assert table.value["final acc"].tolist()[:1] == [0.5] and table.value["final acc"].isna().sum() == 3
    assert table.proto.placeholder == "" and table.proto.HasField("placeholder")   # empty cells, not "None"
    assert at.button(key="runs-cancel").label == "Cancel 2 active"
    assert at.checkbox(key="runs-delete-confirm").label == "I want to delete 2 of the 4 selected runs"
    assert "2 are still active: cancel them first." in [c.value for c in at.caption]
    at.button(key="runs-cancel").click().run()
    assert [store.get_run(i)["status"] for i in ids] == ["finished", "failed", "cancelled", "cancelled"]
    # the message and the stored step say the same step
    assert [(store.get_run(i)["error"], store.get_run(i)["step"]) for i in ids[2:]] == [("cancelled at step 0", 0)] * 2
    assert at.button(key="runs-cancel").label == "Cancel 0 active" and at.button(key="runs-cancel").disabled
    assert at.checkbox(key="runs-delete-confirm").label == "I want to delete the 4 selected runs"
    assert not any("still active" in c.value for c in at.caption)


def test_the_dashboard_hides_streamlits_deploy_button_and_uses_material_icons():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"     # no Deploy, rerun or clear-cache entries
    from streamlit.material_icon_names import ALL_MATERIAL_ICONS

    sources = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    icons = [m for path in sources for m in re.findall(r'icon=":material/(\w+):"', path.read_text())]
    assert len(icons) >= 15 and set(icons) <= ALL_MATERIAL_ICONS
    nav = (ROOT / "app.py").read_text()
    assert not re.search(r'icon="[^:"]', nav)     # no emoji: they are boxes on machines without emoji fonts


def test_selection_persists_across_pages_through_the_sidebar(seeded_store, monkeypatch):
    at = app(seeded_store.display, monkeypatch, runs=[2])
    assert at.sidebar.multiselect[0].value == [2]
    at.switch_page("pages/compare.py").run()
    assert at.sidebar.multiselect[0].value == [2]
    assert at.dataframe[0].value["id"].tolist() == [2]


def test_compare_page_draws_the_stored_matrices_and_metrics(seeded_store, monkeypatch):
    at = app(seeded_store.display, monkeypatch, "pages/compare.py", runs=[1, 2])
    specs = charts(at)
    heatmaps = [s for s in specs if s["data"][0]["type"] == "heatmap" and s["data"][0].get("zmin") == 0]
    assert len(heatmaps) == 2
    m = seeded_store.accuracy_matrix(1)
    z = array(heatmaps[0]["data"][0]["z"])
    np.testing.assert_allclose(z[:, :3], m["R"])
    metrics = at.dataframe[0].value.set_index("id")
    for run in seeded_store.runs():
        assert metrics.loc[run["id"], "bwt"] == pytest.approx(run["summary"]["bwt"])
    assert any(s["data"][-1].get("name") == "Pareto front" or len(s["data"]) >= 2 for s in specs)
    assert "Backward transfer" in " ".join(e.value for e in at.markdown)


def test_compare_page_writes_the_runs_for_tensorboard_with_errors_beside_the_field(seeded_store, monkeypatch,
                                                                                    tmp_path):
    import sys

    from cldash.dashboard.tensorboard import INSTALL, run_folder

    at = app(seeded_store.display, monkeypatch, "pages/compare.py", runs=[1, 2])
    (tmp_path / "FILE").write_text("a file\n")
    at.text_input(key="cmp-tb-dir").input(str(tmp_path / "FILE")).run()
    at.button(key="cmp-tb-write").click().run()
    assert [e.value for e in at.error] == [f"Nothing was written: {tmp_path / 'FILE'} is a file; give a folder to "
                                           "write the TensorBoard event files into."]
    assert not at.success and [p.name for p in tmp_path.iterdir()] == ["FILE"]
    out = tmp_path / "tb"
    at.text_input(key="cmp-tb-dir").input(str(out)).run()
    at.button(key="cmp-tb-write").click().run()
    assert not at.error and not at.exception
    folders = [run_folder(r) for r in seeded_store.runs(ids=[1, 2])]
    assert sorted(p.name for p in out.iterdir()) == sorted(folders)
    assert at.success[0].value == f"Wrote 2 run folders into {out}: {', '.join(folders)}. Open them with:"
    assert at.code[0].value == f"tensorboard --logdir {out}"
    assert "Download them (zip)" in [b.proto.label for b in at.get("download_button")]
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)   # not installed
    at.button(key="cmp-tb-write").click().run()
    assert at.error[0].value == f"Nothing was written: {INSTALL}"


def test_spectra_page_heatmap_matches_the_stored_spectrum(seeded_store, monkeypatch):
    at = app(seeded_store.display, monkeypatch, "pages/spectra.py", runs=[1])
    module = at.selectbox[2].value
    heat = charts(at)[0]["data"][0]
    stored = seeded_store.spectra(1, module=module, kind="cumulative")
    last = np.asarray(stored["values"].iloc[-1], dtype=float)
    z = array(heat["z"])
    np.testing.assert_allclose(z[: len(last), -1], np.log10(last), rtol=1e-5)
    at.selectbox[2].select("layer × module grid").run()
    assert not at.exception
    grid = charts(at)[0]["data"][0]
    assert array(grid["z"]).shape == (2, 6)


def test_ranks_page_shows_rank_lines_and_read_outs(seeded_store, monkeypatch):
    at = app(seeded_store.display, monkeypatch, "pages/ranks.py", runs=[1])
    specs = charts(at)
    assert len(specs[0]["data"]) == 12                    # one line per adapted module
    assert max(array(t["y"]).max() for t in specs[0]["data"]) == 8    # LoRA rank 8
    assert "norm of A" in at.selectbox[-1].options          # lora_A_norm, by its readable name


def test_live_page_draws_loss_anytime_scores_and_matrix(seeded_store, monkeypatch):
    at = app(seeded_store.display, monkeypatch, "pages/live.py", runs=[1])
    titles = [s["layout"].get("title", {}).get("text", "") for s in charts(at)]
    assert "training loss" in titles and "accuracy matrix so far" in titles
    assert any("score of every task" in t for t in titles)
    assert any(c.value.startswith("backbone: shipped vit-tiny weights (sha256 ") for c in at.caption)


def test_methods_page_has_a_card_per_registered_method(seeded_store, monkeypatch):
    at = app(seeded_store.display, monkeypatch, "pages/methods.py")
    text = " ".join(e.value for e in at.markdown)
    titles = [h.value for h in at.subheader]
    for name, cls in REGISTRY.items():
        assert cls.label in titles or f"{cls.label} · reconstruction" in titles
        assert f"[{cls.label}](#method-{name})" in at.markdown[0].value    # the table of contents links each card
    assert {h.proto.anchor for h in at.subheader} >= {f"method-{name}" for name in REGISTRY}
    # one equation per method that has one, and the replay / EWC card's
    assert len(at.latex) == sum(1 for c in REGISTRY.values() if c.equation) + 1
    assert "Replay and EWC · for any method" in titles and "SLICE (reconstruction) · reconstruction" not in titles
    assert "LoRETTA (rep) · reconstruction" in titles      # not "LoRETTA (rep) (reconstruction)"
    # both regimes, for every method with a paper preset: a table of common against paper with the sources
    from cldash.methods import paper_presets

    PAPER = paper_presets()
    assert text.count("**Two regimes.**") == len(PAPER)
    # the options tables are static (their "default from" column wraps instead of being cut off)
    lora = next(t.value for t in at.table if "rank" in t.value.index)
    assert "default from" in lora.columns and lora.loc["rank", "default"] == "8"
    tables = [t.value for t in at.table if "paper" in t.value.columns]
    assert len(tables) == len(PAPER)
    codyra = next(t for t in tables if "runner_codyra.sh" in " ".join(t["source"]))
    row = codyra[codyra.option == "lr"].iloc[0]
    assert (row.common, row.paper) == ("0.005", "0.0005")


def test_launch_form_shows_errors_next_to_the_field_and_launches_nothing(tmp_path, monkeypatch):
    db = tmp_path / "launch.db"
    at = app(db, monkeypatch, "pages/launch.py")
    at.number_input(key="m-lora-cldash defaults-rank").set_value(100)
    at.button(key="launch-button").click().run()
    errors = [e.value for e in at.error]
    # the field's label, not the option's name (lora.rank) that the command line's messages use
    assert any(e.startswith("rank 100 is larger than layer") for e in errors), errors
    assert any(e.startswith("Nothing was launched") for e in errors)
    assert Store(str(db)).runs() == []


def test_launch_form_with_no_method_says_why_its_button_is_greyed_out(tmp_path, monkeypatch):
    at = app(tmp_path / "launch.db", monkeypatch, "pages/launch.py")
    assert not at.button(key="launch-button").disabled
    assert not any("Pick at least one method" in m.value for m in at.markdown)
    next(m for m in at.multiselect if m.label == "Methods").set_value([]).run()
    assert at.button(key="launch-button").disabled
    assert any(m.value == "Pick at least one method above to launch." for m in at.markdown)


def test_launch_form_shows_every_error_at_once_each_under_its_label(tmp_path, monkeypatch):
    db = tmp_path / "launch.db"
    at = app(db, monkeypatch, "pages/launch.py")
    at.text_input(key="launch-seeds").set_value("two")
    at.number_input(key="run-steps_per_task").set_value(0)
    at.text_input(key="run-lr").set_value("fast")
    at.number_input(key="m-lora-cldash defaults-rank").set_value(0)
    at.button(key="launch-button").click().run()
    errors = [e.value for e in at.error]
    assert errors == [
        "seeds must be whole numbers or ranges such as 0-4 or 0,1,2 (got 'two').",
        "steps per task must be an integer between 1 and 10000000 (got 0).",
        "learning rate must be a number (> 0.0 and <= 10.0) (got 'fast').",
        "rank must be an integer between 1 and 65536 (got 0).",
        "Nothing was launched: 4 values to fix above."], errors
    assert not any("lora.rank" in e or "steps_per_task" in e or e.startswith("lr ") for e in errors)
    assert Store(str(db)).runs() == []
    # the sweep section too: the seeds' error does not hide the grid's, each under its own field
    at.toggle(key="sweep-on").set_value(True)
    at.text_area(key="sweep-grid").set_value("rank")
    at.run()
    assert [e.value for e in at.error] == [
        "seeds must be whole numbers or ranges such as 0-4 or 0,1,2 (got 'two').",
        "write an option as NAME=VALUE (a grid as NAME=V1,V2,...), e.g. rank=4,8,16 (got 'rank')."]


def test_launch_form_launches_once_on_a_double_click(tmp_path, monkeypatch):
    db = tmp_path / "launch.db"
    at = app(db, monkeypatch, "pages/launch.py")
    at.number_input(key="run-steps_per_task").set_value(5)
    at.text_input(key="stream-digits-rotate-angles").set_value("90")
    at.multiselect(key="launch-methods").select("full")
    at.run()
    at.button(key="launch-button").click().run()
    at.button(key="launch-button").click().run()
    store = Store(str(db))
    runs = store.runs()
    assert sorted(r["method"] for r in runs) == ["full", "lora"]
    assert any("Launched runs" in s.value for s in at.success)
    deadline = time.time() + 120
    while time.time() < deadline and any(r["status"] != "finished" for r in store.runs()):
        time.sleep(0.3)
    assert [r["status"] for r in store.runs()] == ["finished", "finished"]
    assert store.runs()[0]["config"]["steps_per_task"] == 5


def test_launch_form_passes_replay_and_ewc_to_every_run(tmp_path, monkeypatch):
    no_starts(monkeypatch)   # store the runs, start none
    db = tmp_path / "aids.db"
    at = app(db, monkeypatch, "pages/launch.py")
    at.multiselect(key="launch-methods").select("codyra")
    at.run()
    at.number_input(key="run-replay").set_value(120)
    at.text_input(key="run-ewc_lambda").set_value("50")
    at.button(key="launch-button").click().run()
    runs = Store(str(db)).runs()
    assert sorted(r["method"] for r in runs) == ["codyra", "lora"]
    assert all(r["config"]["replay"] == 120 and r["config"]["ewc_lambda"] == 50.0 for r in runs)
    assert all("replay 120" in r["name"] and "EWC 50" in r["name"] for r in runs)


def test_launch_form_runs_every_method_in_one_papers_regime_and_keeps_what_the_user_changed(tmp_path, monkeypatch):
    from cldash.methods import paper_presets

    PAPER = paper_presets()
    no_starts(monkeypatch)   # store the runs, start none
    owner = "codyra" if "codyra" in PAPER else sorted(PAPER)[0]
    db = tmp_path / "regime.db"
    at = app(db, monkeypatch, "pages/launch.py")
    at.multiselect(key="launch-methods").select("full")
    at.run()
    at.selectbox(key="run-preset").set_value(f"paper:{owner}")
    at.number_input(key="run-batch_size").set_value(32)
    at.button(key="launch-button").click().run()
    runs = Store(str(db)).runs()
    assert sorted(r["method"] for r in runs) == ["full", "lora"]
    for r in runs:
        cfg = r["config"]
        assert cfg["preset"] == f"paper:{owner}" and cfg["batch_size"] == 32
        assert cfg["regime"]["values"] and "batch_size" not in cfg["regime"]["values"]
        for key, value in cfg["regime"]["values"].items():
            if key != "targets":
                assert cfg[key] == value, key


def test_empty_store_welcomes_and_launches_the_demo(tmp_path, monkeypatch):
    from cldash.runs.launch import cancel

    db = tmp_path / "empty.db"
    store = Store(str(db))
    store.set_setting("max_concurrent", "1")
    at = app(db, monkeypatch)
    assert "Welcome to cldash" in [s.value for s in at.title]
    at.button(key="demo-button").click().run()
    runs = store.runs()
    assert [r["method"] for r in runs] == ["lora", "full", "eblora", "pissa"]   # the quick demo
    assert all(r["stream"] == "digits-rotate" for r in runs)
    for r in store.runs(status=["queued", "running"]):
        cancel(store, r["id"])


def test_unopenable_store_shows_an_error_box(tmp_path, monkeypatch):
    monkeypatch.setenv("CLDASH_DB", str(tmp_path / "missing" / "x.db"))
    v2_navigation(monkeypatch)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


def test_a_store_password_is_never_on_the_page(monkeypatch):
    url = "postgresql+psycopg://cl:s3cret@localhost:1/runs"   # nothing listens on port 1: an error box
    monkeypatch.setenv("CLDASH_DB", url)
    v2_navigation(monkeypatch)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.sidebar.text_input[0].value == "postgresql+psycopg://cl:***@localhost:1/runs"
    assert any("cannot open the run store postgresql+psycopg://cl:***@localhost:1/runs" in e.value for e in at.error)
    texts = [e.value for e in at.error] + [t.value for t in at.text_input] + [m.value for m in at.markdown] + \
        [c.value for c in at.caption]
    assert not any("s3cret" in str(t) for t in texts)


def test_a_read_only_store_renders_and_starts_nothing(read_only_copy, monkeypatch):
    path, queued = read_only_copy
    at = app(f"sqlite:///file:{path}?mode=ro&uri=true", monkeypatch)   # the sidebar reconciles and schedules
    assert not at.error
    store = Store(str(path))
    assert store.get_run(1)["status"] == "running" and store.get_run(queued)["pid"] is None


def test_a_page_opened_in_streamlits_old_multipage_mode_is_routed_through_app(seeded_store, monkeypatch):
    """Without the test shim: the page notices it ran without app.py and re-runs through it."""
    monkeypatch.setenv("CLDASH_DB", seeded_store.display)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Compare"]
    assert len(at.sidebar.multiselect) == 1 and at.sidebar.text_input[0].label == "Run store"


def test_orders_page_measures_an_order_shows_the_stored_conflict_and_launches_the_order(tmp_path, monkeypatch):
    from cldash.analysis.orders import measurement_state, start_measurement
    from cldash.runs.launch import cancel

    db = tmp_path / "orders.db"
    store = Store(str(db))
    store.set_setting("max_concurrent", "1")
    at = app(db, monkeypatch, "pages/orders.py")
    assert any(i.value.startswith("No order measured yet") for i in at.info)
    at.selectbox(key="order-stream").set_value("digits-rotate")
    at.number_input(key="order-batches").set_value(1)
    at.number_input(key="order-batch-size").set_value(16)
    at.button(key="order-measure").click().run()
    at.button(key="order-measure").click().run()      # a double click measures once
    started = at.session_state["order-measuring"]
    assert started["args"] == ["--stream", "digits-rotate", "--backbone", "vit-tiny", "--batches", "1",
                               "--batch-size", "16"]
    assert start_measurement(store, started["args"])["pid"] == started["pid"]   # still the same process
    assert any(i.value.startswith("measuring… ") for i in at.info), [i.value for i in at.info]
    deadline = time.time() + 300
    while time.time() < deadline and measurement_state(store, started)[0] == "measuring":
        time.sleep(0.3)
    at.run()    # the refresh that finds the order in the store
    (o,) = store.orders()
    assert o["stream"] == "digits-rotate" and o["config"]["batches"] == 1
    assert [s.value for s in at.success] == [f"Measured order #{o['id']}; it is shown below."]
    assert at.selectbox(key="order-pick").value == o["id"]
    assert not at.error, [e.value for e in at.error]
    (heat,) = [s for s in charts(at) if s["data"][0]["type"] == "heatmap"]
    np.testing.assert_allclose(array(heat["data"][0]["z"]), np.array(o["matrix"]))
    table = at.table[0].value     # a static table (14 px text), the last task's missing next cosine a dash
    assert table["task"].tolist() == [f"T{i + 1}: {o['tasks'][i]}" for i in o["order"]]
    assert table["cosine with the next"].iloc[-1] == "—" and "None" not in table.to_string()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Sum of consecutive cosines (adversarial)"] == f"{o['cost']:.3f}"
    assert metrics["Configured order"] == f"{o['natural_cost']:.3f}"
    assert any("--stream-angles " + ",".join(f"{a:g}" for a in o["ordered_options"]["angles"]) in c.value
               for c in at.code)
    at.button(key="order-launch").click().run()
    at.button(key="order-launch").click().run()     # a double click launches once
    runs = store.runs()
    assert len(runs) == 1 and runs[0]["config"]["stream_options"]["angles"] == o["ordered_options"]["angles"]
    for r in store.runs(status=["queued", "running"]):
        cancel(store, r["id"])


def test_launch_form_offers_the_skills_stream_on_the_tiny_gpt2(tmp_path, monkeypatch):
    at = app(tmp_path / "launch.db", monkeypatch, "pages/launch.py")
    at.selectbox(key=[s.key for s in at.selectbox if s.label == "Stream"][0]).select("skills").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    backbone = [s for s in at.selectbox if s.label == "Backbone"][0]
    assert backbone.options == ["Tiny GPT-2 (generated skills, 2 layers, width 64)", "Hugging Face model (hf:…)"]


def no_starts(monkeypatch) -> None:
    """Queue runs but start none: every schedule (the launcher's, the sidebar's) starts nothing."""
    keep_runs_queued(monkeypatch)


def test_the_sidebar_counts_and_offers_the_runs_a_launch_made_in_the_same_run(tmp_path, monkeypatch):
    """The sidebar is drawn before the page; a launch redraws its counts and its run picker, so the script run
    that launched already shows them (the issue saw "0 runs" and no options). The queued count is plain text:
    a metric's delta drew an arrow that read as a change."""
    no_starts(monkeypatch)
    db = tmp_path / "launch.db"
    Store(str(db)).set_setting("max_concurrent", "2")
    at = app(db, monkeypatch, "pages/launch.py")
    assert at.sidebar.caption[0].value.endswith(" · 0 runs") and at.sidebar.multiselect[0].options == []
    at.multiselect(key="launch-methods").select("full")
    at.button(key="launch-button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.sidebar.caption]
    assert captions[0].endswith(" · 2 runs") and "2 queued" in captions
    running = at.sidebar.metric[0]
    assert (running.label, running.value, running.proto.delta) == ("Running", "0 / 2", "")
    picker = at.sidebar.multiselect[0]
    assert picker.value == [1, 2] and [o.split(" ")[0] for o in picker.options] == ["#1", "#2"]
    at.run()   # the next run draws the same picker: the selection holds
    assert at.sidebar.multiselect[0].value == [1, 2] and at.sidebar.caption[0].value.endswith(" · 2 runs")


def test_the_sidebar_sets_how_many_runs_share_a_gpu_where_there_is_one(tmp_path, monkeypatch):
    """With GPUs, "Runs per GPU" shows and sets the store's share, and the default limit follows it (2 GPUs x 3)."""
    no_starts(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    db = tmp_path / "gpus.db"
    at = app(db, monkeypatch, "pages/launch.py")
    assert at.sidebar.number_input(key="runs-per-gpu").value == 1
    at.sidebar.number_input(key="runs-per-gpu").set_value(3).run()
    assert not at.exception, [e.value for e in at.exception]
    assert Store(str(db)).get_setting("runs_per_gpu") == "3"
    assert at.run().sidebar.metric[0].value == "0 / 6"   # the counts are drawn above the input: the next run
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not [n for n in app(db, monkeypatch, "pages/launch.py").sidebar.number_input if n.key == "runs-per-gpu"]


def test_the_launch_page_says_whether_a_benchmarks_data_is_here_and_fetches_it_in_the_background(tmp_path, monkeypatch):
    """A named benchmark shows its disk needs and a fetch button; the button starts `cldash data fetch NAME` as a
    process of its own (its pid kept in the cache), and once the decoded images are in the cache it says so."""
    import subprocess
    import sys

    from cldash.runs import data_fetch

    no_starts(monkeypatch)
    monkeypatch.setenv("CLDASH_CACHE", str(tmp_path / "cache"))
    started = []

    def fake_start(store, args, log, what, mode="ab"):
        started.append(args)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("cifar100-10: 60,000 images; about 170 MB to download\n")
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)  # cldash"])

    monkeypatch.setattr(data_fetch, "start_cldash", fake_start)
    at = app(tmp_path / "d.db", monkeypatch, "pages/launch.py")
    at.selectbox(key="launch-stream").select("cifar100-10").run()
    assert at.selectbox(key="launch-backbone").value == "vit-b16-in21k"   # the stream's own, not the 8 px vit-tiny
    assert any("not in the cache yet" in c.value and "9.0 GB" in c.value for c in at.caption)
    at.button(key="fetch-cifar100-10").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert started == [["data", "fetch", "cifar100-10", "--size", "224"]]
    assert any("Fetching the cifar100-10 data" in i.value for i in at.info)
    pid = int((tmp_path / "cache" / "logs" / "data-fetch-cifar100-10.pid").read_text())
    __import__("os").kill(pid, 9)
    images = tmp_path / "cache" / "images"
    images.mkdir(parents=True)
    (images / "x.json").write_text('{"benchmark": "cifar100-10", "size": 224, "bytes": 9000000000}')
    at.run()
    assert any("data is ready (224 px, 9.0 GB" in c.value for c in at.caption)


def regime_lines(at) -> dict[str, list[str]]:
    """{claim statement: its regime lines ('*common* :gray-badge[...] 0 of 3 seeds · ...')}."""
    from cldash.analysis.claims import CLAIMS

    texts = [m.value for m in at.markdown]
    out = {}
    for claim in CLAIMS:
        i = texts.index(f"**{claim.statement}**")
        out[claim.key] = [t for t in texts[i + 1:i + 4] if t.split(" ")[0] in ("*common*", "*paper*", "*tuned*")]
    return out


def test_claims_page_on_an_empty_store_launches_the_missing_runs_once(tmp_path, monkeypatch):
    from cldash.analysis import claims as C
    from cldash.runs.pace import estimate

    no_starts(monkeypatch)
    db = tmp_path / "claims.db"
    at = app(db, monkeypatch, "pages/claims.py")
    assert [t.value for t in at.title] == ["Claims"] and not at.error
    assert at.radio(key="claims-regime").options == ["all", "common", "paper", "tuned"]
    lines = regime_lines(at)
    assert set(lines) == {c.key for c in C.CLAIMS}
    for claim in C.CLAIMS:
        need = len(claim.runs) * len(C.SEEDS)
        same = " · the same runs as common: no paper preset applies" if C.paper_is_common(claim) else ""
        assert lines[claim.key][:2] == [f"*{r}* :gray-badge[:material/help: not enough evidence] 0 of 3 seeds · "
                                        f"0 queued or running · {need} to launch" + (same if r == "paper" else "")
                                        for r in ("common", "paper")]
        # nothing is searched on an empty store: the tuned regime says so and how to search
        assert lines[claim.key][2] == (f"*tuned* :blue-badge[:material/tune: not tuned yet] — {len(claim.runs)} of "
                                       f"its {len(claim.runs)} runs have no finished search of 16 trials "
                                       f"({', '.join(claim.runs)}): `cldash tune --claim {claim.key}` runs them")
    total = len(C.to_launch(Store(str(db))))
    button = at.button(key="claims-launch-all")
    assert button.label == f"Launch the {total} missing runs" and not button.disabled
    button.click().run()   # asks first: the number of runs and the time they take here; nothing queued yet
    assert not at.exception and Store(str(db)).runs() == []
    forecast = estimate(Store(str(db)), C.to_launch(Store(str(db))))
    assert f"**Queue {forecast.text()}?**" in [m.value for m in at.markdown]
    assert forecast.runs == total and "min on this machine" in forecast.text()
    assert any(c.value.startswith("Estimated from the shipped claims study's pace (0.0236 s a step on 2 CPU cores)")
               for c in at.caption)
    at.button(key="no-all").click().run()   # Cancel: the question goes, nothing is queued
    assert not [b for b in at.button if b.key == "yes-all"] and Store(str(db)).runs() == []
    at.button(key="claims-launch-all").click().run()
    assert at.button(key="yes-all").label == f"Queue {total} runs"
    at.button(key="yes-all").click().run()
    assert not at.exception
    runs = Store(str(db)).runs()
    assert len(runs) == total and all(r["status"] == "queued" and r["group_key"] == "claims" for r in runs)
    assert [s.value for s in at.success] == [f"Queued {total} runs: #1 to #{total}. They start as slots free "
                                             "(sidebar: runs at once); the verdicts below update as they finish."]
    assert [t.value for t in at.toast] == [f"Queued {total} runs."]
    assert at.button(key="claims-launch-all").label == "Launch the 0 missing runs"
    assert at.button(key="claims-launch-all").disabled
    eblora = regime_lines(at)["eblora-spectrum"]
    assert eblora[0].endswith("0 of 3 seeds · 9 queued or running · 0 to launch")


def test_claims_page_filters_by_regime_and_launches_one_claim(tmp_path, monkeypatch):
    no_starts(monkeypatch)
    db = tmp_path / "claims.db"
    at = app(db, monkeypatch, "pages/claims.py")
    at.radio(key="claims-regime").set_value("paper").run()
    assert all(len(v) == 1 and v[0].startswith("*paper*") for v in regime_lines(at).values())
    assert at.button(key="launch-study-rank-paper").label == "Launch the 9 missing runs of this claim (paper)"
    at.button(key="launch-study-rank-paper").click().run()
    assert Store(str(db)).runs() == []   # asked first, under the claim's own button
    at.button(key="yes-study-rank-paper").click().run()
    runs = Store(str(db)).runs()
    assert len(runs) == 9 and {r["config"]["preset"] for r in runs} == {"common"}   # LoRA has no paper preset
    assert all(r["method"] == "lora" for r in runs)


def test_claims_page_shows_a_claim_that_holds_with_its_evidence(tmp_path, monkeypatch):
    from cldash.analysis import claims as C

    no_starts(monkeypatch)
    db = tmp_path / "claims.db"
    store = Store(str(db))
    claim = C.get_claim("study-rank")        # a higher LoRA rank forgets less
    forgetting = {"LoRA r=1": [0.60, 0.70, 0.65], "LoRA r=4": [0.50, 0.61, 0.54], "LoRA r=16": [0.40, 0.52, 0.41]}
    ids = {}
    for label, values in forgetting.items():
        for seed, f in zip(C.SEEDS, values):
            cfg = C.config(claim, label, "common", seed)
            rid = store.create_run(cfg, status="finished", name=cfg["name"])
            store.update_run(rid, summary={"acc": 0.5, "la": 0.9, "forgetting": f, "general_retention": 0.8,
                                           "bwt": -f})
            ids.setdefault(label, []).append(rid)
    at = app(db, monkeypatch, "pages/claims.py")
    assert not at.error, [e.value for e in at.error]
    common, paper, tuned = regime_lines(at)["study-rank"]
    assert tuned.startswith("*tuned* :blue-badge[:material/tune: not tuned yet]")
    assert common == "*common* :green-badge[:material/check_circle: holds] 3 of 3 seeds · 0 queued or running · " \
                     "0 to launch"
    # LoRA has no paper preset and the study no code: its paper regime is the common one, decided by the same runs
    assert paper == common.replace("*common*", "*paper*") + " · the same runs as common: no paper preset applies"
    # claims share runs: CoDyRA's claim finds the same LoRA r=4 and r=16 runs, but not its own CoDyRA runs
    assert regime_lines(at)["codyra-rank"][0].endswith("0 of 3 seeds · 0 queued or running · 9 to launch")

    k = [c.key for c in C.CLAIMS].index("study-rank")
    evidence = [e for e in at.expander if e.label == "Evidence · common regime"][k]
    # a paper regime that is the common one is not decided twice: no evidence of its own
    assert [e.label for e in at.expander].count("Evidence · paper regime") == sum(
        not C.paper_is_common(c) for c in C.CLAIMS)
    checks = [m.value for m in evidence.markdown]
    assert checks[0] == (":green-badge[:material/check_circle: holds] **forgetting: LoRA r=4 is below LoRA r=1** — "
                         "difference -0.100, 95 % interval [-0.125, -0.075] over 3 seeds")
    assert checks[1].startswith(":green-badge[:material/check_circle: holds] **forgetting: LoRA r=16 is below "
                                "LoRA r=4** — difference -0.107")
    table = evidence.dataframe[0].value.set_index(["what", "run"])
    row = table.loc[("forgetting", "LoRA r=16")]
    assert [row[f"seed {s}"] for s in C.SEEDS] == pytest.approx(forgetting["LoRA r=16"])
    assert row["mean ± sd"] == f"{np.mean([0.40, 0.52, 0.41]):.3f} ± {np.std([0.40, 0.52, 0.41], ddof=1):.3f}"
    assert table.loc[("learning accuracy (LA)", "LoRA r=1"), "mean ± sd"] == "0.900 ± 0.000"
    assert [b.label for b in evidence.button][:4] == ["Compare these 9 runs"] + [
        f"{label}: " + ", ".join(f"#{i}" for i in ids[label]) for label in forgetting]     # the run ids, as links
    assert evidence.button[-1].label == "Launch the 0 missing runs of this claim (common)"
    assert evidence.button[-1].disabled

    evidence.button[1].click().run()       # LoRA r=1's runs, selected for the Compare page
    assert not at.exception
    assert [t.value for t in at.title] == ["Compare"]
    assert at.sidebar.multiselect[0].value == ids["LoRA r=1"]


def test_claims_page_on_a_read_only_store_says_nothing_was_launched(tmp_path, monkeypatch):
    no_starts(monkeypatch)
    path = tmp_path / "ro.db"
    Store(str(path)).runs()
    at = app(f"sqlite:///file:{path}?mode=ro&uri=true", monkeypatch, "pages/claims.py")
    at.button(key="claims-launch-all").click().run()
    at.button(key="yes-all").click().run()
    assert not at.exception
    assert any(e.value.startswith("Nothing was launched: cannot write to the run store") for e in at.error)
    assert Store(str(path)).runs() == []


def test_claims_page_shows_the_papers_numbers_the_source_and_a_guard_margin_that_changes_nothing_on_an_empty_store(
        tmp_path, monkeypatch):
    from cldash.analysis import claims as C

    no_starts(monkeypatch)
    at = app(tmp_path / "claims.db", monkeypatch, "pages/claims.py")
    numbers = next(e for e in at.expander if e.label.startswith("The paper's own numbers")
                   and "forgetting (X-TAIL)" in e.dataframe[0].value["quantity"].tolist())     # CoDyRA's claims
    table = numbers.dataframe[0].value.set_index(["quantity", "method"])
    assert table.loc[("forgetting (X-TAIL)", "CoDyRA"), "value"] == "1.87 %"
    assert table.loc[("forgetting (X-TAIL)", "LoRA (r=16)"), "value"] == "14.86 %"
    assert numbers.caption[0].value.startswith("Their setting: CLIP ViT-B/16")
    captions = [c.value for c in at.caption]
    assert any(c.startswith(":orange-badge[:material/warning: 003 paraphrase only]") for c in captions)  # study-pissa
    assert any(c.startswith("The claim's words: the paper's project page · computed on: digits-rotate")
               for c in captions)
    guard = at.number_input(key="claims-guard")
    assert (guard.value, guard.min, guard.max) == (C.GUARD_MARGIN, 0.0, 0.5)
    before = regime_lines(at)
    guard.set_value(0.3).run()
    assert not at.exception and regime_lines(at) == before


def fake_search(store, claim, label, acc=0.81):
    """A finished search of one of a claim's runs, as cldash.analysis.tuning keeps its summary (no Optuna)."""
    from cldash.analysis import claims as C, tuning as T

    target = C.run_values(claim, label)
    name = T.study_name(target, T.TRIALS, 0)
    trials = [{"number": 0, "params": {"lr": 0.0012, "lr_schedule": "cosine"}, "state": "complete", "run": 1,
               "acc": acc, "la": 0.93, "forgetting": 0.1},
              {"number": 1, "params": {"lr": 0.02, "lr_schedule": "constant"}, "state": "diverged", "run": 2,
               "acc": 0.0, "la": 0.0, "forgetting": float("nan")}]
    summary = {"study": name, "target": target, "trials_budget": T.TRIALS, "seed": 0, "space": ["lr log 1e-4..3e-2"],
               "validation": T.VALIDATION, "la_window": T.LA_WINDOW, "trials": trials, "finished": True,
               "best": {"params": trials[0]["params"], "trial": 0, "acc": acc, "la": 0.93, "forgetting": 0.1},
               "spread": {"100": acc, "101": acc - 0.01, "102": acc + 0.01}, "spread_sd": 0.01, "updated": 1.0}
    store.set_setting(T.PREFIX + name, json.dumps(summary))


def test_a_finished_search_shows_on_the_claims_page_and_its_tuned_values_on_the_methods_page(tmp_path, monkeypatch):
    from cldash.analysis import claims as C

    no_starts(monkeypatch)
    db = tmp_path / "claims.db"
    store = Store(str(db))
    fake_search(store, C.get_claim("codyra-rank"), "CoDyRA")
    rank = C.get_claim("study-rank")
    for label in rank.runs:          # every run of study-rank searched: its tuned regime is decided from runs
        fake_search(store, rank, label)
    at = app(db, monkeypatch, "pages/claims.py")
    at.radio(key="claims-regime").set_value("tuned").run()
    assert not at.exception
    lines = regime_lines(at)
    assert lines["study-rank"] == ["*tuned* :gray-badge[:material/help: not enough evidence] 0 of 3 seeds · "
                                   "0 queued or running · 9 to launch"]
    # claims share runs, and so searches: codyra-rank's LoRA r=4 and r=16 are study-rank's
    assert lines["codyra-rank"] == ["*tuned* :blue-badge[:material/tune: not tuned yet] — 2 of its 5 runs have no "
                                    "finished search of 16 trials (LoRA r=16 s=1, CoDyRA no pruning): `cldash tune "
                                    "--claim "
                                    "codyra-rank` runs them"]
    k = [c.key for c in C.CLAIMS].index("codyra-rank")
    searches = [e for e in at.expander if e.label == "Searches · tuned regime"][k]
    trials = searches.dataframe[0].value
    assert trials["trial"].tolist() == [0, 1] and trials["validation ACC"].tolist() == [0.81, 0.0]
    assert trials["params"][0] == "lr 0.0012 · lr_schedule cosine" and trials["state"].tolist() == ["complete",
                                                                                                   "diverged"]
    best = [m.value for m in searches.markdown if m.value.startswith("Search finished")]
    assert best == 3 * ["Search finished, 2 trials. Best: trial 0, lr 0.0012 · lr_schedule cosine · validation ACC "
                    "0.810, LA 0.930, forgetting 0.100 · the best again at each tuning seed: 0.810 ± 0.010 over "
                    "seeds 100, 101, 102"]
    assert sum("not searched yet: `cldash tune --claim codyra-rank`" == c.value for c in searches.caption) == 2
    button = at.button(key="launch-study-rank-tuned")
    button.click().run()
    at.button(key="yes-study-rank-tuned").click().run()
    runs = Store(str(db)).runs()
    assert len(runs) == 9 and {r["config"]["lr"] for r in runs} == {0.0012}
    assert {r["config"]["lr_schedule"] for r in runs} == {"cosine"}

    at = app(db, monkeypatch, "pages/methods.py")
    tuned = [t.value for t in at.dataframe if "tuned" in t.value.columns]
    codyra = next(t for t in tuned if (t["stream"] == "digits-rotate").all() and len(t) == 1
                  and t["fixed options"][0] == "")
    assert codyra["tuned"][0] == "lr 0.0012 · lr_schedule cosine" and codyra["validation ACC"][0] == 0.81
    assert "not tuned yet: `cldash tune --method pissa --stream S`" in [c.value for c in at.caption]


def test_claims_page_reads_the_claims_at_another_length(tmp_path, monkeypatch):
    """The "Setting" inputs read (and launch) the same claims at another length, as `cldash claims
    --steps-per-task N` does: the verdicts say the length they were computed on, and the runs to launch are
    those of that length."""
    from cldash.analysis import claims as C

    no_starts(monkeypatch)
    at = app(tmp_path / "claims.db", monkeypatch, "pages/claims.py")
    at.number_input(key="claims-steps").set_value(100).run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert any("computed on: digits-rotate, vit-tiny, 100 steps per task" in c for c in captions)
    assert not any("300 steps per task" in c for c in captions)
    store, hundred = Store(str(tmp_path / "claims.db")), C.Setting(steps_per_task=100)
    need = len(C.to_launch(store, setting=hundred))
    at.button(key="claims-launch-all").click().run()
    at.button(key="yes-all").click().run()
    runs = store.runs()
    assert len(runs) == need and {r["config"]["steps_per_task"] for r in runs} == {100}
    assert C.to_launch(store, setting=hundred) == []   # what the page launched is what that length needs
