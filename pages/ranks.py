"""Ranks: the active rank of every adapted module over steps (a method's own rank where it has one,
else the numerical rank of its update), a layer x module grid at each task end, and the method's
own read-outs (gates, memory dimension, magnitudes...) as they are logged. A link may name the run to open on
(pages/links.py: a lesson step's link); it is preset once, on arrival."""

import streamlit as st

from cldash.dashboard.figures import layer_module_heatmap, module_styles, series_figure
from cldash.dashboard.labels import run_label, run_name, scalar_label
from cldash.dashboard.views import (
    COUNT_SCALARS,
    NUMERICAL_RANK,
    boundaries,
    logged_task_ends,
    module_grid,
    rank_scalars,
    rank_series,
    readout_names,
    readout_series,
)
from pages.links import arrival, preset, wanted_run
from pages.shared import download, get_store, plot, png_name, runs_for_page, through_app

through_app()

linked = arrival()
store = get_store()
st.title("Ranks")
runs = runs_for_page(store)
if not runs:
    st.info("No runs yet: launch some on the Launch page.")
    st.stop()
labels = {r["id"]: run_label(r) for r in runs}
c1, c2 = st.columns(2)   # halves: at 1024 px a third cuts "rank of the protected basis F" off
preset("rk-run", labels, list(labels)[-1], wanted_run(linked))
run_id = c1.selectbox("run", list(labels), format_func=labels.get, key="rk-run")
run = next(r for r in runs if r["id"] == run_id)
names = store.scalar_names(run_id)
own = rank_scalars(names)
source = c2.selectbox("rank", [*own, NUMERICAL_RANK], format_func=scalar_label,
                      help="A method's own rank history when it logs one (AdaLoRA's and CoDyRA's active rank, EBLoRA's "
                           "protected basis F, InfLoRA's memory dimension, SD-LoRA's stored directions); otherwise the "
                           "number of singular values of the update above the numerical tolerance.")
modules = store.modules(run_id)

what = scalar_label(source)   # NUMERICAL_RANK is words already: scalar_label keeps them
counts = source == NUMERICAL_RANK or source in COUNT_SCALARS     # whole-number ticks (a share of ranks is not one)
lines = module_styles(modules)     # module type -> colour, layer -> dash: 12 lines, 12 looks
kind = st.radio("update", ["cumulative", "task"], horizontal=True) if source == NUMERICAL_RANK else None
df = rank_series(store, run_id, source, kind)
if df.empty:
    st.info("Nothing logged yet for this run.")
    st.stop()
plot(series_figure(df.rename(columns={"module": "label"}), title=f"{run_name(run)}: {what} per module over steps",
                   y_title="rank" if counts else what, boundaries=boundaries(run), styles=lines, integer_y=counts),
     key="rk-lines", filename=png_name("ranks", source, "run", run_id))
download(df, f"run-{run_id}-ranks", key="dl-ranks")

ends = logged_task_ends(run, df)
end = st.select_slider("at the end of task", options=list(range(1, len(ends) + 1)), value=len(ends)) \
    if len(ends) > 1 else 1
at_step = int(df[df.step <= ends[end - 1]].step.max())   # the last step logged by the end of that task
grid = module_grid(modules, df[df.step == at_step])
plot(layer_module_heatmap(grid, "value", title=f"{what} at the end of task {end} (step {at_step})",
                          value_title=what, integer=counts),
     key="rk-grid", filename=png_name("ranks-grid", source, "task", end, "run", run_id))

st.subheader("Method read-outs")
readouts = readout_names(names, own)
if not readouts:
    st.caption("This method logs no read-outs of its own beyond the spectra.")
else:
    pick = st.selectbox("read-out", readouts, format_func=scalar_label)
    series = readout_series(store, run_id, pick)
    looks = {**lines, pick: {"name": scalar_label(pick), "color": "#0072B2"}}
    plot(series_figure(series[["step", "value", "label"]], title=f"{run_name(run)}: {scalar_label(pick)}",
                       y_title=scalar_label(pick), boundaries=boundaries(run), styles=looks,
                       integer_y=pick in COUNT_SCALARS),
         key="rk-readout", filename=png_name("ranks-readout", pick, "run", run_id))
    download(series, f"run-{run_id}-{pick}", key="dl-readout")
