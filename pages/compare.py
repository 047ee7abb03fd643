"""Compare: accuracy matrices side by side (one colour scale) and as a difference, every metric
with its formula at hand, mean and spread over seeds, and accuracy against forgetting.

The runs are the selected ones or a group's (a sweep from `cldash sweep`, the claims' runs, a launch).
Many runs (a group, or more than a page of matrices) read as a sweep does: first one row per setting with
its mean ± sd over seeds and the accuracy-forgetting plot, then every run's metrics, then the matrices, a
page at a time or one mean matrix per setting. A few selected runs keep the matrices first.

A fork (a "What if…" of the Runs page) is drawn beside its parent, its fork point marked on its matrix, and
the difference shows fork − parent at first; a fork compared without its parent gets a button to add it.

Every section header has a stable anchor (#metrics, #accuracy-matrices...): a lesson step's link scrolls to the one
it names (pages/links.py)."""

from pathlib import Path

import streamlit as st

from cldash.core.errors import UserError
from cldash.dashboard.figures import accuracy_matrix_figure, headline_figure, matrix_difference_figure, pareto_figure
from cldash.dashboard.labels import group_label, run_refs, runs_in
from cldash.dashboard.report import handout_file_name, handout_html
from cldash.dashboard.tables import matrices_table, matrix_table, metric_help
from cldash.dashboard.tensorboard import folders_zip, write_tensorboard
from cldash.dashboard.views import (
    addable_parents,
    compare_data,
    compare_summary,
    difference_defaults,
    forks_note,
    matrix_items,
    matrix_pages,
    matrix_rows,
    mean_sd_table,
)
from cldash.measures.metrics import METRICS
from pages.links import arrival, header
from pages.shared import download, download_later, get_store, plot, png_name, runs_for_page, set_selected, through_app

# The metrics a class looks at first, in this order, before the rest of the wide table.
HEADLINE_COLUMNS = ("acc", "forgetting", "bwt", "general_retention", "la")
IDENTITY = ["setting_key", "setting", "name", "setting_name", "color", "symbol"]   # chart identity, not table columns
# Matrices drawn at once: each is a Plotly figure (about 8 ms of server time here, more in the browser), and
# a sweep's 50 would make every change on the page wait for all of them.
MATRICES_PER_PAGE = 12

through_app()

LINKED = arrival()     # the section a link named, once: the page scrolls there when its header is drawn
store = get_store()
st.title("Compare")
groups = dict(store.run_groups())
source = ""
if LINKED:      # a lesson step's link is about the runs it selected, not a group this page showed before
    st.session_state.compare_from = ""
    st.session_state.pop("compare_from_widget", None)
if groups:
    options = ["", *groups]
    remembered = st.session_state.get("compare_from", "")   # widget state does not survive a page switch
    source = st.selectbox("runs from", options, index=options.index(remembered) if remembered in options else 0,
                          format_func=lambda k: f"{group_label(k)} · {groups[k]} runs" if k else "the selected runs",
                          key="compare_from_widget",
                          help="The selected runs (sidebar, Runs page) or every run of a group: a sweep, the "
                               "claims' runs, a launch from the Launch page.")
    st.session_state.compare_from = source
ids = store.group_run_ids(source) if source else [r["id"] for r in runs_for_page(store)]
if not ids:
    st.info("No runs yet: launch some on the Launch page, or select runs on the Runs page.")
    st.stop()
data = compare_data(store, ids)
orphans = addable_parents(store, data.runs) if not source else {}   # a fork joins its parent's group
if orphans:
    parents = sorted(set(orphans.values()))
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    c1.caption(forks_note(orphans))
    if c2.button(f"Add {run_refs(parents)}", key="cmp-add-parents"):
        set_selected([*ids, *parents])
        st.rerun()
seeded = bool((data.by_setting["seeds"] > 1).any())
many = bool(source) or len(data.runs) > MATRICES_PER_PAGE
helps = metric_help()
st.caption(compare_summary(data))
st.download_button("Download the handout (HTML)", lambda: handout_html(store, ids).encode(), key="cmp-handout",
                   file_name=handout_file_name(ids), mime="text/html",
                   help="One file that opens offline on any computer: these runs' headline metrics with their "
                        "definitions, interactive matrices, loss, spectra and configs (`cldash report` makes it too).")

