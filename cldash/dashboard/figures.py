"""Plotly figure builders: pure functions, data in, figure out (no store, no Streamlit).

Every figure keeps Plotly's own toolbar, whose camera button saves a PNG (`PLOTLY_CONFIG`).
Long series are thinned with `downsample` before they reach a figure, so a 10k-step run draws
as fast as a short one.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cldash.dashboard.labels import MEASURE_LABELS, RUN_PALETTE, module_label, short_title, task_label, title_status

PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
MAX_POINTS = 1500        # points per line drawn
MAX_COLUMNS = 300        # steps drawn in a spectrum heatmap
SEQUENTIAL = "Viridis"
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0, "xanchor": "left"}
# Accuracy-like scores live in [0, 1]: their axes stop a little past 1, never at 1.5 (issue 27).
ACCURACY_RANGE = [0.0, 1.05]
BOUNDED_SCORES = ("accuracy", "task_il_accuracy", "exact_match", "acc", "la")
DIVERGING = "RdBu"
# Readable on a projector from the back of a room: 15 px text, 14 px ticks, 18 px titles.
FONT = {"size": 15, "color": "#222"}
TICK_FONT = {"size": 14}
TITLE_FONT = {"size": 18}
# The categorical palette of runs and module types (labels.RUN_PALETTE: Okabe-Ito without its yellow).
PALETTE = RUN_PALETTE
# matplotlib's magma from its second-darkest colour up: Streamlit's chart theme repaints the near-black
# "#000004" that starts Plotly's Magma as a pale pink, which made the smallest values look like the largest
MAGMA = ["#0b0924", *plotly.colors.sequential.Magma[1:]]
# Module types in the order a transformer block runs them (legends, grids); others follow in name order.
KIND_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "c_attn", "c_proj", "c_fc")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
# Colours below this share of the largest singular value shown are drawn as the lowest colour of a spectrum
# heatmap: the float32 rounding floor of an update is about max(m, n) * eps * σ1 (3e-5 σ1 at 256 x 64, the
# numerical-rank tolerance of cldash.measures.spectra), so below 1e-4 σ1 the values are noise, and a scale down to
# 1e-15 would leave the useful four decades one colour.
SPECTRUM_FLOOR = 1e-4


def downsample(df: pd.DataFrame, x: str = "step", max_points: int = MAX_POINTS, by: str | None = None) -> pd.DataFrame:
    """Thin a long series to about `max_points` rows per group by averaging consecutive buckets
    (numeric columns; the bucket's last x is kept so task boundaries stay put)."""
    if df.empty:
        return df
    groups = [df] if by is None else [g for _, g in df.groupby(by, sort=False)]
    out = []
    for g in groups:
        if len(g) <= max_points:
            out.append(g)
            continue
        g = g.sort_values(x)
        bucket = np.arange(len(g)) * max_points // len(g)
        numeric = g.select_dtypes("number").columns.drop(x, errors="ignore")
        agg = {c: "mean" for c in numeric}
        agg[x] = "last"
        for c in g.columns.difference(list(numeric) + [x]):
            agg[c] = "first"
        out.append(g.groupby(bucket, sort=True).agg(agg)[list(g.columns)])
    return pd.concat(out, ignore_index=True)


def _style(fig: go.Figure, *, legend_items: int | None = None, **layout) -> go.Figure:
    """The project's look: `layout` applied, then `readable` (the rules of a chart that reads on a projector)."""
    fig.update_layout(**layout)
    return readable(fig, legend_items=legend_items)


# A legend beside the plot takes about 150 px a name: with more names than this it goes below the plot, where a
# 1024 px projector page still leaves the plot its width (issue 27).
LEGEND_SIDE_MAX = 3
TITLE_CHARS = 60          # a title line's length at 18 px in a chart half a 1024 px page wide
LINE_PX = 26              # one line of 18 px title text, with its leading, and room around it
TITLE_LINE = 22           # one line of 18 px title text as Plotly spaces the lines of a <br>-broken title
LEGEND_GAP = 75           # px from a plot's bottom edge to a legend below it: 14 px ticks and an axis title


def wrap_title(text: str, width: int = TITLE_CHARS) -> str:
    """A long title broken into lines of at most about `width` characters (at ': ', ' · ', ' (' or a space),
    so that it never runs past the chart's edge; lines already broken with <br> are kept."""
    out = []
    for line in str(text).split("<br>"):
        while len(re.sub(r"<[^>]+>", "", line)) > width:
            # the first separator of these that leaves at least half a line, so a title breaks where it pauses
            cuts = [line.rfind(sep, 0, width) for sep in (": ", " · ", " (", " ")]
            cut = next((c for c in cuts if c >= width // 2), max(cuts))
            if cut <= 0:
                break
            keep = 1 if line[cut] in ":" else 0   # the colon stays on the first line, the bracket moves down
            out.append(line[: cut + keep].rstrip())
            line = line[cut + keep:].lstrip()
        out.append(line)
    return "<br>".join(out)


def readable(fig: go.Figure, *, legend_items: int | None = None) -> go.Figure:
    """Every rule that makes a chart readable at 1024 x 768 (issue 27), in one place, applied by every builder:
    - every text at least 14 px (layout 15, ticks, legend, hover, annotations and colour bars 14, title 18),
      each size set explicitly, so no default of Plotly's or of the page theme's is left smaller;
    - every axis with automargin, so no tick label or axis title is cut; tick labels horizontal; small and
      large values as powers of ten (2×10⁻⁷), never an SI prefix ("200n") a class misreads;
    - the title wrapped into short lines, and the top margin sized to its lines (and its subtitle's);
    - with more than LEGEND_SIDE_MAX legend items, the legend below the plot, horizontal, the chart taller."""
    layout = fig.layout
    title = layout.title.text or ""
    update: dict = {"font": FONT, "hoverlabel": {"font": {"size": 14}}, "legend": {"font": {"size": 14}}}
    # subplot titles (annotations in paper coordinates above a panel): the chart's title goes above their lines
    # and the task labels over a step chart ("T2", yref "y domain")
    panel_lines = max([a.text.count("<br>") + 1 for a in layout.annotations
                       if a.yanchor == "bottom" and a.text and (a.yref == "paper" or (a.yref or "").endswith("domain"))
                       and (a.y or 0) >= 0.99] or [0])
    lines = 0
    if title:
        title = wrap_title(title)
        subtitle = layout.title.subtitle.text or ""
        lines = title.count("<br>") + 1 + (subtitle.count("<br>") + 1 if subtitle else 0)
        # at the top of the chart, in a top margin sized to its lines (below), so it never meets the task labels
        # over the plot, a top axis's tick labels (a matrix's) or the panel titles
        update["title"] = {"text": title, "font": TITLE_FONT, "yref": "container", "yanchor": "top",
                           "x": 0.01, "xanchor": "left"}
    top = max(layout.margin.t if layout.margin.t is not None else 0, 20 + LINE_PX * lines + 22 * panel_lines)
    update["margin"] = {"t": top}
    if legend_items is not None and legend_items > LEGEND_SIDE_MAX:
        # the legend LEGEND_GAP px under the plot, clear of the step ticks and the axis title, in a bottom
        # margin sized for it (two names a row: a 350 px column holds no more), the chart taller by as much
        rows = math.ceil(legend_items / 2)
        height = (layout.height or 450)
        bottom = LEGEND_GAP + 24 * rows + 10
        height += bottom - (layout.margin.b or 0)
        update["legend"] = {**LEGEND_BELOW, "y": -LEGEND_GAP / max(100, height - top - bottom),
                            "font": {"size": 14}}
        update["margin"]["b"] = bottom
        update["height"] = height
    if title:
        # 10 px from the top; Plotly anchors a title's "top" at its first line's, so each further line would
        # rise above the chart's edge by one line: the anchor drops a line per line
        height = update.get("height", layout.height or 450)
        update["title"]["y"] = 1 - (10 + TITLE_LINE * title.count("<br>")) / height
    notes = [{**a.to_plotly_json(), "font": {**(a.font.to_plotly_json() if a.font else {}),
                                             "size": max(14, a.font.size or 0)}} for a in layout.annotations]
    if notes:
        update["annotations"] = notes
    fig.update_layout(**update)
    # invisible tick marks hold the labels off the axes: the y label "0" and the x label "10" met at a corner
    standoff = {"ticks": "outside", "ticklen": 6, "tickcolor": "rgba(0,0,0,0)"}
    fig.update_xaxes(automargin=True, tickfont=TICK_FONT, title_font=FONT, tickangle=0, **standoff)
    fig.update_yaxes(automargin=True, tickfont=TICK_FONT, title_font=FONT, exponentformat="power", **standoff)
    for trace in fig.data:
        if "colorbar" in trace:
            trace.colorbar.update(tickfont=TICK_FONT, title_font=TICK_FONT, exponentformat="power")
    return fig


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values of a log axis from lo to hi that read as numbers: 1-2-5 steps (0.1, 0.2, 0.5, 1, 2) over at
    most three decades, powers of ten over more (never Plotly's bare minor digits "4 3 2 1 9 8")."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return []
    lo, hi = min(lo, hi), max(lo, hi)
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mantissas = (1, 2, 5) if b - a <= 3 else (1,)
    ticks = [m * 10.0 ** e for e in range(a, b + 1) for m in mantissas]
    inside = [t for t in ticks if lo / 1.0001 <= t <= hi * 1.0001]
    if len(inside) < 2:   # a narrow range: the neighbours either side, so the axis has two labels at least
        below = [t for t in ticks if t < lo]
        above = [t for t in ticks if t > hi]
        inside = below[-1:] + inside + above[:1]
    return [float(f"{t:.6g}") for t in inside]


def _log_axis(fig: go.Figure, values, axis: str = "y") -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    ticks = log_ticks(float(v.min()), float(v.max())) if len(v) else []
    update = fig.update_yaxes if axis == "y" else fig.update_xaxes
    update(type="log", tickvals=ticks or None, ticktext=[f"{t:g}" for t in ticks] or None)


def integer_dtick(span: float, ticks: int = 8) -> int:
    """A whole-number tick step (1, 2, 5, 10, 20 ...) giving about `ticks` ticks over `span`: rank axes never
    show 14.5."""
    raw = max(1.0, float(span) / ticks) if math.isfinite(span) else 1.0
    e = 10 ** math.floor(math.log10(raw))
    return int(next(m * e for m in (1, 2, 5, 10) if m * e >= raw))


def _integer_axis(fig: go.Figure, values, axis: str = "y") -> None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    span = float(v.max() - v.min()) if len(v) else 1.0   # the shown range: ranks 15 and 16 get both labels
    (fig.update_yaxes if axis == "y" else fig.update_xaxes)(tickformat="d", dtick=integer_dtick(span), tick0=0)


def row_labels(rows: list[int]) -> list[str]:
    return ["before" if r == 0 else f"after T{r}" for r in rows]


def matrix_columns(m: dict) -> tuple[list[str], np.ndarray]:
    """Column labels (T1.., then general tasks) and the values of R with the general columns appended."""
    labels = [f"T{j + 1}" for j in range(len(m["tasks"]))] + ["general" if len(m["general"]) == 1 else f"G{k}"
                                                               for k in range(len(m["general"]))]
    Z = np.asarray(m["R"], dtype=float)
    if m["general"]:
        Z = np.column_stack([Z] + [np.asarray(c, dtype=float) for c in m["general"].values()])
    return labels, Z


def accuracy_matrix_figure(m: dict, title: str = "", zmin: float = 0.0, zmax: float = 1.0,
                           show_scale: bool = True, fork_after: int | None = None,
                           fork_note: str = "") -> go.Figure:
    """R[i][j] as an annotated heatmap: rows 'before', 'after T1', ...; columns tasks, then general.

    A mean over seeds (views.mean_matrix: with "sd" and "n") shows each cell's standard deviation and
    the row's number of seeds on hover. A fork's matrix (`fork_after` K) has a dashed line under row
    'after TK', with `fork_note` ("fork of #3 after task 1") on it: the rows above are its parent's.
    The title is cut short (labels.short_title: "#5 lora r=16 single"), so it never runs past a matrix a
    quarter of the page wide; the whole of it heads every cell's hover, and an unfinished run's status
    (labels.title_status) stays in sight as a subtitle. The colour bar (`show_scale`) is a
    vertical one beside the matrix with three ticks (0, 0.5, 1), each 14 px."""
    labels, Z = matrix_columns(m)
    names = list(m["tasks"]) + list(m["general"])
    text = [["" if math.isnan(v) else f"{v:.2f}" for v in row] for row in Z]
    full = str(title).replace("%", "%%")   # a literal % would start a hover template's field
    head = f"{full}<br>" if title else ""
    hover = head + "%{y} · %{customdata}<br>" + m.get("metric", "score") + " %{z:.3f}"
    if "sd" in m:
        sd = np.asarray(m["sd"], dtype=float)
        custom = [[[names[j], "" if math.isnan(sd[i, j]) else f" ± {sd[i, j]:.3f}", m["n"][i]]
                   for j in range(Z.shape[1])] for i in range(Z.shape[0])]
        hover = head + "%{y} · %{customdata[0]}<br>" + m.get("metric", "score") + \
            " %{z:.3f}%{customdata[1]} (mean of %{customdata[2]} seeds)"
    else:
        custom = [[names[j] for j in range(Z.shape[1])] for _ in range(Z.shape[0])]
    fig = go.Figure(go.Heatmap(
        z=Z, x=labels, y=row_labels(m["rows"]), zmin=zmin, zmax=zmax, colorscale=SEQUENTIAL, text=text,
        texttemplate="%{text}", textfont={"size": 15}, customdata=custom, hovertemplate=hover + "<extra></extra>",
        showscale=show_scale, hoverongaps=False,
        # one vertical bar beside the matrix, its title along it: a few ticks that never collide
        colorbar={"title": {"text": m.get("metric", ""), "side": "right"}, "orientation": "v", "thickness": 14,
                  "len": 1.0, "lenmode": "fraction", "nticks": 3,
                  "tickvals": [0, 0.5, 1.0] if (zmin, zmax) == (0.0, 1.0) else None}))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    status = title_status(title)   # an unfinished run says so under its short title
    _style(fig, title={"text": short_title(title), "subtitle": {"text": status, "font": {"size": 14}}} if status
           else short_title(title) if title else "", height=170 + 44 * max(1, Z.shape[0]),
           margin={"t": 100, "l": 10, "r": 10, "b": 10})
    if fork_after is not None and fork_after in m["rows"]:
        _fork_line(fig, m["rows"].index(fork_after), Z.shape[1], fork_note or f"fork after task {fork_after}")
    return fig


def _fork_line(fig: go.Figure, row: int, columns: int, note: str) -> None:
    """A dashed line between row `row` and the next (categories sit at 0, 1, ...: the gap is at row + 0.5)
    across every column, its note right-aligned above it."""
    y = row + 0.5
    fig.add_shape(type="line", x0=-0.5, x1=columns - 0.5, y0=y, y1=y, xref="x", yref="y", name="fork point",
                  line={"color": "#ff4b4b", "width": 3, "dash": "dash"})
    fig.add_annotation(x=columns - 0.5, y=y, xref="x", yref="y", text=note, showarrow=False, xanchor="right",
                       yanchor="bottom", font={"size": 14, "color": "#c00000"}, bgcolor="rgba(255,255,255,0.85)",
                       name="fork point")


def matrix_difference_figure(a: dict, b: dict, title: str = "") -> go.Figure:
    """A − B cell by cell on a symmetric diverging scale (blue: A higher)."""
    la, Za = matrix_columns(a)
    lb, Zb = matrix_columns(b)
    rows = min(Za.shape[0], Zb.shape[0])
    if a["tasks"] != b["tasks"] or la != lb:
        raise ValueError("the two runs have different task lists; their matrices cannot be subtracted")
    D = Za[:rows] - Zb[:rows]
    bound = float(np.nanmax(np.abs(D))) if np.isfinite(D).any() else 1.0
    bound = max(bound, 1e-6)
    text = [["" if math.isnan(v) else f"{v:+.2f}" for v in row] for row in D]
    fig = go.Figure(go.Heatmap(z=D, x=la, y=row_labels(a["rows"][:rows]), zmin=-bound, zmax=bound, zmid=0,
                               colorscale=DIVERGING, text=text, texttemplate="%{text}", textfont={"size": 15},
                               colorbar={"title": {"text": "A − B", "side": "right"}, "thickness": 12},
                               hovertemplate="%{y} · %{x}<br>difference %{z:+.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    _style(fig, title=title, height=130 + 44 * max(1, rows), margin={"t": 90, "l": 10, "r": 10, "b": 10})
    return fig


def task_starts(boundaries: list[int] | None) -> list[tuple[int, str]]:
    """Where each task starts on a step axis, with its label: [(0, "T1"), (300, "T2"), ...] from the steps at
    which tasks end (views.boundaries; the last one is the end of the run)."""
    ends = list(boundaries or [])
    return [(0, "T1")] + [(b, f"T{k + 2}") for k, b in enumerate(ends[:-1])] if ends else []


def _task_lines(starts: list[tuple[int, str]], xref: str = "x", yref: str = "y") -> list[dict]:
    """A dotted vertical line at each task start (the first, at step 0, invisible: the axis is there)."""
    return [{"type": "line", "x0": x, "x1": x, "xref": xref, "y0": 0, "y1": 1, "yref": f"{yref} domain",
             "line": {"dash": "dot", "color": "grey"}, "opacity": 0.7 if x else 0.0} for x, _ in starts]


def _boundaries(fig: go.Figure, boundaries: list[int] | None, names: dict[int, str] | None = None) -> None:
    """A dotted line where each task starts, labelled "T2" ... at the top (hover: the task's name).

    Added in one layout update: Plotly's add_vline re-validates the whole layout per line, which took 46 % of
    the Live page's server time with five tasks (bench/page_times.py --profile)."""
    starts = task_starts(boundaries)
    if not starts:
        return
    notes = [{"x": x, "xref": "x", "y": 1, "yref": "y domain", "text": label, "name": f"task start {label}",
              "font": {"size": 14, "color": "#555"}, "hovertext": (names or {}).get(k) or f"task {k} starts",
              "xanchor": "left", "yanchor": "bottom", "showarrow": False}
             for k, (x, label) in enumerate(starts, start=1)]
    fig.update_layout(shapes=[*fig.layout.shapes, *_task_lines(starts)],
                      annotations=[*fig.layout.annotations, *notes])


def _trace_order(df: pd.DataFrame, color: str | None, styles: dict | None) -> list[tuple[object, pd.DataFrame]]:
    groups = list(df.groupby(color, sort=False)) if color else [("", df)]
    if styles:   # in the order the styles list them (a legend in run or layer order), the rest after
        rank = {k: i for i, k in enumerate(styles)}
        groups.sort(key=lambda kv: rank.get(kv[0], len(rank)))
    return groups


def series_figure(df: pd.DataFrame, y: str = "value", color: str | None = "label", title: str = "",
                  y_title: str = "", boundaries: list[int] | None = None, log_y: bool = False,
                  styles: dict | None = None, integer_y: bool = False, task_names: dict[int, str] | None = None,
                  empty_note: str = "nothing logged yet") -> go.Figure:
    """Lines of y over steps, one per `color` group (downsampled), with a labelled dotted line where each task
    starts. `styles` maps a group to its look: {"name", "color", "dash", "symbol"} (labels.run_style,
    module_styles); a group of one point is drawn as a marker, so a chart never shows a legend over nothing.
    A log axis gets ticks that read as numbers (log_ticks); `integer_y` whole-number ticks (ranks)."""
    fig = go.Figure()
    df = downsample(df, by=color) if color else downsample(df)
    for name, g in _trace_order(df, color, styles):
        st = (styles or {}).get(name, {})
        fig.add_trace(go.Scatter(x=g["step"], y=g[y], mode="lines" if len(g) > 1 else "markers",
                                 name=st.get("name", str(name)),
                                 line={"color": st.get("color"), "dash": st.get("dash"), "width": 2.5},
                                 marker={"color": st.get("color"), "size": 9, "symbol": st.get("symbol")}))
    if df.empty:
        fig.add_annotation(text=empty_note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                           font={"size": 16, "color": "#666"}, name="empty")
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    _boundaries(fig, boundaries, task_names)
    if boundaries:   # the whole run from the start: a live chart fills in instead of rescaling every refresh
        last = float(df["step"].max()) if len(df) else 0.0
        fig.update_xaxes(range=[0, max(float(boundaries[-1]), last) * 1.02])
    _style(fig, title=title, xaxis_title="step", yaxis_title=y_title or y, height=380,
           margin={"t": 70, "l": 10, "r": 10, "b": 10}, showlegend=len(fig.data) > 1, legend_items=len(fig.data))
    _step_axis(fig)
    if log_y and not df.empty:
        _log_axis(fig, df[y])
    if integer_y and not df.empty:
        _integer_axis(fig, df[y])
    return fig


def _step_axis(fig: go.Figure, **where) -> None:
    """Steps as whole numbers with thousands separators ("1,500", never "1.5k"), few enough to lie flat."""
    fig.update_xaxes(tickformat=",d", nticks=6, tickangle=0, **where)


def anytime_figure(evals: pd.DataFrame, task_names: dict[int, str], metric: str,
                   boundaries: list[int] | None = None, title: str = "") -> go.Figure:
    """Score of every task over training steps (anytime and task-end evaluations together): "T1 · rotate 36°"
    for a stream task (its number as on the task-start lines), the general task by its name."""
    df = evals[evals.metric == metric].copy() if len(evals) else pd.DataFrame(columns=["step", "value", "task"])
    def label(t: int) -> str:
        return task_label(t, task_names.get(t, t if t > 0 else "general"))

    df["label"] = [label(t) for t in df.task]
    df = df.sort_values(["task", "step"])
    palette = {label(t): {"color": PALETTE[(t - 1) % len(PALETTE)] if t > 0 else "#777777",
                          "dash": "solid" if t > 0 else "dash"}
               for t in sorted(task_names, key=lambda t: (t <= 0, t))}
    fig = series_figure(df[["step", "value", "label"]], title=title, y_title=metric, boundaries=boundaries,
                        styles=palette, task_names={t: n for t, n in task_names.items() if t},
                        empty_note="waiting for the first evaluation")
    if len(df) and metric in BOUNDED_SCORES and df["value"].between(0, 1).all():
        fig.update_yaxes(range=ACCURACY_RANGE)
    return fig


def pareto_figure(table: pd.DataFrame, x: str = "forgetting", y: str = "acc", label: str = "label",
                  x_err: str | None = None, y_err: str | None = None, title: str = "",
                  color: str | None = "color", symbol: str | None = "symbol", text: bool = True) -> go.Figure:
    """Accuracy against forgetting, a point per run (or per group, with error bars over seeds), each in its
    run's colour and symbol (columns `color`, `symbol` when the table has them: views.compare_data) and named
    beside the point; the Pareto front (least forgetting for the accuracy) is drawn as a step line."""
    fig = go.Figure()
    t = table.dropna(subset=[x, y])
    # names beside the points only while they are few: more overlap, so they go to the hover and the legend
    text = text and t[label].nunique() <= LEGEND_SIDE_MAX
    for k, (name, g) in enumerate(t.groupby(label, sort=False)):
        marker = {"size": 14, "line": {"width": 1, "color": "white"}}
        if color and color in g:
            marker["color"] = g[color].iloc[0]
        if symbol and symbol in g:
            marker["symbol"] = g[symbol].iloc[0]
        fig.add_trace(go.Scatter(
            x=g[x], y=g[y], mode="markers+text" if text else "markers", name=str(name), marker=marker,
            text=[str(name)] * len(g) if text else None,
            textposition=("top right", "bottom right", "top left")[k % 3],   # clear of the error bars, apart
            hovertemplate=str(name).replace("%", "%%") + "<br>%{x:.3f}, %{y:.3f}<extra></extra>",
            textfont={"size": 14, "color": "#222"}, cliponaxis=False,   # dark: pale hues are faint as text
            error_x={"type": "data", "array": g[x_err]} if x_err and x_err in g else None,
            error_y={"type": "data", "array": g[y_err]} if y_err and y_err in g else None))
    front = pareto_front(t, x, y)
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", line={"dash": "dash", "color": "grey",
                                                                              "shape": "hv"}, name="Pareto front"))
    names = {key: what for key, what, _ in HEADLINE}
    _style(fig, title=title, xaxis_title=f"{names.get(x, x)} (lower is better)",
           yaxis_title=f"{names.get(y, y)} (higher is better)", height=480,
           margin={"t": 50, "l": 10, "r": 10, "b": 10}, legend_items=len(fig.data))
    if y in BOUNDED_SCORES and len(t) and t[y].between(0, 1).all():
        fig.update_yaxes(range=ACCURACY_RANGE)
    return fig


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another (lower x and higher y), sorted by x."""
    t = table.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    keep, best = [], -math.inf
    for idx, row in t.iterrows():
        if row[y] > best:
            keep.append(idx)
            best = row[y]
    return t.loc[keep]


# The Compare page's headline: what a class looks at first.
HEADLINE = (("acc", "final accuracy", True), ("forgetting", "forgetting", False),
            ("general_retention", "general-task retention", True), ("la", "learning accuracy", True))


def headline_figure(table: pd.DataFrame, label: str = "name", color: str = "color",
                    metrics: tuple[tuple[str, str, bool], ...] = HEADLINE, std_suffix: str = "_std",
                    title: str = "") -> go.Figure:
    """One horizontal bar chart per headline metric, side by side (final accuracy, forgetting, general
    retention, learning accuracy), a bar per row of `table` (a run, or a setting with the mean over its
    seeds) in the table's order from the top, each in the row's `color` with its value printed beside it;
    a `<metric>_std` column (views.seed_summary) adds ± one standard deviation as an error bar and to the
    printed value."""
    cols = 2 if len(metrics) > 1 else 1   # a 2 x 2 grid: four panels side by side leave each 170 px at 1024
    rows = math.ceil(len(metrics) / cols)
    # two short lines a title: one line ("general-task retention (higher is better)") is wider than a panel
    titles = [f"<b>{what}</b><br>{'higher' if up else 'lower'} is better" for _, what, up in metrics]
    names = [str(v) for v in table[label]] if len(table) else []
    panel = 60 + 40 * max(1, len(names))
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=min(0.3, 90 / (rows * panel + 90 * (rows - 1))) if rows > 1 else 0.0)
    colors = list(table[color]) if color in table else [PALETTE[k % len(PALETTE)] for k in range(len(table))]
    for c, (key, what, _) in enumerate(metrics):
        where = {"row": c // cols + 1, "col": c % cols + 1}
        values = np.asarray(table[key], dtype=float) if key in table else np.full(len(table), np.nan)
        spread = key + std_suffix
        sd = np.asarray(table[spread], dtype=float) if spread in table else np.full(len(table), np.nan)
        reach = np.nan_to_num(values) + np.nan_to_num(sd)
        printed = ["n/a" if not math.isfinite(v) else f"{v:.3f}" if not math.isfinite(e) else f"{v:.3f} ± {e:.3f}"
                   for v, e in zip(values, sd)]
        top = float(np.nanmax(np.r_[reach, 1e-9])) if len(reach) else 1.0
        low = float(min(0.0, np.nanmin(np.r_[values, 0.0])))
        # a score in [0, 1] gets the axis [0, 1.05]; any other metric room past its longest bar for the value.
        # A metric no row has yet (forgetting of a one-task run) gets the unit range, not a nano-scale one.
        known = values[np.isfinite(values)]
        bounded = key in BOUNDED_SCORES and bool(np.all((known >= 0) & (known <= 1)))
        high = ACCURACY_RANGE[1] if bounded else top * 1.6 if np.isfinite(values).any() and top > 1e-6 else 1.0
        # the value is printed past the bar and its error bar where there is room, else inside the bar at its
        # base (left), in the bar's contrasting colour, clear of the error bar at its end
        outside = (reach - low) < 0.6 * (high - low)
        fig.add_trace(go.Bar(x=values, y=names, orientation="h", marker={"color": colors}, name=what,
                             error_x={"type": "data", "array": sd, "visible": bool(np.isfinite(sd).any()),
                                      "thickness": 2, "width": 6, "color": "#333"},
                             text=[p if not o else "" for p, o in zip(printed, outside)], textposition="inside",
                             insidetextanchor="start", textfont={"size": 14}, constraintext="none",
                             customdata=printed, hovertemplate="%{y}<br>" + what + " %{customdata}<extra></extra>",
                             showlegend=False), **where)
        fig.add_trace(go.Scatter(x=np.maximum(reach, 0) + 0.02 * max(high - low, 0.05), y=names, mode="text",
                                 text=[p if o else "" for p, o in zip(printed, outside)],
                                 textposition="middle right", textfont={"size": 14}, hoverinfo="skip",
                                 showlegend=False, cliponaxis=False, name=f"{what} values"), **where)
        fig.update_xaxes(range=[low, high], zeroline=True, zerolinecolor="#999", nticks=5, **where)
    fig.update_yaxes(autorange="reversed", type="category")
    _style(fig, title=title, height=rows * panel + 90 * (rows - 1) + (110 if title else 80), bargap=0.25,
           margin={"t": 100 if title else 70, "l": 10, "r": 10, "b": 10})
    fig.update_annotations(font={"size": 15})
    return fig


def spectrum_heatmap(spectra: pd.DataFrame, title: str = "", boundaries: list[int] | None = None,
                     max_columns: int = MAX_COLUMNS, log: bool = True, floor: float = SPECTRUM_FLOOR) -> go.Figure:
    """Singular values over steps for one module: x step, y index i (σ1 on top), colour log10 σ. The colour
    scale runs up to log10 σmax, σmax the largest value over the steps shown, and down to the smallest value,
    but no lower than log10(floor · σmax) (SPECTRUM_FLOOR): smaller values, float32 noise, are drawn as the
    lowest colour, and the subtitle says so."""
    if spectra.empty:
        return _style(go.Figure(), title=title or "no spectra logged yet")
    s = spectra.sort_values("step")
    if len(s) > max_columns:
        s = s.iloc[np.linspace(0, len(s) - 1, max_columns).round().astype(int)]
    k = max(len(v) for v in s["values"])
    Z = np.full((k, len(s)), np.nan)
    for j, v in enumerate(s["values"]):
        v = np.asarray(v, dtype=float)
        Z[: len(v), j] = np.log10(np.where(v > 0, v, np.nan)) if log else v
    what = "log<sub>10</sub> σ" if log else "σ"
    colorbar = {"title": {"text": what, "side": "right"}, "thickness": 14}
    zmin = zmax = None
    subtitle = ""
    if np.isfinite(Z).any():
        top, bottom = float(np.nanmax(Z)), float(np.nanmin(Z))
        zmax = top
        zmin = max(bottom, top + math.log10(floor)) if log else 0.0
        if log and bottom < zmin:
            subtitle = (f"values below 10<sup>{round(math.log10(floor))}</sup>·σ<sub>max</sub> (float32 noise) "
                        "are drawn in the lowest colour")
    fig = go.Figure(go.Heatmap(z=Z, x=s["step"].tolist(), y=list(range(1, k + 1)), colorscale=MAGMA,
                               zmin=zmin, zmax=zmax, colorbar=colorbar,
                               hovertemplate="step %{x}, σ<sub>%{y}</sub><br>" + what + " %{z:.3f}<extra></extra>"))
    _boundaries(fig, boundaries)
    fig.update_yaxes(autorange="reversed", title="i (σ<sub>i</sub>, largest on top)")
    _integer_axis(fig, [1, k])
    _style(fig, title={"text": title, "subtitle": {"text": wrap_title(subtitle, 50), "font": {"size": 14}}}
           if subtitle else title, xaxis_title="step", height=440, margin={"t": 80, "l": 10, "r": 10, "b": 10})
    _step_axis(fig)
    return fig


def spectrum_overlay(spectra: dict[str, np.ndarray], title: str = "", log_y: bool = True,
                     normalize: bool = False, styles: dict | None = None) -> go.Figure:
    """Singular values σi against i for several updates (e.g. one per run at the same step), each in its
    style (`styles`: name -> {"color", "symbol", "dash"}, labels.run_style)."""
    fig = go.Figure()
    shown = []
    for name, v in spectra.items():
        v = np.asarray(v, dtype=float)
        v = v[v > 0]
        if normalize and len(v):
            v = v / v[0]
        shown.append(v)
        st = (styles or {}).get(name, {})
        fig.add_trace(go.Scatter(x=np.arange(1, len(v) + 1), y=v, mode="lines+markers", name=name,
                                 line={"color": st.get("color"), "dash": st.get("dash"), "width": 2.5},
                                 marker={"color": st.get("color"), "symbol": st.get("symbol"), "size": 8}))
    _style(fig, title=title, xaxis_title="index i",
           yaxis_title="σ<sub>i</sub> / σ<sub>1</sub>" if normalize else "σ<sub>i</sub>",
           height=400, margin={"t": 50, "l": 10, "r": 10, "b": 10}, legend_items=len(fig.data))
    everything = np.concatenate(shown) if shown else np.array([])
    if len(everything):
        _integer_axis(fig, [1, max(len(v) for v in shown)], axis="x")
    if log_y and len(everything):
        _log_axis(fig, everything)
    elif log_y:
        fig.update_yaxes(type="log")
    return fig


INTEGER_MEASURES = ("numerical_rank",)


def measures_figure(spectra: pd.DataFrame, measures: list[str], color: str = "label", title: str = "",
                    boundaries: list[int] | None = None, styles: dict | None = None) -> go.Figure:
    """Small multiples: each shape measure over steps, one line per `color` group, each in its style
    (`styles`: group -> {"name", "color", "dash"}; e.g. a run's colour, dashed for its per-task update)."""
    cols = 2 if len(measures) > 1 else 1   # a grid, two panels a row: four in a row overlap at 1024 px
    rows = math.ceil(len(measures) / cols)
    panel = 260
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[MEASURE_LABELS.get(m, m) for m in measures],
                        horizontal_spacing=0.14,
                        vertical_spacing=min(0.35, 110 / (rows * panel + 110 * (rows - 1))) if rows > 1 else 0.0)
    grid = [{"row": c // cols + 1, "col": c % cols + 1} for c in range(len(measures))]
    df = downsample(spectra[["step", color, *measures]], by=color) if not spectra.empty else spectra
    groups = _trace_order(df, color, styles) if not df.empty else []
    for k, (name, g) in enumerate(groups):
        st = (styles or {}).get(name, {})
        for c, m in enumerate(measures):
            fig.add_trace(go.Scatter(x=g["step"], y=g[m], mode="lines", name=st.get("name", str(name)),
                                     legendgroup=str(name), showlegend=c == 0,
                                     line={"color": st.get("color", PALETTE[k % len(PALETTE)]),
                                           "dash": st.get("dash"), "width": 2.5}), **grid[c])
    starts = task_starts(boundaries)[1:]   # every subplot's lines in one layout update (see _boundaries)
    fig.update_layout(shapes=[*fig.layout.shapes,
                              *[line for c in range(1, len(measures) + 1)
                                for line in _task_lines(starts, *(("x", "y") if c == 1 else (f"x{c}", f"y{c}")))]])
    for c, m in enumerate(measures):
        if m in INTEGER_MEASURES and not df.empty:
            v = df[m].to_numpy(dtype=float)
            fig.update_yaxes(tickformat="d", dtick=integer_dtick(float(np.nanmax(v)) if np.isfinite(v).any() else 1),
                             **grid[c])
        if c >= len(measures) - cols:   # the step title under the bottom row only: no title runs into a panel
            fig.update_xaxes(title_text="step", **grid[c])
    # the legend below always: beside a two-column grid it would take a panel's width
    _style(fig, title=title, height=rows * panel + 110 * (rows - 1) + 120, legend_items=max(len(groups), 4),
           margin={"t": 80, "l": 10, "r": 10, "b": 10})
    _step_axis(fig)
    fig.update_yaxes(nticks=5)
    fig.update_annotations(font={"size": 15})
    return fig


def layer_module_heatmap(df: pd.DataFrame, value: str, title: str = "", zmin: float | None = None,
                         zmax: float | None = None, value_title: str | None = None,
                         integer: bool = False) -> go.Figure:
    """A layer x module-type grid of one value (e.g. effective rank at a task end); `df` has columns
    layer, module_type and `value`. The colour bar is titled `value_title` (what the value is); `integer`
    prints whole numbers and gives the colour bar whole-number ticks (ranks)."""
    if df.empty:
        return _style(go.Figure(), title=title or "nothing to show")
    grid = df.pivot_table(index="layer", columns="module_type", values=value, aggfunc="mean")
    grid = grid[kind_order(grid.columns)]
    cells = grid.to_numpy(dtype=float)
    fmt = (lambda v: f"{v:.0f}") if integer else (lambda v: f"{v:.3g}")
    text = [["" if math.isnan(v) else fmt(v) for v in row] for row in cells]
    colorbar = {"title": {"text": value_title or value.replace("_", " "), "side": "right"}, "thickness": 14}
    if integer and np.isfinite(cells).any():
        colorbar.update(tickformat="d", dtick=integer_dtick(float(np.nanmax(cells) - np.nanmin(cells)), ticks=5))
    fig = go.Figure(go.Heatmap(z=cells, x=list(grid.columns), y=[f"layer {i}" for i in grid.index],
                               colorscale=SEQUENTIAL, zmin=zmin, zmax=zmax, text=text, texttemplate="%{text}",
                               textfont={"size": 15}, colorbar=colorbar))
    fig.update_yaxes(autorange="reversed")
    _style(fig, title=title, height=160 + 50 * len(grid), margin={"t": 50, "l": 10, "r": 10, "b": 10})
    return fig


def kind_order(kinds) -> list[str]:
    """Module types in KIND_ORDER (q, k, v, o, fc1, fc2 ...), the others after in name order."""
    kinds = sorted(set(kinds))
    return sorted(kinds, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k))


def module_styles(modules: pd.DataFrame) -> dict[str, dict]:
    """A look for each adapted module's line (modules: name, layer, kind, as Store.modules gives them), in
    layer order, then KIND_ORDER: the module type picks the colour (PALETTE: q, k, v, o, fc1, fc2 ...), the
    layer the dash, and the legend reads "layer 0 · q_proj", so 12 lines never share a look silently. Types
    beyond the palette cycle it."""
    if modules.empty:
        return {}
    kinds = kind_order(modules["kind"])
    layers = sorted({int(v) for v in modules["layer"] if v == v})
    rows = sorted(modules.itertuples(), key=lambda r: (r.layer if r.layer == r.layer else -1, kinds.index(r.kind),
                                                       r.name))
    out = {}
    for row in rows:
        layer = int(row.layer) if row.layer == row.layer else 0
        out[row.name] = {"name": module_label(row.name, layer, row.kind),
                         "color": PALETTE[kinds.index(row.kind) % len(PALETTE)],
                         "dash": DASHES[layers.index(layer) % len(DASHES)] if layer in layers else "solid"}
    return out


def conflict_heatmap(tasks: list[str], matrix, order: list[int] | None = None) -> go.Figure:
    """Gradient-cosine matrix between tasks (cldash.analysis.orders) on a diverging scale from -1 to 1; with an
    order, the consecutive pairs of that order are outlined."""
    C = np.asarray(matrix, dtype=float)
    labels = [f"T{j + 1}" for j in range(len(tasks))]
    fig = go.Figure(go.Heatmap(z=C, x=labels, y=labels, zmin=-1, zmax=1, colorscale=DIVERGING,
                               text=[[f"{v:.2f}" for v in row] for row in C], texttemplate="%{text}",
                               customdata=[[f"{tasks[i]} · {tasks[j]}" for j in range(len(tasks))]
                                           for i in range(len(tasks))],
                               hovertemplate="%{customdata}<br>cosine %{z:.3f}<extra></extra>",
                               colorbar={"title": "cos"}))
    for a, b in zip((order or [])[:-1], (order or [])[1:]):
        for i, j in ((a, b), (b, a)):
            fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                          line={"color": "black", "width": 2})
    fig.update_yaxes(autorange="reversed")
    return _style(fig, title="Gradient conflict: cosine of full-weight gradients (mean over modules)",
                  height=140 + 48 * len(tasks), margin={"t": 60})
