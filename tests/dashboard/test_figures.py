"""Figure builders are pure functions: check the numbers they put on screen."""

import numpy as np
import pandas as pd
import pytest

from cldash.dashboard import figures as F

M = {"R": np.array([[0.1, 0.2], [0.9, 0.3], [0.5, 0.8]]), "general": {"upright": [0.95, 0.7, 0.6]},
     "rows": [0, 1, 2], "tasks": ["rotate 45", "rotate 90"], "metric": "accuracy"}


def test_downsample_keeps_size_bounded_and_means():
    df = pd.DataFrame({"step": np.arange(1, 10001), "value": np.arange(1, 10001, dtype=float), "label": "a"})
    out = F.downsample(df, max_points=100, by="label")
    assert len(out) == 100
    assert out.step.iloc[-1] == 10000                      # the last point stays where it was
    assert out.value.iloc[0] == pytest.approx(50.5)        # mean of the first bucket (1..100)
    small = df.head(50)
    assert F.downsample(small, max_points=100).equals(small)


def test_accuracy_matrix_figure_shows_R_with_general_column():
    fig = F.accuracy_matrix_figure(M, title="x")
    (hm,) = fig.data
    np.testing.assert_allclose(np.array(hm.z, dtype=float), np.column_stack([M["R"], [0.95, 0.7, 0.6]]))
    assert list(hm.y) == ["before", "after T1", "after T2"]
    assert list(hm.x) == ["T1", "T2", "general"]
    assert (hm.zmin, hm.zmax) == (0.0, 1.0)
    assert hm.text[1][0] == "0.90"


def test_difference_is_a_minus_b_on_a_symmetric_scale():
    B = {**M, "R": M["R"] - 0.1, "general": {"upright": [0.95, 0.8, 0.6]}}
    (hm,) = F.matrix_difference_figure(M, B).data
    z = np.array(hm.z, dtype=float)
    np.testing.assert_allclose(z[:, :2], 0.1)
    assert z[1, 2] == pytest.approx(-0.1)
    assert hm.zmin == -hm.zmax and hm.zmax == pytest.approx(0.1)
    with pytest.raises(ValueError, match="different task lists"):
        F.matrix_difference_figure(M, {**M, "tasks": ["a", "b"]})


def test_pareto_front_keeps_the_non_dominated_runs():
    t = pd.DataFrame({"forgetting": [0.1, 0.2, 0.3, 0.15], "acc": [0.5, 0.7, 0.6, 0.4], "label": list("abcd")})
    front = F.pareto_front(t, "forgetting", "acc")
    assert front.label.tolist() == ["a", "b"]
    fig = F.pareto_figure(t)
    assert [tr.name for tr in fig.data] == ["a", "b", "c", "d", "Pareto front"]


def test_spectrum_heatmap_is_log10_sigma_by_step_and_capped():
    s = pd.DataFrame({"step": [10, 20, 30], "values": [np.array([4.0, 1.0]), np.array([8.0, 2.0, 0.5]),
                                                          np.array([10.0])]})
    (hm,) = F.spectrum_heatmap(s).data
    z = np.array(hm.z, dtype=float)
    assert z.shape == (3, 3)
    assert z[0, 1] == pytest.approx(np.log10(8.0)) and np.isnan(z[2, 0]) and np.isnan(z[1, 2])
    many = pd.DataFrame({"step": np.arange(1000), "values": [np.ones(4)] * 1000})
    assert len(F.spectrum_heatmap(many, max_columns=50).data[0].x) == 50


def test_layer_module_grid_and_measures():
    df = pd.DataFrame({"layer": [0, 0, 1, 1], "module_type": ["q", "v", "q", "v"], "erank": [1.0, 2.0, 3.0, 4.0]})
    (hm,) = F.layer_module_heatmap(df, "erank").data
    np.testing.assert_allclose(np.array(hm.z, dtype=float), [[1, 2], [3, 4]])
    assert list(hm.x) == ["q", "v"] and list(hm.y) == ["layer 0", "layer 1"]
    sp = pd.DataFrame({"step": [1, 2, 1, 2], "label": ["a", "a", "b", "b"], "erank": [1, 2, 3, 4.0],
                       "frobenius": [1, 1, 2, 2.0]})
    fig = F.measures_figure(sp, ["erank", "frobenius"])
    assert len(fig.data) == 4 and sum(tr.showlegend for tr in fig.data) == 2


