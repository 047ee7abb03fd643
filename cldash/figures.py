"""Plotly figure builders: pure functions, data in, figure out (no store, no Streamlit).

Every figure keeps Plotly's own toolbar, whose camera button saves a PNG (`PLOTLY_CONFIG`).
Long series are thinned with `downsample` before they reach a figure, so a 10k-step run draws
as fast as a short one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
MAX_POINTS = 1500        # points per line drawn
MAX_COLUMNS = 300        # steps drawn in a spectrum heatmap
SEQUENTIAL = "Viridis"
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0}
DIVERGING = "RdBu"


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
    'after TK', with `fork_note` ("fork of #3 after task 1") on it: the rows above are its parent's."""
    labels, Z = matrix_columns(m)
    names = list(m["tasks"]) + list(m["general"])
    text = [["" if math.isnan(v) else f"{v:.2f}" for v in row] for row in Z]
    hover = "%{y} · %{customdata}<br>" + m.get("metric", "score") + " %{z:.3f}"
    if "sd" in m:
        sd = np.asarray(m["sd"], dtype=float)
        custom = [[[names[j], "" if math.isnan(sd[i, j]) else f" ± {sd[i, j]:.3f}", m["n"][i]]
                   for j in range(Z.shape[1])] for i in range(Z.shape[0])]
        hover = "%{y} · %{customdata[0]}<br>" + m.get("metric", "score") + \
            " %{z:.3f}%{customdata[1]} (mean of %{customdata[2]} seeds)"
    else:
        custom = [[names[j] for j in range(Z.shape[1])] for _ in range(Z.shape[0])]
    fig = go.Figure(go.Heatmap(
        z=Z, x=labels, y=row_labels(m["rows"]), zmin=zmin, zmax=zmax, colorscale=SEQUENTIAL, text=text,
        texttemplate="%{text}", customdata=custom, hovertemplate=hover + "<extra></extra>",
        showscale=show_scale, colorbar={"title": m.get("metric", "")}, hoverongaps=False))
    fig.update_yaxes(autorange="reversed", title="trained through")
    fig.update_xaxes(side="top")
    fig.update_layout(title={"text": title, "y": 0.98, "yanchor": "top"}, height=140 + 40 * max(1, Z.shape[0]),
                      margin={"t": 90, "l": 10, "r": 10, "b": 10})
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
                       yanchor="bottom", font={"size": 11, "color": "#ff4b4b"}, bgcolor="rgba(255,255,255,0.8)",
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
                               colorscale=DIVERGING, text=text, texttemplate="%{text}",
                               hovertemplate="%{y} · %{x}<br>difference %{z:+.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    fig.update_layout(title=title, height=120 + 40 * max(1, rows), margin={"t": 80, "l": 10, "r": 10, "b": 10})
    return fig


def _boundaries(fig: go.Figure, boundaries: list[int] | None, **kw) -> None:
    for b in boundaries or []:
        fig.add_vline(x=b, line_dash="dot", line_color="grey", opacity=0.6, **kw)


def series_figure(df: pd.DataFrame, y: str = "value", color: str | None = "label", title: str = "",
                  y_title: str = "", boundaries: list[int] | None = None, log_y: bool = False) -> go.Figure:
    """Lines of y over steps, one per `color` group (downsampled), with task boundaries dotted."""
    fig = go.Figure()
    df = downsample(df, by=color) if color else downsample(df)
    for name, g in (df.groupby(color, sort=False) if color else [("", df)]):
        fig.add_trace(go.Scatter(x=g["step"], y=g[y], mode="lines", name=str(name)))
    _boundaries(fig, boundaries)
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=y_title or y, height=360,
                      margin={"t": 40, "l": 10, "r": 10, "b": 10}, legend=LEGEND_BELOW)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def anytime_figure(evals: pd.DataFrame, task_names: dict[int, str], metric: str,
                   boundaries: list[int] | None = None, title: str = "") -> go.Figure:
    """Score of every task over training steps (anytime and task-end evaluations together)."""
    df = evals[evals.metric == metric].copy()
    df["label"] = [task_names.get(t, str(t)) for t in df.task]
    df = df.sort_values(["task", "step"])
    return series_figure(df[["step", "value", "label"]], title=title, y_title=metric, boundaries=boundaries)


def pareto_figure(table: pd.DataFrame, x: str = "forgetting", y: str = "acc", label: str = "label",
                  x_err: str | None = None, y_err: str | None = None, title: str = "") -> go.Figure:
    """Accuracy against forgetting, a point per run (or per group, with error bars over seeds);
    the Pareto front (least forgetting for the accuracy) is drawn as a step line."""
    fig = go.Figure()
    t = table.dropna(subset=[x, y])
    for name, g in t.groupby(label, sort=False):
        fig.add_trace(go.Scatter(
            x=g[x], y=g[y], mode="markers", name=str(name), marker={"size": 11},
            error_x={"type": "data", "array": g[x_err]} if x_err and x_err in g else None,
            error_y={"type": "data", "array": g[y_err]} if y_err and y_err in g else None))
    front = pareto_front(t, x, y)
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", line={"dash": "dash", "color": "grey",
                                                                              "shape": "hv"}, name="Pareto front"))
    fig.update_layout(title=title, xaxis_title=f"{x} (lower is better)", yaxis_title=f"{y} (higher is better)",
                      height=420, margin={"t": 40, "l": 10, "r": 10, "b": 10})
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


