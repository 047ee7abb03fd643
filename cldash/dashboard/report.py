"""The handout: one self-contained HTML file of a comparison, for a class, that opens offline.

`handout_html(store, run_ids)` reads the runs the way the Compare page does (`views.compare_data`), draws
them with the dashboard's own figure builders (cldash.dashboard.figures) and writes one page: the runs compared, the
headline metrics first (a bar chart and the table, every metric with its definition and formula), accuracy
against forgetting, every run's accuracy matrix (interactive, with a colour bar), the loss curves, the
update's spectrum over steps and the runs' full configs. plotly.js is embedded once, in the file itself, and
every figure is a div with its JSON: the file makes no network request of any kind (no CDN, no web font).

`write_handout` writes it atomically (a temporary file, then a rename), so a failure leaves nothing
half-written. `cldash report` and the Compare page's download button both call these.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

import cldash
from cldash.core.errors import UserError
from cldash.core.text import id_ranges
from cldash.dashboard.figures import (
    HEADLINE as HEADLINE_FIGURE,
    PLOTLY_CONFIG,
    accuracy_matrix_figure,
    downsample,
    headline_figure,
    measures_figure,
    pareto_figure,
    series_figure,
    spectrum_overlay,
)
from cldash.dashboard.labels import ENDED, run_caption, run_label, run_style
from cldash.dashboard.views import CompareData, boundaries, compare_data
from cldash.measures.metrics import METRICS, fmt
from cldash.store import Store

# The numbers a class looks at first (issue 15): the bar chart and the first columns of the table.
HEADLINE = ("acc", "forgetting", "general_retention", "la", "bwt")
# the Compare page's four headline bars, and BWT (a handout is read without the table's hover help)
HEADLINE_BARS = (*HEADLINE_FIGURE, ("bwt", "backward transfer (BWT)", True))
LOSS_POINTS = 400        # points per run's loss curve: enough for its shape, small for 14 runs
SPECTRUM_MEASURES = ("top1_energy", "erank")
FONT_SIZE = 16           # figure text that reads on a projector
PARETO_PLOT_PX = (700, 400)   # accuracy against forgetting's plot area at a 1024 px page (legend beside it)
LABEL_CHAR_PX, LABEL_LINE_PX = 9, 24   # a point label's character width and line height at FONT_SIZE
MIN_FONT = 14            # no text smaller than this anywhere in a figure (the README's promise)


# -- the parts -------------------------------------------------------------------------------------------
def _metric(key: str):
    return next(m for m in METRICS if m.key == key)


def _loss_figure(store: Store, runs: list[dict]) -> go.Figure | None:
    frames = []
    for r in runs:
        loss = store.scalars(r["id"], names=["loss"])
        if len(loss):
            frames.append(loss[["step", "value"]].assign(label=run_label(r)))
    if not frames:
        return None
    df = downsample(pd.concat(frames, ignore_index=True), max_points=LOSS_POINTS, by="label")
    same = len({json.dumps(boundaries(r)) for r in runs}) == 1
    fig = series_figure(df, title="Training loss (log scale; dotted lines: task boundaries)", y_title="loss",
                        boundaries=boundaries(runs[0]) if same else None, log_y=True,
                        styles={run_label(r): run_style(r) for r in runs})
    return fig


def _spectrum_frames(store: Store, runs: list[dict]) -> pd.DataFrame:
    """Each run's shape measures of its cumulative update (W − W0) per logged step, averaged over its
    adapted modules."""
    frames = []
    for r in runs:
        df = store.spectra(r["id"], kind="cumulative", with_values=False)
        if len(df):
            mean = df.groupby("step", as_index=False)[list(SPECTRUM_MEASURES)].mean()
            frames.append(mean.assign(label=run_label(r)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _last_spectra(store: Store, runs: list[dict]) -> tuple[str, dict[str, np.ndarray]]:
    """One module that every run with spectra has, and each run's singular values of its cumulative update
    there at its last logged step."""
    at = store.spectra_at([r["id"] for r in runs], kind="cumulative")
    if at.empty:
        return "", {}
    counts = at.groupby("module")["run_id"].nunique()
    module = sorted(counts[counts == counts.max()].index)[0]
    labels = {r["id"]: run_label(r) for r in runs}
    rows = at[at.module == module]
    return module, {labels[rid]: v for rid, v in zip(rows.run_id, rows["values"])}


def _metrics_table(data: CompareData) -> str:
    order = [*HEADLINE, *[m.key for m in METRICS if m.key not in HEADLINE]]
    head = "".join(f"<th title=\"{_e(_metric(k).formula)}\">{_e(_metric(k).label)}</th>" for k in order)
    rows = []
    for r, (_, row) in zip(data.runs, data.metrics.iterrows()):
        cells = "".join(f"<td class=\"num{' head' if k in HEADLINE else ''}\">{fmt(row[k])}</td>" for k in order)
        mark = "" if r["status"] == ENDED else f" <span class=\"badge\">{_e(r['status'])}</span>"
        rows.append(f"<tr><th class=\"run\">{_e(row['label'])}{mark}</th>{cells}</tr>")
    return (f"<div class=\"scroll\"><table class=\"metrics\"><thead><tr><th>run</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _definitions() -> str:
    items = []
    for m in METRICS:
        better = "higher is better" if m.higher_is_better else "lower is better"
        # the formula typeset (MathML, drawn by the browser itself), then in plain text for copying
        items.append(f"<dt>{_e(m.label)}</dt><dd>{m.mathml}<span class=\"uses\"><code>{_e(m.formula)}</code> — "
                     f"uses {_e(m.cells)}; {better}.</span></dd>")
    return ("<p>R[i][j] is the score on task j after training through task i (row 0: the pre-trained model, "
            "before any training); T is the number of tasks; G is the general (pre-training) task's "
            f"column.</p><dl class=\"defs\">{''.join(items)}</dl>")


def _runs_list(data: CompareData) -> str:
    named = any(r.get("name") for r in data.runs)   # the name column only when some run has one
    rows = []
    for r, setting in zip(data.runs, data.metrics["setting"]):
        status = _e(r["status"]) if r["status"] == ENDED else f"<span class=\"badge\">{_e(r['status'])}</span>"
        name = f"<td>{_e(r.get('name') or '')}</td>" if named else ""
        rows.append(f"<tr><td class=\"num\">#{r['id']}</td><td>{_e(setting)}</td><td class=\"num\">{r['seed']}</td>"
                    f"<td>{status}</td><td class=\"num\">{r.get('step') or 0}/{r.get('total_steps') or '?'}</td>"
                    f"{name}</tr>")
    return ("<div class=\"scroll\"><table class=\"runs\"><thead><tr><th>run</th><th>method and options · stream</th>"
            "<th>seed</th>"
            f"<th>status</th><th>steps</th>{'<th>name</th>' if named else ''}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _configs(data: CompareData) -> str:
    out = []
    for r in data.runs:
        record = {"id": r["id"], "name": r.get("name"), "status": r["status"], "config": r["config"],
                  "versions": r.get("versions"), "device": r.get("device"), "weights": r.get("weights"),
                  "runtime": r.get("runtime")}
        text = json.dumps(record, indent=2, default=str, allow_nan=True)
        out.append(f"<details><summary>{_e(run_caption(r))}</summary><pre>{_e(text)}</pre></details>")
    return "".join(out)


# -- the page ---------------------------------------------------------------------------------------------
def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


# The handout's look is applied to each figure's JSON (plain dicts): plotly's update_* on figure objects cost
# about 0.2 s a figure here, most of the handout's build time.
def _at_least(node, size: int = MIN_FONT) -> None:
    """Every font in a figure's spec (layout, traces, colour bars, annotations) at least `size` px."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("font") and isinstance(value, dict) and isinstance(value.get("size"), (int, float)):
                value["size"] = max(value["size"], size)
            _at_least(value, size)
    elif isinstance(node, list):
        for value in node:
            _at_least(value, size)