def test_spectrum_overlay_normalises_by_the_top_value():
    fig = F.spectrum_overlay({"lora": np.array([4.0, 2.0, 0.0]), "full": np.array([3.0, 3.0])}, normalize=True)
    assert list(fig.data[0].y) == [1.0, 0.5] and list(fig.data[1].y) == [1.0, 1.0]


def test_a_fork_s_matrix_has_a_line_under_its_fork_row_and_a_note():
    fig = F.accuracy_matrix_figure(M, fork_after=1, fork_note="fork of #3 after task 1")
    (line,) = fig.layout.shapes
    assert (line.y0, line.y1, line.x0, line.x1) == (1.5, 1.5, -0.5, 2.5)   # between 'after T1' and 'after T2'
    (note,) = fig.layout.annotations
    assert note.text == "fork of #3 after task 1" and note.y == 1.5
    assert not F.accuracy_matrix_figure(M).layout.shapes
    assert not F.accuracy_matrix_figure({**M, "R": M["R"][:1], "rows": [0], "general": {"upright": [0.95]}},
                                        fork_after=1).layout.shapes   # a fork with no row 1 yet: no line
    assert F.accuracy_matrix_figure(M, fork_after=2).layout.annotations[0].text == "fork after task 2"


# -- charts that read on a projector (issue 15) -------------------------------------------------------------
from cldash.dashboard import labels as L  # noqa: E402

pytestmark = pytest.mark.floors   # run again at the lowest declared versions (.ci/floors.sh)


def run(rid, method="lora", **opts):
    return {"id": rid, "seed": 0, "config": {"method": method, "method_options": opts, "policy": "single",
                                             "stream": "digits-rotate"}}


def test_a_run_keeps_its_colour_on_every_chart_and_the_palette_is_distinct():
    assert len(set(L.RUN_PALETTE)) == len(L.RUN_PALETTE) == 7 and "#F0E442" not in L.RUN_PALETTE  # no pale yellow
    assert [L.run_color(i) for i in (1, 2, 3)] == ["#0072B2", "#D55E00", "#009E73"]
    assert all(L.run_color(i) != L.run_color(i + 1) for i in range(1, 30))       # consecutive runs differ
    assert L.run_color(8) == L.run_color(1) and L.run_symbol(8) != L.run_symbol(1)  # round the palette: a new symbol
    a, b = L.run_style(run(4, rank=8)), L.run_style(run(5, "full"))
    assert (a["name"], b["name"]) == ("#4 LoRA r=8", "#5 full FT")
    loss = pd.DataFrame({"step": [1, 2, 1, 2], "value": [1.0, 0.5, 2.0, 1.0], "label": [4, 4, 5, 5]})
    lines = F.series_figure(loss, styles={4: a, 5: b})
    overlay = F.spectrum_overlay({a["name"]: np.array([2.0, 1.0]), b["name"]: np.array([3.0, 1.0])},
                                 styles={s["name"]: s for s in (a, b)})
    table = pd.DataFrame({"name": [a["name"], b["name"]], "forgetting": [0.2, 0.5], "acc": [0.6, 0.4],
                          "color": [a["color"], b["color"]], "symbol": [a["symbol"], b["symbol"]]})
    points = F.pareto_figure(table, label="name")
    bars = F.headline_figure(table.assign(general_retention=[0.9, 0.5], la=[0.9, 0.95]))
    for fig in (lines, overlay):
        assert [(t.name, t.line.color) for t in fig.data] == [(a["name"], a["color"]), (b["name"], b["color"])]
    assert [(t.name, t.marker.color, t.text[0]) for t in points.data[:2]] == \
        [(a["name"], a["color"], a["name"]), (b["name"], b["color"], b["name"])]   # labelled next to the point
    assert list(bars.data[0].marker.color) == [a["color"], b["color"]]