with st.expander("Open these runs in TensorBoard", icon=":material/monitoring:"):
    st.caption("Writes each run's loss, every task's score, the metrics at each task's end and the singular values "
               "of every module (as histograms) as TensorBoard event files, one folder per run, into a folder on "
               "the machine that serves this dashboard (`cldash export RUN --tensorboard DIR` does it too).")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    tb_folder = c1.text_input("folder", key="cmp-tb-dir", placeholder="tensorboard/cldash",
                              help="Each run goes into FOLDER/run-ID-NAME; writing again replaces it.")
    if c2.button("Write event files", key="cmp-tb-write", icon=":material/save:"):
        try:
            written = write_tensorboard(store, ids, tb_folder)
        except UserError as exc:
            st.error(f"Nothing was written: {exc}")
        else:
            st.session_state["cmp-tb-written"] = (ids, tb_folder, [str(p) for p in written])
    done = st.session_state.get("cmp-tb-written")
    if done and done[0] == ids:     # the runs shown: another selection was not written yet
        _, tb_folder, written = done
        st.success(f"Wrote {len(written)} run folder{'s' * (len(written) != 1)} into {tb_folder}: "
                   + ", ".join(Path(w).name for w in written) + ". Open them with:")
        st.code(f"tensorboard --logdir {tb_folder}", language="bash")
        st.download_button("Download them (zip)", lambda: folders_zip(tb_folder, written), key="cmp-tb-zip",
                           file_name=f"cldash-tensorboard-{runs_in(ids)}.zip", mime="application/zip",
                           help="The same folders in one file, for a TensorBoard on another computer.")

ALL_RUNS = runs_in(ids)


def headline() -> None:
    per_setting = seeded
    table = data.by_setting if per_setting else data.metrics
    header("At a glance", "at-a-glance", LINKED)
    st.caption(("One bar per setting: the mean over its seeds, the black line ± one standard deviation. "
                if per_setting else "One bar per run. ") +
               "Final accuracy: the mean score over all tasks after the last one; forgetting: how much each task "
               "lost from its best score; general-task retention: the share of the pre-training task's score "
               "kept; learning accuracy: the score on each task right after learning it.")
    plot(headline_figure(table, label="name"), key="cmp-headline", filename=png_name("compare-headline", ALL_RUNS))


def over_seeds() -> None:
    if not seeded:
        return
    header("Mean ± standard deviation over seeds", "over-seeds", LINKED)
    shown = mean_sd_table(data.by_setting)
    st.dataframe(shown[["setting", "seeds", *ordered_metrics()]], hide_index=True,
                 column_config={"setting": st.column_config.TextColumn("setting", pinned=True),
                                **{m.key: st.column_config.TextColumn(m.label, help=helps[m.key]) for m in METRICS}})
    download(data.by_setting.drop(columns=["name", "color", "symbol"], errors="ignore"), "metrics-over-seeds",
             key="dl-seeds")


def accuracy_against_forgetting() -> None:
    header("Accuracy against forgetting", "accuracy-against-forgetting", LINKED)
    grouped = st.toggle("one point per setting (mean over seeds, bars: standard deviation)", value=seeded)
    if grouped:
        fig = pareto_figure(data.by_setting, label="name", x_err="forgetting_std", y_err="acc_std")
    else:
        fig = pareto_figure(data.metrics, label="name")
    plot(fig, key="cmp-pareto", filename=png_name("compare-accuracy-forgetting", ALL_RUNS))


def metrics_per_run() -> None:
    header("Metrics", "metrics", LINKED)
    config = {m.key: st.column_config.NumberColumn(m.label, help=helps[m.key], format="%.3f") for m in METRICS}
    config["label"] = st.column_config.TextColumn("run", pinned=True)
    # the headline numbers (forgetting and BWT among them) right after the run, the rest of the metrics after
    table = data.metrics.drop(columns=IDENTITY)
    table = table[["id", "label", *ordered_metrics(), "method", "seed", "status"]]
    st.dataframe(table, hide_index=True, column_config=config)
    download(table, "metrics", key="dl-metrics")
    with st.expander("How each metric is computed"):
        st.markdown("\n".join(f"- **{m.label}**: $\\displaystyle {m.latex}$ — uses {m.cells}." for m in METRICS))


