"""Ranks: the active rank of every adapted module over steps (a method's own rank where it has one,
else the numerical rank of its update), a layer x module grid at each task end, and the method's
own read-outs (gates, memory dimension, magnitudes...) as they are logged."""

import streamlit as st

from cldash.figures import layer_module_heatmap, series_figure
from cldash.views import boundaries, module_grid, run_label
from pages.shared import download, get_store, plot, runs_for_page, through_app

through_app()

store = get_store()
st.title("Ranks")
runs = runs_for_page(store)
if not runs:
    st.info("No runs yet: launch some on the Launch page.")
    st.stop()
labels = {r["id"]: run_label(r) for r in runs}
c1, c2 = st.columns([2, 1])
run_id = c1.selectbox("run", list(labels), index=len(labels) - 1, format_func=labels.get)
run = next(r for r in runs if r["id"] == run_id)
names = store.scalar_names(run_id)
# rank histories a method logs itself: active ranks (AdaLoRA, CoDyRA), the protected basis F (EBLoRA),
# the DualGPM memory (InfLoRA), the stored directions (SD-LoRA), the frozen pairs' rank (O-LoRA)
RANK_LIKE = ("memory_dim", "directions")
own = [n for n in names[names.per_module].name if "rank" in n or n in RANK_LIKE] if len(names) else []
source = c2.selectbox("rank", [*own, "numerical rank of the update"],
                      help="A method's own rank history when it logs one (AdaLoRA's and CoDyRA's active rank, EBLoRA's "
                           "F_rank, InfLoRA's memory_dim, SD-LoRA's directions); otherwise the "
                           "number of singular values of the update above the numerical tolerance.")
modules = store.modules(run_id)

if source == "numerical rank of the update":
    kind = st.radio("update", ["cumulative", "task"], horizontal=True)
    rows = store.spectra(run_id, kind=kind, with_values=False)
    df = rows.rename(columns={"numerical_rank": "value"})[["step", "module", "value"]]
else:
    df = store.scalars(run_id, names=[source])[["step", "module", "value"]]
if df.empty:
    st.info("Nothing logged yet for this run.")
    st.stop()
plot(series_figure(df.rename(columns={"module": "label"}), title=f"{source} per module over steps",
                   y_title="rank", boundaries=boundaries(run)), key="rk-lines")
download(df, f"run-{run_id}-ranks", key="dl-ranks")

ends = [s for s in boundaries(run) if s <= df.step.max()] or [int(df.step.max())]
end = st.select_slider("at the end of task", options=list(range(1, len(ends) + 1)), value=len(ends)) \
    if len(ends) > 1 else 1
at_step = int(df[df.step <= ends[end - 1]].step.max())
grid = module_grid(modules, df[df.step == at_step])
plot(layer_module_heatmap(grid, "value", title=f"{source} at the end of task {end} (step {at_step})"),
     key="rk-grid")

st.subheader("Method read-outs")
readouts = names[~names.name.isin(["loss", "lr", *own])] if len(names) else names
if readouts.empty:
    st.caption("This method logs no read-outs of its own beyond the spectra.")
else:
    pick = st.selectbox("read-out", readouts.name.tolist())
    series = store.scalars(run_id, names=[pick])
    series["label"] = series["module"].where(series["module"] != "", pick)
    plot(series_figure(series[["step", "value", "label"]], title=pick, y_title=pick, boundaries=boundaries(run)),
         key="rk-readout")
    download(series, f"run-{run_id}-{pick}", key="dl-readout")