def test_a_log_loss_axis_has_ticks_that_read_as_numbers():
    loss = pd.DataFrame({"step": np.arange(1, 101), "value": np.geomspace(2.3, 0.03, 100), "label": "loss"})
    axis = F.series_figure(loss, log_y=True).layout.yaxis
    assert axis.type == "log" and list(axis.tickvals) == [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    assert list(axis.ticktext) == ["0.05", "0.1", "0.2", "0.5", "1", "2"]
    assert F.log_ticks(1e-3, 20.0) == [0.001, 0.01, 0.1, 1.0, 10.0]               # over 3 decades: powers of ten
    assert F.log_ticks(1.3, 1.6) == [1.0, 2.0]                                     # narrow: the neighbours


def test_task_starts_are_labelled_lines_and_fonts_are_projector_sized():
    df = pd.DataFrame({"step": [0, 150, 290], "value": [1.0, 0.5, 0.4], "label": "loss"})
    fig = F.series_figure(df, boundaries=[100, 200, 300], task_names={1: "rotate 45°", 2: "rotate 90°"})
    notes = [a for a in fig.layout.annotations if a.name and a.name.startswith("task start")]
    assert [(a.text, a.x, a.hovertext) for a in notes] == [("T1", 0, "rotate 45°"), ("T2", 100, "rotate 90°"),
                                                            ("T3", 200, "task 3 starts")]
    assert sorted(s.x0 for s in fig.layout.shapes if s.opacity) == [100, 200]      # the end of the run has no line
    assert fig.layout.font.size >= 14 and fig.layout.xaxis.tickfont.size >= 14
    assert fig.layout.showlegend is False                                          # one line: no legend box
    assert tuple(fig.layout.xaxis.range) == (0, pytest.approx(306))                # the whole run, from the start


def test_a_score_chart_before_any_evaluation_says_it_is_waiting():
    empty = F.anytime_figure(pd.DataFrame(), {0: "general", 1: "a"}, "accuracy", [10, 20])
    assert not empty.data and "waiting for the first evaluation" in [a.text for a in empty.layout.annotations]
    first = pd.DataFrame({"step": [0, 0], "task": [1, 0], "metric": "accuracy", "value": [0.2, 0.9]})
    fig = F.anytime_figure(first, {0: "general", 1: "rotate 45°"}, "accuracy", [10, 20])
    assert [(t.name, t.mode) for t in fig.data] == [("T1 · rotate 45°", "markers"), ("general", "markers")]


def test_spectrum_heatmap_colours_are_clipped_to_four_decades_below_the_largest_value():
    s = pd.DataFrame({"step": [10, 20], "values": [np.array([4.0, 1e-3, 1e-15]), np.array([8.0, 2.0, 1e-12])]})
    fig = F.spectrum_heatmap(s)
    (hm,) = fig.data
    assert hm.zmax == pytest.approx(np.log10(8.0)) and hm.zmin == pytest.approx(np.log10(8.0 * 1e-4))
    assert np.array(hm.z, dtype=float)[2, 0] == pytest.approx(-15)                 # the data itself is kept
    assert "lowest colour" in fig.layout.title.subtitle.text and "10<sup>-4</sup>" in fig.layout.title.subtitle.text
    assert list(hm.y) == [1, 2, 3] and fig.layout.yaxis.tickformat == "d"
    lora = F.spectrum_heatmap(s.assign(values=[np.array([4.0, 0.5]), np.array([8.0, 2.0])]))
    assert lora.data[0].zmin == pytest.approx(np.log10(0.5)) and not lora.layout.title.subtitle.text  # none to clip


def test_headline_bars_follow_the_table_with_values_and_spread_printed():
    table = pd.DataFrame({"name": ["LoRA r=8", "full FT"], "color": ["#0072B2", "#D55E00"],
                          "acc": [0.55, 0.40], "acc_std": [0.02, np.nan], "forgetting": [0.3, 0.6],
                          "forgetting_std": [0.01, np.nan], "general_retention": [0.8, 0.2], "la": [0.9, np.nan]})
    fig = F.headline_figure(table)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["final accuracy", "forgetting", "general-task retention", "learning accuracy"]
    assert all(list(b.y) == ["LoRA r=8", "full FT"] for b in bars)
    assert list(bars[0].x) == [0.55, 0.40] and list(bars[1].x) == [0.3, 0.6]
    assert bars[0].error_x.array[0] == 0.02 and np.isnan(bars[0].error_x.array[1])   # no bar where no spread
    assert bars[0].error_x.visible and not bars[2].error_x.visible
    values = [t for t in fig.data if t.type == "scatter"]
    # each value printed once: past the bar where there is room, else inside the bar at its base (a score's
    # axis stops at 1.05, so 0.9 has no room past its bar)
    printed = [[o or i for o, i in zip(v.text, b.text)] for v, b in zip(values, bars)]
    assert printed[0] == ["0.550 ± 0.020", "0.400"] and printed[3] == ["0.900", "n/a"]
    assert list(bars[3].text) == ["0.900", ""] and bars[3].insidetextanchor == "start"
    assert values[0].x[0] > 0.57                                                    # printed past the error bar
    assert fig.layout.yaxis.autorange == "reversed"                                 # the table's first row on top


def test_rank_axes_and_grids_have_whole_number_ticks_and_modules_their_own_look():
    assert [F.integer_dtick(s) for s in (1, 3, 15, 16, 60)] == [1, 1, 2, 2, 10]
    df = pd.DataFrame({"step": [1, 2], "value": [14.0, 15.0], "label": "m"})
    axis = F.series_figure(df, integer_y=True).layout.yaxis
    assert axis.tickformat == "d" and axis.dtick == 1 and float(axis.dtick).is_integer()   # 14 and 15 both labelled
    grid = pd.DataFrame({"layer": [0, 0, 1, 1], "module_type": ["q", "v", "q", "v"], "value": [8.0, 7, 8, 6]})
    (hm,) = F.layer_module_heatmap(grid, "value", value_title="active rank", integer=True).data
    assert hm.colorbar.title.text == "active rank" and hm.colorbar.tickformat == "d" and hm.text[0][1] == "7"
    kinds = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]
    modules = pd.DataFrame({"name": [f"vit.layers.{layer}.x.{k}" for layer in (0, 1) for k in kinds],
                            "layer": [layer for layer in (0, 1) for _ in kinds], "kind": kinds * 2})
    looks = F.module_styles(modules)
    assert len({(s["color"], s["dash"]) for s in looks.values()}) == 12
    assert looks["vit.layers.1.x.v_proj"] == {"name": "layer 1 · v_proj", "color": F.PALETTE[2], "dash": "dash"}


