"""The HTML handout (cldash.dashboard.report, `cldash report`, the Compare page's button), on a store of runs written
straight into it (no training): what the file holds, that it loads nothing from anywhere, and that bad
input leaves no file."""

import json
import math
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from xml.etree import ElementTree as ET

import numpy as np
import pytest

import cldash
from cldash.config import resolve
from cldash.measures.metrics import METRICS, summarize
from cldash.store import Store

from test_app import array

EVIL = "<script>alert('handout')</script>"
MATHML = "{http://www.w3.org/1998/Math/MathML}"
MODULES = ("vit.layers.0.attention.q_proj", "vit.layers.0.attention.v_proj")


def stored_run(store, method, scores, seed=0, finished=True, name="", steps=20, **options):
    """A run of `method` with final evaluations `scores` (rows 0..i of [T1, T2, general]), a loss per step and
    cumulative spectra every 5 steps, written as a run process writes them."""
    config = resolve({"method": method, "seed": seed, "steps_per_task": steps, "name": name,
                      "method_options": options, "stream_options": {"angles": [45, 90]}}).to_dict()
    rid = store.create_run(config, status="finished" if finished else "running")
    store.write_structure(rid, [{"position": 1, "name": "rotate 45°", "kind": "stream"},
                                {"position": 2, "name": "rotate 90°", "kind": "stream"},
                                {"position": 0, "name": "general", "kind": "general"}],
                          [{"name": m, "layer": 0, "kind": m.rsplit(".", 1)[1], "in_features": 64, "out_features": 64}
                           for m in MODULES])
    w = store.writer(rid)
    for i, row in enumerate(scores):
        for pos, v in zip([1, 2, 0], row):
            w.evaluation(steps * i, i, pos, {"accuracy": v}, True)
    last = steps * (len(scores) - 1) if finished else steps * len(scores) - steps // 2
    for step in range(1, last + 1):
        w.scalar(step, "loss", 2.0 * np.exp(-step / 15) + 0.1 * (step % steps == 1))
    for step in range(5, last + 1, 5):
        for k, module in enumerate(MODULES):
            sigma = np.array([1.0, 0.5 / (1 + step / 20), 0.1], dtype=np.float32) * (1 + k)
            energy = float(sigma[0] ** 2 / (sigma ** 2).sum())
            w.spectrum(step, 1 + (step - 1) // steps, module, "cumulative", sigma.tobytes(), len(sigma),
                       {"erank": 1.5 + step / 40, "top1_energy": energy, "stable_rank": 1.2, "frobenius": 1.0,
                        "numerical_rank": 3})
    w.flush(num_tasks=2, step=last, total_steps=2 * steps)
    if finished:
        R = np.array([row[:2] for row in scores])
        store.update_run(rid, summary=summarize(R, {"general": [row[2] for row in scores]}))
    return rid


MATRIX = [[0.1, 0.2, 0.9], [0.8, 0.3, 0.7], [0.5, 0.9, 0.6]]


def three_runs(path) -> Store:
    """LoRA and full fine-tuning finished (full's name holds a script), EBLoRA halfway through its second task."""
    s = Store(str(path))
    stored_run(s, "lora", MATRIX, rank=4)
    stored_run(s, "full", [[0.1, 0.2, 0.9], [0.9, 0.3, 0.6], [0.4, 0.95, 0.5]], name=EVIL)
    stored_run(s, "eblora", [[0.1, 0.2, 0.9], [0.7, 0.25, 0.8]], finished=False)
    return s


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return three_runs(tmp_path_factory.mktemp("handout") / "runs.db")


@pytest.fixture(scope="module")
def page(store):
    from cldash.dashboard.report import handout_html

    return handout_html(store, [1, 2, 3], now=datetime(2026, 12, 2, 9, 30, tzinfo=UTC))


