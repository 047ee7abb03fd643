"""Spectra: singular values of each adapter's update over steps, the spectrum at one step across
runs, shape measures over steps, and a layer x module grid; cumulative and per-task updates."""

import pandas as pd
import streamlit as st

from cldash.figures import MEASURE_LABELS, layer_module_heatmap, measures_figure, spectrum_heatmap, spectrum_overlay
from cldash.views import boundaries, module_grid, run_label
from pages.shared import download, get_store, plot, runs_for_page, through_app

through_app()

store = get_store()
st.title("Spectra")
runs = runs_for_page(store)
if not runs:
    st.info("No runs yet: launch some on the Launch page.")
    st.stop()
labels = {r["id"]: run_label(r) for r in runs}
c1, c2, c3 = st.columns([2, 1, 2])
run_id = c1.selectbox("run", list(labels), index=len(labels) - 1, format_func=labels.get)
run = next(r for r in runs if r["id"] == run_id)
index = store.spectrum_index(run_id)
if index.empty:
    st.info("This run has no spectra logged yet.")
    st.stop()
kinds = sorted(index.kind.unique(), key=lambda k: (k != "cumulative", k != "task", k))
kind = c2.selectbox("update", kinds, help="cumulative: W_now − W0 (against the pre-trained weight); "
                                         "task: the change since the current task started; others: method read-outs.")
modules = store.modules(run_id)
module_names = [m for m in modules.name if m in set(index[index.kind == kind].module)] or \
    sorted(index[index.kind == kind].module.unique())
view = c3.selectbox("module", [*module_names, "layer × module grid"])

if view == "layer × module grid":
    rows = store.spectra(run_id, kind=kind, with_values=False)
    steps = sorted(rows.step.unique())
    step = st.select_slider("step", options=steps, value=steps[-1])
    measure = st.selectbox("measure", list(MEASURE_LABELS), format_func=MEASURE_LABELS.get)
    grid = module_grid(modules, rows[rows.step == step])
    plot(layer_module_heatmap(grid, measure, title=f"{MEASURE_LABELS[measure]} at step {step} ({kind})"),
         key="sp-grid")
    download(grid, f"run-{run_id}-spectra-step-{step}", key="dl-grid")
    st.stop()

series = store.spectra(run_id, module=view, kind=kind)
plot(spectrum_heatmap(series, title=f"{view}: singular values over steps ({kind})", boundaries=boundaries(run)),
     key="sp-heat")
download(series.assign(values=[" ".join(f"{v:.6g}" for v in vals) for vals in series["values"]]),
         f"run-{run_id}-{view}-{kind}", key="dl-series")

st.subheader("Spectrum at one step, across runs")
steps = sorted(series.step.unique())
step = st.select_slider("step", options=steps, value=steps[-1], key="sp-step")
others = st.multiselect("compare with", [i for i in labels if i != run_id], format_func=labels.get,
                        default=[i for i in labels if i != run_id][:3])
at = store.spectra_at([run_id, *others], kind=kind, step=step, module=view)
normalize = st.toggle("divide by σ₁ (compare shapes, not sizes)", value=False)
plot(spectrum_overlay({labels[r]: v for r, v in zip(at.run_id, at["values"])} if len(at) else {},
                      title=f"{view} at step ≤ {step}", normalize=normalize), key="sp-overlay")

st.subheader("Shape measures over steps")
chosen = st.multiselect("measures", list(MEASURE_LABELS), default=["erank", "top1_energy", "stable_rank", "frobenius"],
                        format_func=MEASURE_LABELS.get)
both = [k for k in ("cumulative", "task") if k in kinds]
frames = []
for rid in [run_id, *others]:
    for k in both or [kind]:
        df = store.spectra(rid, module=view, kind=k, with_values=False)
        if len(df):
            frames.append(df.assign(label=f"#{rid} {k}"))
if frames and chosen:
    plot(measures_figure(pd.concat(frames, ignore_index=True), chosen, boundaries=boundaries(run),
                         title="cumulative (against W0) and per-task updates"), key="sp-measures")