def ordered_metrics() -> list[str]:
    return [*HEADLINE_COLUMNS, *[m.key for m in METRICS if m.key not in HEADLINE_COLUMNS]]


def accuracy_matrices() -> list[dict]:
    header("Accuracy matrices", "accuracy-matrices", LINKED)
    st.caption("R[i][j]: score on task j after training through task i; row 'before' is the pre-trained model, "
               "the last column the general (pre-training) task. One colour scale, 0 to 1, for every run.")
    per_setting = seeded and st.radio(
        "draw", ["one per run", "one per setting: the mean over its seeds"], index=int(many), horizontal=True,
        key="cmp-matrix-kind", help="A setting's mean matrix averages each cell over its seeds; hover a cell "
                                    "for the standard deviation.") != "one per run"
    items = matrix_items(data, per_setting)
    pages = matrix_pages(len(items), MATRICES_PER_PAGE)
    shown = items
    if len(pages) > 1:
        page = st.selectbox("matrices", range(len(pages)), key="cmp-matrix-page",
                            format_func=lambda p: f"{pages[p].start + 1} to {pages[p].stop} of {len(items)}")
        shown = items[pages[page]]
        st.caption(f"{MATRICES_PER_PAGE} matrices at a time, in run order, so that the page stays quick; the "
                   "metrics cover every run, and the CSV below holds every matrix.")
    per_row = st.select_slider("matrices per row", options=[1, 2, 3, 4], value=min(2, len(shown)),
                               help="Two a row read on a projector; more fit on a wide screen.")
    for row in matrix_rows(shown, per_row):   # a run and its forks start a row together: side by side
        cols = st.columns(per_row)
        for col, item in zip(cols, row):
            with col:
                m = item["matrix"]
                if m["rows"]:
                    plot(accuracy_matrix_figure(m, title=item["title"], fork_after=item.get("fork_after"),
                                                fork_note=item.get("fork_note", "")),
                         key=f"cmp-{item['key']}",
                         filename=png_name("compare-matrix", item["file"].removesuffix("-matrix")))
                    download(matrix_table(m), item["file"], "R as CSV", key=f"dl-{item['key']}")
                else:
                    st.caption(f"{item['title']}: nothing evaluated yet")
    if len(items) > 1:
        download_later(lambda: matrices_table(items), "matrices", f"all {len(items)} matrices as CSV", key="dl-R-all")
    return items


def difference(items: list[dict]) -> None:
    if len(items) < 2:
        return
    header("Difference", "difference", LINKED)
    c1, c2 = st.columns(2)
    what = "setting" if items[0]["key"].startswith("S-") else "run"
    titles = [item["title"] for item in items]
    first_a, first_b = difference_defaults(items)   # a fork against its parent, when both are drawn
    a = c1.selectbox(f"{what} A", range(len(items)), index=first_a, format_func=titles.__getitem__,
                     key=f"cmp-a-{what}")
    b = c2.selectbox(f"{what} B", range(len(items)), index=first_b, format_func=titles.__getitem__,
                     key=f"cmp-b-{what}")
    ma, mb = items[a]["matrix"], items[b]["matrix"]
    if ma["tasks"] != mb["tasks"]:
        st.warning(f"These two {what}s have different task lists; pick two {what}s of the same stream.")
    elif ma["rows"] and mb["rows"]:
        plot(matrix_difference_figure(ma, mb, title="A − B (blue: A scores higher)"), key="cmp-diff",
             filename=png_name("compare-difference", items[a]["file"].removesuffix("-matrix"), "minus",
                                items[b]["file"].removesuffix("-matrix")))


if many:       # a sweep: the summary first, every run's numbers next, the matrices to look into last
    headline()
    over_seeds()
    accuracy_against_forgetting()
    metrics_per_run()
    difference(accuracy_matrices())
else:
    headline()
    difference(accuracy_matrices())
    metrics_per_run()
    over_seeds()
    accuracy_against_forgetting()