class Loads(HTMLParser):
    """Every tag attribute that would make a browser fetch something (src, href, srcset, poster, data)."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts, self.tags = [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.scripts += tag == "script"
        self.urls += [(tag, k, v) for k, v in attrs if k in ("src", "href", "srcset", "poster", "data", "action")]


def test_the_handout_holds_labels_definitions_configs_and_loads_nothing(store, page):
    from cldash.dashboard.labels import run_label

    for run in store.runs():
        assert run_label(run) in page                      # every run by method and options, not only by id
    assert "#1 lora r=4 single · digits-rotate · seed 0" in page
    assert page.count("unfinished (running, step 30/40)") == 3     # its config heading, its matrix's subtitle and hover
    for m in METRICS:   # every metric with its definition, its formula typeset (MathML) and in plain text
        plain = m.formula.replace(">", "&gt;").replace("<", "&lt;")
        assert f"<dt>{m.label}</dt><dd>{m.mathml}<span class=\"uses\"><code>{plain}</code> — uses {m.cells}" \
            in page.replace("&#x27;", "'")
    maths = re.findall(r"<math\b.*?</math>", page)
    assert len(maths) == len(METRICS) == len({m.mathml for m in METRICS})   # one <math> each, each its own
    names = {"math", "mi", "mn", "mo", "mrow", "mfrac", "msub", "msup", "munder", "munderover"}   # MathML Core
    for text in maths:
        tree = ET.fromstring(text)                                        # well-formed XML
        assert {e.tag.rsplit("}", 1)[-1] for e in tree.iter()} <= names and tree.find(f".//{MATHML}mi") is not None
    # both tables scroll sideways in their own box, never the page
    assert page.count("<div class=\"scroll\"><table") == 2 and ".scroll { overflow-x: auto; }" in page
    assert "2026-12-02 09:30 UTC" in page and f"cldash {cldash.__version__}" in page and "runs.db" in page
    config = json.dumps(store.get_run(1)["config"], indent=2)
    assert config.splitlines()[1].replace('"', "&quot;") in page and page.count("<details>") == 3
    # plotly.js once, from the file itself; no tag loads anything from anywhere
    assert page.count("plotly.js v") == 1 and "cdn.plot.ly" not in page.split("<body>")[1]
    parsed = Loads()
    parsed.feed(page)
    assert parsed.urls == [] and parsed.scripts == 2 and "link" not in parsed.tags and "img" not in parsed.tags
    assert not re.search(r"@import|@font-face|url\(", page.split("<style>")[1].split("</style>")[0])
    # a run name with a script in it is text, in the runs table and in its record and config, never markup
    assert EVIL not in page and page.count(EVIL.replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#x27;")) == 3


def test_the_handout_s_figures_hold_the_stored_numbers(store, page):
    from cldash.dashboard.labels import RUN_PALETTE, run_label

    figures = [json.loads(f) for f in re.findall(r"^draw\(\"fig-\d+\", (.*)\);$", page, flags=re.M)]
    # headline bars, accuracy-forgetting, 3 matrices, loss, spectrum measures, last spectra
    assert len(figures) == 8
    for f in figures:   # as wide as the page, every axis's margin grown to its labels
        layout = f["layout"]
        axes = [v for k, v in layout.items() if re.fullmatch(r"[xy]axis\d*", k)]
        assert layout["autosize"] and "width" not in layout and axes and all(a["automargin"] for a in axes)
        fonts = re.findall(r'font": \{[^{}]*"size": ([\d.]+)', json.dumps(f))
        assert fonts and min(map(float, fonts)) >= 14
    bars = [t for t in figures[0]["data"] if t["type"] == "bar"]   # figures.headline_figure, and BWT
    assert [b["name"] for b in bars] == ["final accuracy", "forgetting", "general-task retention",
                                         "learning accuracy", "backward transfer (BWT)"]
    assert all(b["hovertext"] == [run_label(r) for r in store.runs()] for b in bars)   # the full name on hover
    assert all(b["hovertemplate"].startswith("%{hovertext}<br>") for b in bars)
    stored = store.get_run(1)["summary"]
    acc, bwt = array(bars[0]["x"]), array(bars[4]["x"])
    assert acc[0] == pytest.approx(stored["acc"]) and bwt[0] == pytest.approx(stored["bwt"])
    assert math.isnan(acc[2])                            # the unfinished run has no final accuracy yet
    heatmaps = [f for f in figures if f["data"][0]["type"] == "heatmap"]
    assert len(heatmaps) == 3 and all(h["data"][0]["showscale"] for h in heatmaps)   # a colour bar each
    # a matrix's title: the run's short name; an unfinished run's status under it
    assert heatmaps[2]["layout"]["title"]["text"] == "#3 eblora r=16"
    assert heatmaps[2]["layout"]["title"]["subtitle"]["text"] == "unfinished (running, step 30/40)"
    loss = next(f for f in figures if f["layout"].get("yaxis", {}).get("type") == "log"
                and f["layout"]["yaxis"]["title"]["text"] == "loss")
    ticks = loss["layout"]["yaxis"]["tickvals"]          # 1-2-5 ticks that read as numbers (figures.log_ticks)
    assert len(loss["data"]) == 3 and len(ticks) >= 2 and \
        {round(t / 10 ** math.floor(math.log10(t))) for t in ticks} <= {1, 2, 5}
    colours = {t["name"]: t["line"]["color"] for t in loss["data"]}
    assert list(colours.values()) == list(RUN_PALETTE[:3]) == bars[0]["marker"]["color"]   # by run id
    pareto = figures[1]
    assert pareto["layout"]["xaxis"]["title"]["text"] == "forgetting (lower is better)"
    assert {t["name"]: t["marker"]["color"] for t in pareto["data"] if t["name"] in colours} == \
        {k: v for k, v in colours.items() if not k.startswith("#3 ")}       # one colour per run on every chart
    assert [t["text"] for t in pareto["data"][:2]] == [["#1 LoRA r=4"], ["#2 full FT"]]


def test_long_series_are_thinned_and_unknown_runs_are_one_sentence(tmp_path, store):
    from cldash.core.errors import UserError
    from cldash.dashboard.report import LOSS_POINTS, handout_file_name, handout_html, parse_run_ids

    alone = Store(str(tmp_path / "long.db"))
    page = handout_html(alone, [stored_run(alone, "lora", MATRIX, steps=1500)])
    loss = next(f for f in map(json.loads, re.findall(r"^draw\(\"fig-\d+\", (.*)\);$", page, flags=re.M))
                if f["layout"].get("yaxis", {}).get("title", {}).get("text") == "loss")
    steps = array(loss["data"][0]["x"])
    assert len(steps) == LOSS_POINTS and steps[-1] == 3000      # 3,000 steps drawn as 400 points, to the last
    with pytest.raises(UserError, match=r"^there are no runs #7, #9 in .*; `cldash list` shows the runs\.$"):
        handout_html(store, [1, 7, 9])
    assert parse_run_ids(["3-5", "9,4", "#5"]) == [3, 4, 5, 9]
    with pytest.raises(UserError, match="a run is a whole number or a range such as 3-6"):
        parse_run_ids(["6-3"])
    assert [handout_file_name(i) for i in ([3, 4, 5, 6], [5, 3, 9], list(range(1, 40, 2)))] == [
        "cldash-handout-runs-3-6.html", "cldash-handout-runs-3-5-9.html", "cldash-handout-20-runs-1-to-39.html"]


def test_cldash_report_writes_the_file_and_refuses_bad_input_leaving_nothing(tmp_path, store, capsys):
    from cldash.cli import main

    out = tmp_path / "class" / "handout.html"
    out.parent.mkdir()
    assert main(["--db", store.display, "report", "1-2", "3", "--out", str(out), "--title", "Lesson <1>"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"{out} ({out.stat().st_size / 1e6:.1f} MB, 3 runs)"
    assert "<title>Lesson &lt;1&gt;</title>" in out.read_text()
    for rid in (1, 2):
        store.update_run(rid, group_key="sweep:class")
    try:   # a group's runs: a sweep's, a lesson's, a demo's
        assert main(["--db", store.display, "report", "--group", "sweep:class", "--out", str(out)]) == 0
    finally:
        for rid in (1, 2):
            store.update_run(rid, group_key=None)
    assert capsys.readouterr().out.strip().endswith(", 2 runs)")
    text = out.read_text()
    assert "<h1>cldash handout: runs #1 to #2</h1>" in text and "#3 eblora" not in text
    nowhere = str(tmp_path / "no" / "h.html")
    for bad in (["1", "42"], ["x"], [], ["1", "--group", "sweep:none"], ["1", "--out", nowhere]):
        target = [] if "--out" in bad else ["--out", str(tmp_path / "bad.html")]
        assert main(["--db", store.display, "report", *bad, *target]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and err.count("\n") == 0 and err.endswith("."), err
    assert [p.name for p in tmp_path.iterdir()] == ["class"]              # no bad.html, half-written or not
    assert [p.name for p in out.parent.iterdir()] == ["handout.html"]   # no temporary file left beside it


def test_the_compare_page_offers_the_handout_named_after_its_runs(store, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    from test_app import app

    made = {}   # the button's data is a callable, run on a click only: catch it where Streamlit registers it
    register = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = (data_callable, mimetype)
        return register(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    at = app(store.display, monkeypatch, "pages/compare.py", runs=[1, 2, 3])
    assert [b.proto.label for b in at.get("download_button")].count("Download the handout (HTML)") == 1
    make, mime = made["cldash-handout-runs-1-3.html"]
    assert mime == "text/html" and make().decode().startswith("<!DOCTYPE html>")


def test_point_labels_that_would_cover_one_another_are_left_off():
    import plotly.graph_objects as go

    from cldash.dashboard.report import _uncrowded

    def point(name, x, y):
        return go.Scatter(x=[x], y=[y], mode="markers+text", text=[name], name=name)

    # #2 sits on #1 (same numbers), #3 is apart on the left, #4 on the right: its label turns left, off the legend
    fig = _uncrowded(go.Figure([point("#1 LoRA r=4", 0.3, 0.7), point("#2 LoRA r=16", 0.3, 0.7),
                                point("#3 full FT", 0.1, 0.2), point("#4 EBLoRA r=16", 0.9, 0.5)]))
    assert [t.mode for t in fig.data] == ["markers+text", "markers", "markers+text", "markers+text"]
    assert [fig.data[k].textposition for k in (0, 2, 3)] == ["top right", "top right", "top left"]