def spectrum_heatmap(spectra: pd.DataFrame, title: str = "", boundaries: list[int] | None = None,
                     max_columns: int = MAX_COLUMNS, log: bool = True) -> go.Figure:
    """Singular values over steps for one module: x step, y index i (σ_1 on top), colour log10 σ."""
    if spectra.empty:
        return go.Figure().update_layout(title=title or "no spectra logged yet")
    s = spectra.sort_values("step")
    if len(s) > max_columns:
        s = s.iloc[np.linspace(0, len(s) - 1, max_columns).round().astype(int)]
    k = max(len(v) for v in s["values"])
    Z = np.full((k, len(s)), np.nan)
    for j, v in enumerate(s["values"]):
        v = np.asarray(v, dtype=float)
        Z[: len(v), j] = np.log10(np.where(v > 0, v, np.nan)) if log else v
    fig = go.Figure(go.Heatmap(z=Z, x=s["step"].tolist(), y=[f"σ{i + 1}" for i in range(k)], colorscale="Magma",
                               colorbar={"title": "log10 σ" if log else "σ"},
                               hovertemplate="step %{x}, %{y}<br>" + ("log10 σ" if log else "σ") +
                               " %{z:.3f}<extra></extra>"))
    _boundaries(fig, boundaries)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, xaxis_title="step", height=360, margin={"t": 40, "l": 10, "r": 10, "b": 10})
    return fig


def spectrum_overlay(spectra: dict[str, np.ndarray], title: str = "", log_y: bool = True,
                     normalize: bool = False) -> go.Figure:
    """Singular values σ_i against i for several updates (e.g. one per method at the same step)."""
    fig = go.Figure()
    for name, v in spectra.items():
        v = np.asarray(v, dtype=float)
        v = v[v > 0]
        if normalize and len(v):
            v = v / v[0]
        fig.add_trace(go.Scatter(x=np.arange(1, len(v) + 1), y=v, mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title="index i", yaxis_title="σ_i / σ_1" if normalize else "σ_i",
                      height=360, margin={"t": 40, "l": 10, "r": 10, "b": 10})
    if log_y:
        fig.update_yaxes(type="log")
    return fig


MEASURE_LABELS = {"erank": "effective rank", "top1_energy": "top-1 energy share", "stable_rank": "stable rank",
                  "frobenius": "‖ΔW‖_F", "condition": "condition number", "numerical_rank": "numerical rank",
                  "entropy": "normalised spectral entropy", "w0_energy": "energy in W0's top directions"}


def measures_figure(spectra: pd.DataFrame, measures: list[str], color: str = "label", title: str = "",
                    boundaries: list[int] | None = None) -> go.Figure:
    """Small multiples: each shape measure over steps, one line per `color` group."""
    fig = make_subplots(rows=1, cols=len(measures), subplot_titles=[MEASURE_LABELS.get(m, m) for m in measures])
    df = downsample(spectra[["step", color, *measures]], by=color) if not spectra.empty else spectra
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880"]
    for k, (name, g) in enumerate(df.groupby(color, sort=False) if not df.empty else []):
        for c, m in enumerate(measures, start=1):
            fig.add_trace(go.Scatter(x=g["step"], y=g[m], mode="lines", name=str(name), legendgroup=str(name),
                                     showlegend=c == 1, line={"color": palette[k % len(palette)]}), row=1, col=c)
    for c in range(1, len(measures) + 1):
        for b in boundaries or []:
            fig.add_vline(x=b, line_dash="dot", line_color="grey", opacity=0.6, row=1, col=c)
    fig.update_layout(title=title, height=380, margin={"t": 60, "l": 10, "r": 10, "b": 10}, legend=LEGEND_BELOW)
    return fig


def layer_module_heatmap(df: pd.DataFrame, value: str, title: str = "", zmin: float | None = None,
                         zmax: float | None = None) -> go.Figure:
    """A layer x module-type grid of one value (e.g. effective rank at a task end); `df` has columns
    layer, module_type and `value`."""
    if df.empty:
        return go.Figure().update_layout(title=title or "nothing to show")
    grid = df.pivot_table(index="layer", columns="module_type", values=value, aggfunc="mean")
    text = [["" if (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}" for v in row] for row in grid.to_numpy()]
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=[f"layer {i}" for i in grid.index],
                               colorscale=SEQUENTIAL, zmin=zmin, zmax=zmax, text=text, texttemplate="%{text}",
                               colorbar={"title": value}))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, height=140 + 45 * len(grid), margin={"t": 40, "l": 10, "r": 10, "b": 10})
    return fig


def conflict_heatmap(tasks: list[str], matrix, order: list[int] | None = None) -> go.Figure:
    """Gradient-cosine matrix between tasks (cldash.orders) on a diverging scale from -1 to 1; with an
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
    fig.update_layout(title="Gradient conflict: cosine of full-weight gradients (mean over modules)",
                      yaxis={"autorange": "reversed"}, height=140 + 48 * len(tasks), margin={"t": 60})
    return fig
