"""Spectra: singular values of each adapter's update over steps, the spectrum at one step across
runs, shape measures over steps, and a layer x module grid; cumulative and per-task updates.

A link may open it on a run, an update kind, a module and measures, scrolled to a section (pages/links.py: a lesson
step's link); the widgets are preset once, on arrival, and stay the user's to change."""

import streamlit as st

from cldash.dashboard.figures import layer_module_heatmap, measures_figure, spectrum_heatmap, spectrum_overlay
from cldash.dashboard.labels import MEASURE_LABELS, run_name, run_style
from cldash.dashboard.tables import spectra_table
from cldash.dashboard.views import boundaries, measure_lines, module_grid, spectrum_modules, update_kinds
from pages.links import arrival, header, preset, wanted_list, wanted_run
from pages.shared import download, get_store, plot, png_name, runs_for_page, through_app

through_app()

linked = arrival()     # before anything is drawn: a link's run, kind, module, measures and section, once
store = get_store()
st.title("Spectra")
runs = runs_for_page(store)
if not runs:
    st.info("No runs yet: launch some on the Launch page.")
    st.stop()
# the short name ("#2 LoRA r=16 · seed 0"): run_label's long one lost its end at 1024 px ("… · seed")
labels = {r["id"]: f"{run_name(r)} · seed {r['seed']}" for r in runs}
styles = {r["id"]: run_style(r) for r in runs}     # one name and colour per run, the same on every page
c1, c2, c3 = st.columns([2, 1, 2])
preset("sp-run", labels, list(labels)[-1], wanted_run(linked))
run_id = c1.selectbox("run", list(labels), format_func=labels.get, key="sp-run",
                      help="The run's number, method and seed; the Runs page has its stream and every setting.")
run = next(r for r in runs if r["id"] == run_id)
index = store.spectrum_index(run_id)
if index.empty:
    st.info("This run has no spectra logged yet.")
    st.stop()
kinds = update_kinds(index)
preset("sp-kind", kinds, kinds[0], linked.get("kind"))
kind = c2.selectbox("update", kinds, key="sp-kind", help="cumulative: W(now) − W₀, against the pre-trained weight; "
                                         "task: the change since the current task started; others: method read-outs.")
modules = store.modules(run_id)
views = [*spectrum_modules(modules, index, kind), "layer × module grid"]
preset("sp-module", views, views[0], linked.get("module"))
view = c3.selectbox("module", views, key="sp-module")

if view == "layer × module grid":
    rows = store.spectra(run_id, kind=kind, with_values=False)
    steps = sorted(rows.step.unique())
    step = st.select_slider("step", options=steps, value=steps[-1])
    measure = st.selectbox("measure", list(MEASURE_LABELS), format_func=MEASURE_LABELS.get)
    grid = module_grid(modules, rows[rows.step == step])
    plot(layer_module_heatmap(grid, measure, title=f"{MEASURE_LABELS[measure]} at step {step} ({kind})",
                              value_title=MEASURE_LABELS[measure], integer=measure == "numerical_rank"),
         key="sp-grid", filename=png_name("spectra-grid", measure, kind, "step", step, "run", run_id))
    download(grid, f"run-{run_id}-spectra-step-{step}", key="dl-grid")
    st.stop()

series = store.spectra(run_id, module=view, kind=kind)
plot(spectrum_heatmap(series, title=f"{styles[run_id]['name']} · {view}: singular values over steps ({kind})",
                      boundaries=boundaries(run)),
     key="sp-heat", filename=png_name("spectra-heatmap", view, kind, "run", run_id))
download(spectra_table(series), f"run-{run_id}-{view}-{kind}", key="dl-series")

header("Spectrum at one step, across runs", "spectrum-at-one-step", linked)
steps = sorted(series.step.unique())
step = st.select_slider("step", options=steps, value=steps[-1], key="sp-step")
others = st.multiselect("compare with", [i for i in labels if i != run_id], format_func=labels.get,
                        default=[i for i in labels if i != run_id][:3])
at = store.spectra_at([run_id, *others], kind=kind, step=step, module=view)
normalize = st.toggle("divide by σ₁ (compare shapes, not sizes)", value=False)
plot(spectrum_overlay({styles[r]["name"]: v for r, v in zip(at.run_id, at["values"])} if len(at) else {},
                      title=f"{view} at step ≤ {step} ({kind})", normalize=normalize,
                      styles={st_["name"]: st_ for st_ in styles.values()}),
     key="sp-overlay", filename=png_name("spectra-at-step", step, view, kind, "runs", run_id, *others))

header("Shape measures over steps", "shape-measures", linked)
preset("sp-measure-pick", MEASURE_LABELS, ["erank", "top1_energy", "stable_rank", "frobenius"],
       wanted_list(linked, "measures"))
chosen = st.multiselect("measures", list(MEASURE_LABELS), format_func=MEASURE_LABELS.get, key="sp-measure-pick")
measures, lines = measure_lines(store, [run_id, *others], view, kinds, kind, styles)
if len(measures) and chosen:
    plot(measures_figure(measures, chosen, boundaries=boundaries(run), styles=lines,
                         title=f"{view}: cumulative update (solid, against W₀) and per-task update (dashed)"),
         key="sp-measures", filename=png_name("spectra-measures", view, "runs", run_id, *others))