def _styled(spec: dict) -> dict:
    """Text that reads on a projector: larger fonts, a white background, dark text and light grid lines; and a
    figure as wide as the page, its margins grown to fit its labels (automargin), so no label is cut."""
    layout = spec.setdefault("layout", {})
    layout.pop("width", None)
    layout["autosize"] = True
    layout["font"] = {**layout.get("font", {}), "size": FONT_SIZE, "color": "#111111"}
    layout.update(paper_bgcolor="white", plot_bgcolor="white")
    title = layout.get("title")
    if isinstance(title, dict):
        title["font"] = {**title.get("font", {}), "size": FONT_SIZE + 4}
    axes = [k for k in layout if re.fullmatch(r"[xy]axis\d*", k)] or ["xaxis", "yaxis"]
    for key in axes:
        layout.setdefault(key, {}).update(showgrid=True, gridcolor="#dddddd", linecolor="#444444", zeroline=False,
                                          automargin=True)
    for note in layout.get("annotations", []):
        note["font"] = {**note.get("font", {}), "size": FONT_SIZE}
    for key in axes:   # a log axis without chosen ticks: labels at the powers of 10 only, written as powers
        axis = layout[key]
        if axis.get("type") == "log" and "tickvals" not in axis:
            axis.update(exponentformat="power", dtick=1)
    entries = sum(1 for t in spec.get("data", []) if t.get("showlegend", True) is not False and t.get("name"))
    if entries > 1:
        # a legend beside the plot, and the figure as tall as its entries: below the plot, at this font size, it
        # ran into the x axis's title, and a legend taller than its figure scrolled
        if layout.get("legend", {}).get("orientation") == "h":
            layout["legend"] = {"orientation": "v", "y": 1, "yanchor": "top", "x": 1.02, "xanchor": "left"}
        layout["height"] = max(layout.get("height") or 360, 140 + 32 * entries)
    _at_least(spec)
    return spec