def test_no_literal_underscores_in_titles_and_legends():
    texts = [F.spectrum_overlay({"a": np.ones(2)}).layout.yaxis.title.text,
             F.spectrum_overlay({"a": np.ones(2)}, normalize=True).layout.yaxis.title.text,
             F.layer_module_heatmap(pd.DataFrame({"layer": [0], "module_type": ["q"], "stable_rank": [1.0]}),
                                    "stable_rank").data[0].colorbar.title.text,
             *L.MEASURE_LABELS.values(), *L.SCALAR_LABELS.values(), L.scalar_label("some_new_scalar")]
    assert not [t for t in texts if "_" in t]
    assert L.scalar_label("active_rank_share") == "share of ranks still active"


# -- every chart readable at 1024 x 768 (issue 27): one table of every builder the pages and the handout use ---
LONG = "#5 lora r=16 single · digits-rotate · seed 0"
STEPS = pd.DataFrame({"step": list(range(0, 300, 10)) * 6, "value": np.linspace(2e-7, 9e-7, 180),
                      "label": [f"module {k}" for k in range(6) for _ in range(30)]})
EVALS = pd.DataFrame({"step": [s for s in (0, 100, 200) for _ in range(5)], "task": [0, 1, 2, 3, 4] * 3,
                      "metric": "accuracy", "value": np.linspace(0.1, 0.99, 15)})
RUNS = pd.DataFrame({"name": [f"#{k} LoRA r={k}" for k in range(1, 6)], "color": L.RUN_PALETTE[:5],
                     "symbol": ["circle"] * 5, "acc": [0.9, 0.5, 0.2, 0.7, 0.95],
                     "forgetting": [0.1, 0.3, 0.5, 0.2, 0.0],
                     "general_retention": [0.9, 0.8, 0.7, 0.6, 1.1], "la": [0.99, 0.95, 0.9, 0.97, 0.98],
                     "acc_std": [0.02] * 5})
SPECTRA = pd.DataFrame({"step": [10, 20, 30] * 5, "label": [f"run {k}" for k in range(5) for _ in range(3)],
                        "erank": np.linspace(1, 8, 15), "top1_energy": np.linspace(0.2, 0.9, 15),
                        "stable_rank": np.linspace(1, 3, 15), "frobenius": np.linspace(0.1, 2, 15),
                        "values": [np.array([4.0, 1.0, 1e-9])] * 15})
GRID = pd.DataFrame({"layer": [0, 0, 1, 1], "module_type": ["q_proj", "v_proj"] * 2, "value": [8.0, 7, 8, 6]})

BUILDERS = {
    "matrix": lambda: F.accuracy_matrix_figure(M, title=LONG),
    "matrix of a fork": lambda: F.accuracy_matrix_figure(M, title=LONG, fork_after=1, fork_note="fork of #3"),
    "matrix of a seed mean": lambda: F.accuracy_matrix_figure(
        {**M, "sd": np.zeros((3, 3)), "n": [2, 2, 2]}, title="#5 lora r=16 single · mean of 2 seeds"),
    "difference": lambda: F.matrix_difference_figure(M, M, title="A − B (blue: A scores higher)"),
    "headline": lambda: F.headline_figure(RUNS),
    "pareto": lambda: F.pareto_figure(RUNS, label="name", x_err="forgetting_std", y_err="acc_std"),
    "ranks per module": lambda: F.series_figure(STEPS, title="#4 LoRA r=8: share of ranks still active per module "
                                                "over steps", boundaries=[100, 200, 300]),
    "loss": lambda: F.series_figure(STEPS.assign(label="loss"), log_y=True, title="training loss"),
    "live scores": lambda: F.anytime_figure(EVALS, {0: "general", 1: "rotate 0°", 2: "rotate 45°", 3: "a", 4: "b"},
                                            "accuracy", [100, 200, 300], title="score of every task over training"),
    "spectrum heatmap": lambda: F.spectrum_heatmap(SPECTRA, title="#4 LoRA r=8 · vit.layers.1.attn.q_proj: singular "
                                                   "values over steps (cumulative)", boundaries=[15, 30]),
    "spectrum overlay": lambda: F.spectrum_overlay({f"#{k}": np.array([3.0, 1.0]) for k in range(5)}, title="q"),
    "shape measures": lambda: F.measures_figure(SPECTRA, ["erank", "top1_energy", "stable_rank", "frobenius"],
                                                boundaries=[15, 30], title="q_proj: cumulative update (solid, "
                                                "against W₀) and per-task update (dashed)"),
    "layer grid": lambda: F.layer_module_heatmap(GRID, "value", title="active rank at the end of task 2 (step 200)",
                                                 value_title="active rank", integer=True),
    "conflict": lambda: F.conflict_heatmap(["a", "b", "c"], np.eye(3), [0, 1, 2]),
}


def axes(fig) -> list:
    return [*fig.select_xaxes(), *fig.select_yaxes()]


def legend_items(fig) -> int:
    return len({t.legendgroup or t.name for t in fig.data if t.showlegend is not False and t.name})


@pytest.mark.parametrize("name", BUILDERS)
def test_every_chart_text_is_at_least_14_px_and_every_axis_has_automargin(name):
    fig = BUILDERS[name]()
    lay = fig.layout
    sizes = {"layout": lay.font.size, "legend": lay.legend.font.size, "hover": lay.hoverlabel.font.size}
    if lay.title.text:
        sizes["title"] = lay.title.font.size
    sizes |= {f"note {a.text!r}": a.font.size for a in lay.annotations}
    for ax in axes(fig):
        sizes |= {f"{ax.plotly_name} ticks": ax.tickfont.size, f"{ax.plotly_name} title": ax.title.font.size}
        assert ax.automargin is True, (name, ax.plotly_name)
    for t in fig.data:
        if getattr(t, "textfont", None) is not None and t.textfont.size is not None:
            sizes[f"{t.name} text"] = t.textfont.size
        if "colorbar" in t:
            sizes |= {"colour bar ticks": t.colorbar.tickfont.size, "colour bar title": t.colorbar.title.font.size}
    small = {k: v for k, v in sizes.items() if v is None or v < 14}
    assert not small, (name, small)