def _figure_json(fig: go.Figure) -> str:
    """The figure as JSON that is safe inside a <script>: '<', '>' and '&' as JSON escapes, so no string
    (a run name, a title) can close the script."""
    spec = _styled(json.loads(pio.to_json(fig, validate=False)))
    text = json.dumps(spec, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Page:
    def __init__(self):
        self.parts: list[str] = []
        self.figures: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: go.Figure, css: str = "figure") -> None:
        div = f"fig-{len(self.figures) + 1}"
        self.figures.append(f"draw({json.dumps(div)}, {_figure_json(fig)});")
        self.add(f"<div class=\"{css}\"><div id=\"{div}\" class=\"plot\"></div></div>")


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; font-size: 18px;
       color: #111; background: #fff; max-width: 1400px; margin: 0 auto; padding: 24px; line-height: 1.45; }
h1 { font-size: 34px; margin-bottom: 4px; } h2 { font-size: 27px; margin-top: 40px; border-bottom: 2px solid #333; }
.meta { color: #333; font-size: 16px; }
table { border-collapse: collapse; font-size: 17px; }
th, td { border: 1px solid #999; padding: 5px 9px; text-align: left; vertical-align: top; }
thead th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.head { font-weight: 700; background: #f7f7e8; }
th.run { font-weight: 600; white-space: nowrap; }
.scroll { overflow-x: auto; }
.badge { background: #b3470f; color: #fff; border-radius: 4px; padding: 1px 6px; font-size: 15px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 18px; }
.figure { margin: 12px 0; } .plot { width: 100%; }
dl.defs dt { font-weight: 700; margin-top: 8px; } dl.defs dd { margin-left: 20px; }
/* formulas: MathML that the browser typesets; 22 px so that their sub- and superscripts stay above 14 px */
/* laid out inline (a block formula is centred by the browser) but in display style (sums with limits above and
   below); no overflow box on it: that clipped the sums' upper limits */
math { font-size: 22px; } math[display="block"] { display: inline math; math-style: normal; padding: 6px 0; }
.uses { display: block; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: #f4f4f4; padding: 10px; overflow-x: auto; font-size: 14px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
.note { color: #333; }
"""


def handout_html(store: Store, run_ids, title: str | None = None, *, now: datetime | None = None) -> str:
    """The handout of these runs as one HTML document (see the module's docstring). Unknown run ids are one
    UserError naming them; unfinished runs are included with what they have, marked as such."""
    data = _compared(store, run_ids)
    title = title or f"cldash handout: runs {id_ranges([r['id'] for r in data.runs])}"
    page = _Page()
    _heading(page, store, data, title, now or datetime.now(UTC))
    _headline_metrics(page, data)
    _accuracy_against_forgetting(page, data)
    _accuracy_matrices(page, data)
    _loss_curves(page, store, data.runs)
    _update_spectrum(page, store, data.runs)
    page.add(f"<h2>Configurations</h2>{_configs(data)}")
    page.add(f"<p class=\"meta\">Made by cldash {_e(cldash.__version__)} with plotly.js embedded: this file "
             "needs no network.</p>")
    return _document(page, title)


def _compared(store: Store, run_ids) -> CompareData:
    """The runs as the Compare page reads them; a UserError when none is given or some are not in the store."""
    ids = list(dict.fromkeys(int(i) for i in run_ids))
    if not ids:
        raise UserError("give at least one run to put in the handout; `cldash list` shows the runs.")
    data = compare_data(store, ids)
    missing = [i for i in ids if i not in {r["id"] for r in data.runs}]
    if missing:
        raise UserError(f"there {'is no run' if len(missing) == 1 else 'are no runs'} {id_ranges(missing)} in "
                        f"{store.display}; `cldash list` shows the runs.")
    return data


def _heading(page: _Page, store: Store, data: CompareData, title: str, now: datetime) -> None:
    """The title, when and from which store, which runs had not finished, and the list of the runs."""
    runs = data.runs
    when = now.strftime("%Y-%m-%d %H:%M UTC")
    unfinished = [r for r in runs if r["status"] != ENDED]
    page.add(f"<h1>{_e(title)}</h1><p class=\"meta\">{_e(when)} · {len(runs)} run{'s' * (len(runs) != 1)} "
             f"from the store {_e(_store_name(store))} · cldash {_e(cldash.__version__)}</p>")
    if unfinished:
        page.add(f"<p class=\"note\"><span class=\"badge\">unfinished</span> "
                 f"{id_ranges([r['id'] for r in unfinished])} had not finished when this handout was made: they show "
                 "what they had, and their metrics that need the last row of R are n/a.</p>")
    page.add(f"<h2>The runs compared</h2>{_runs_list(data)}")


def _headline_metrics(page: _Page, data: CompareData) -> None:
    page.add("<h2>Headline metrics</h2>")
    seeded = bool((data.by_setting["seeds"] > 1).any())
    if seeded:   # one bar per setting: the mean over its seeds, the error bar its standard deviation
        full = [f"{s} · {n} seed{'s' * (n != 1)}" for s, n in zip(data.by_setting["setting"], data.by_setting["seeds"])]
        page.figure(_headline_bars(headline_figure(data.by_setting, metrics=HEADLINE_BARS), full))
        page.add("<p class=\"note\">One bar per setting: the mean over its seeds; error bars: standard "
                 "deviation.</p>")
    else:
        page.figure(_headline_bars(headline_figure(data.metrics, metrics=HEADLINE_BARS), list(data.metrics["label"])))
    page.add(f"<h3>Every metric, per run</h3>{_metrics_table(data)}<h3>What each metric means</h3>{_definitions()}")


def _headline_bars(fig: go.Figure, full_names: list[str]) -> go.Figure:
    """The headline bars (figures.headline_figure: a grid of panels, titles and margins sized there) with a bar's
    hover naming its run in full (`full_names`, in the bars' order), since the y axis shows the short names."""
    for trace in fig.data:
        if trace.type == "bar":
            trace.update(hovertext=full_names, hovertemplate=trace.hovertemplate.replace("%{y}", "%{hovertext}", 1))
    fig.update_xaxes(nticks=4)   # four ticks at most in a panel half a page wide: labels apart, never on each other
    return fig


def _uncrowded(fig: go.Figure, plot_px: tuple[int, int] = PARETO_PLOT_PX) -> go.Figure:
    """Point labels that never cover one another: each run's label goes up and to the right of its point (to the
    left in the plot's right half, so that it stays clear of the legend), in the runs' order, and a label that
    would fall on one already placed is left off. That run keeps its marker, its legend entry and its hover.
    Positions are estimated on a plot of `plot_px` (width, height) pixels, the size at a 1024 px page."""
    labelled = [t for t in fig.data if t.type == "scatter" and "text" in (t.mode or "") and t.text is not None
                and len(t.x) == 1]
    xs = np.array([float(t.x[0]) for t in labelled])
    ys = np.array([float(t.y[0]) for t in labelled])
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        return fig
    span = [max(float(np.ptp(v[ok])), 1e-9) for v in (xs, ys)]
    lo = [float(v[ok].min()) - 0.1 * d for v, d in zip((xs, ys), span)]
    placed: list[tuple[float, float, float, float]] = []
    for t, x, y, good in zip(labelled, xs, ys, ok):
        if not good:
            continue
        px = (x - lo[0]) / (1.2 * span[0]) * plot_px[0]
        py = (1 - (y - lo[1]) / (1.2 * span[1])) * plot_px[1]
        wide = LABEL_CHAR_PX * len(str(t.text[0])) + 8
        right = px < plot_px[0] / 2
        box = (px if right else px - wide, py - LABEL_LINE_PX, px + wide if right else px, py)
        if any(min(box[2], b[2]) > max(box[0], b[0]) and min(box[3], b[3]) > max(box[1], b[1]) for b in placed):
            t.update(mode=t.mode.replace("+text", "").replace("text+", ""))
        else:
            placed.append(box)
            t.update(textposition="top right" if right else "top left")
    return fig


def _accuracy_against_forgetting(page: _Page, data: CompareData) -> None:
    page.add("<h2>Accuracy against forgetting</h2>")
    points = data.metrics.assign(label=data.metrics["label"])
    if points[["acc", "forgetting"]].notna().all(axis=1).any():
        page.figure(_uncrowded(pareto_figure(points, label="name",
                                             title="Up and to the left is better; dashed: the Pareto front")))
    else:
        page.add("<p class=\"note\">No run has both numbers yet (they need a finished run).</p>")


def _accuracy_matrices(page: _Page, data: CompareData) -> None:
    page.add("<h2>Accuracy matrices</h2><p class=\"note\">R[i][j]: score on task j after training through task i; "
             "the row 'before' is the pre-trained model, the last column the general (pre-training) task. One "
             "colour scale, 0 to 1, for every run.</p><div class=\"grid\">")
    for r in data.runs:
        m = data.matrices[r["id"]]
        if m["rows"]:
            # the figure's own rule: a short title, an unfinished run's status under it, the whole caption in the
            # hover (figures.accuracy_matrix_figure); the caption is plain text, escaped by plotly.js
            fig = accuracy_matrix_figure(m, title=run_caption(r))
            page.figure(fig)
        else:
            page.add(f"<p>{_e(run_caption(r))}: nothing evaluated yet.</p>")
    page.add("</div>")


def _loss_curves(page: _Page, store: Store, runs: list[dict]) -> None:
    page.add("<h2>Loss curves</h2>")
    loss = _loss_figure(store, runs)
    if loss is not None:
        page.figure(loss)
    else:
        page.add("<p class=\"note\">No loss logged yet.</p>")


def _update_spectrum(page: _Page, store: Store, runs: list[dict]) -> None:
    page.add("<h2>The update's spectrum</h2>")
    measures = _spectrum_frames(store, runs)
    if not len(measures):
        page.add("<p class=\"note\">No spectra logged yet.</p>")
        return
    styles = {run_label(r): run_style(r) for r in runs}   # a run's name and colour on every chart (labels)
    page.add("<p class=\"note\">Of each run's cumulative update W − W0, averaged over its adapted modules: "
             "the top-1 energy share σ1² / Σ σi² (near 1: one direction holds the update) and the effective "
             "rank (how many directions it spreads over).</p>")
    page.figure(measures_figure(measures, list(SPECTRUM_MEASURES), boundaries=boundaries(runs[0]),
                                title="Shape of the update over steps", styles=styles))
    module, last = _last_spectra(store, runs)
    if last:
        page.figure(spectrum_overlay(last, normalize=True, styles=styles,
                                     title=f"{module}: singular values at each run's last logged step, ÷ σ1"))


def _document(page: _Page, title: str) -> str:
    """The page's parts in one HTML document, with plotly.js embedded and a script that draws every figure."""
    config = json.dumps({**PLOTLY_CONFIG, "responsive": True, "showLink": False, "showSendToCloud": False})
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>{''.join(page.parts)}"
            f"<script>const C = {config};\n"
            "function draw(id, f) { Plotly.newPlot(id, f.data, f.layout, C); }\n"
            + "\n".join(page.figures) + "\n</script></body></html>\n")


def _store_name(store: Store) -> str:
    """A SQLite store by its file name (a handout travels: the teacher's folders stay home), any other by
    its URL with the password masked."""
    return Path(store.display).name if store.url.startswith("sqlite:///") else store.display


def handout_file_name(run_ids) -> str:
    """'cldash-handout-runs-3-6.html' (consecutive), 'cldash-handout-runs-3-5-9.html', or for many
    scattered runs 'cldash-handout-12-runs-3-to-60.html'."""
    ids = sorted(dict.fromkeys(int(i) for i in run_ids))
    if not ids:
        return "cldash-handout.html"
    if len(ids) > 1 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"cldash-handout-runs-{ids[0]}-{ids[-1]}.html"
    if len(ids) <= 6:
        return f"cldash-handout-runs-{'-'.join(map(str, ids))}.html"
    return f"cldash-handout-{len(ids)}-runs-{ids[0]}-to-{ids[-1]}.html"


def write_handout(store: Store, run_ids, path, title: str | None = None) -> int:
    """Write the handout to `path` atomically (a temporary file beside it, then a rename); returns its size
    in bytes. Nothing is written when the runs are unknown or the folder cannot be written."""
    path = Path(path)
    text = handout_html(store, run_ids, title).encode("utf-8")   # every check before the first byte is written
    if path.is_dir():
        raise UserError(f"{path} is a folder; give --out a file name such as {path / handout_file_name(run_ids)}.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc}); give --out a file in a folder that you can "
                        "write to.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path} ({exc.strerror or exc}); give --out a file in a folder that you can "
                        "write to.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(text)


def parse_run_ids(tokens) -> list[int]:
    """Run ids as the command line gives them: '3', '3-6', '3,5,9' (several tokens too), each once, in order."""
    ids: list[int] = []
    for part in [p.strip() for t in tokens for p in str(t).split(",") if p.strip()]:
        m = re.fullmatch(r"#?(\d+)(?:-#?(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"a run is a whole number or a range such as 3-6 (got {part!r}); `cldash list` shows "
                            "the runs.")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi - lo >= 10_000:
            raise UserError(f"the range {part} holds more than 10,000 runs; give the runs you want to compare.")
        ids += range(lo, hi + 1)
    return list(dict.fromkeys(ids))


def size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


__all__ = ["handout_html", "write_handout", "handout_file_name", "parse_run_ids", "size_text", "HEADLINE"]