@pytest.mark.parametrize("name", BUILDERS)
def test_legends_with_many_items_sit_below_and_titles_fit_their_margin(name):
    fig = BUILDERS[name]()
    lay = fig.layout
    if legend_items(fig) > F.LEGEND_SIDE_MAX and lay.showlegend is not False:
        assert lay.legend.orientation == "h" and lay.legend.y < 0, name
    if lay.title.text:
        lines = lay.title.text.count("<br>") + 1 + bool(lay.title.subtitle.text)
        assert all(len(line) <= F.TITLE_CHARS for line in lay.title.text.split("<br>")), lay.title.text
        assert lay.margin.t >= 20 + F.LINE_PX * lines, name
    for ax in fig.select_xaxes():   # steps and scores lie flat
        assert ax.tickangle in (None, 0), (name, ax.plotly_name)


@pytest.mark.parametrize("name", ["headline", "pareto", "live scores"])
def test_accuracy_axes_stop_just_past_one(name):
    fig = BUILDERS[name]()
    ranges = [ax.range for ax in fig.select_yaxes() if ax.range] if name != "headline" else \
        [fig.layout[f"xaxis{k}"].range for k in ("", "4")]   # final accuracy and learning accuracy
    assert ranges and all(lo >= -1e-9 and hi <= 1.05 for lo, hi in ranges), ranges


def test_steps_read_as_whole_numbers_and_tiny_values_never_as_si_prefixes():
    fig = BUILDERS["ranks per module"]()
    assert fig.layout.xaxis.tickformat == ",d"                 # 1,500, never 1.5k
    assert fig.layout.yaxis.exponentformat == "power"         # 2×10⁻⁷, never "200n"


@pytest.mark.parametrize("name", ["matrix", "matrix of a fork", "matrix of a seed mean"])
def test_a_matrix_has_a_vertical_colour_bar_and_a_short_title_with_the_full_one_in_its_hover(name):
    fig = BUILDERS[name]()
    (hm,) = fig.data
    assert hm.colorbar.orientation in (None, "v") and list(hm.colorbar.tickvals) == [0, 0.5, 1.0]
    title = fig.layout.title.text
    assert len(title) <= 24 and title.startswith("#5 lora r=16")
    assert hm.hovertemplate.startswith(("#5 lora r=16 single · digits-rotate · seed 0<br>",
                                        "#5 lora r=16 single · mean of 2 seeds<br>"))


def test_grids_wrap_the_shape_measures_and_the_headline_two_panels_a_row():
    measures, bars = BUILDERS["shape measures"](), BUILDERS["headline"]()
    for fig in (measures, bars):
        domains = sorted({tuple(ax.domain) for ax in fig.select_xaxes()})
        assert len(domains) == 2 and domains[0][1] < domains[1][0]            # two columns, a gap between them
        rows = sorted({tuple(ax.domain) for ax in fig.select_yaxes()})
        assert len(rows) == 2 and rows[0][1] < rows[1][0]                      # two rows, a gap between them
    assert [a.text for a in bars.layout.annotations][:2] == ["<b>final accuracy</b><br>higher is better",
                                                              "<b>forgetting</b><br>lower is better"]
    assert sum(ax.title.text == "step" for ax in measures.select_xaxes()) == 2   # under the bottom row only


def test_an_unfinished_run_s_matrix_keeps_its_status_under_its_short_title():
    fig = F.accuracy_matrix_figure(M, title=LONG + " · unfinished (running, step 30/40)")
    assert fig.layout.title.text == "#5 lora r=16 single"
    assert fig.layout.title.subtitle.text == "unfinished (running, step 30/40)"
    assert fig.layout.margin.t >= 20 + 2 * F.LINE_PX
    assert not F.accuracy_matrix_figure(M, title=LONG).layout.title.subtitle.text


def test_short_titles_cut_at_the_first_dot_and_at_24_characters():
    assert L.short_title(LONG) == "#5 lora r=16 single"
    assert L.short_title("#12 eblora r=16 cumulative warm-start · x") == "#12 eblora r=16 cumulat…"
    assert len(L.short_title("x" * 40)) == 24
    assert F.wrap_title("short") == "short"
    assert F.wrap_title("a" * 30 + ": " + "b" * 40) == "a" * 30 + ":<br>" + "b" * 40
