"""Live: an overview of the runs first, one row each (progress, the task it trains, the latest score, each task's
score now), and below it the charts of one run, the row a user clicked (progress, log, loss, anytime accuracy per
task, the accuracy matrix so far). Refreshed every two seconds while runs are active, with incremental queries
(only rows newer than the last step seen)."""

import math

import streamlit as st

from cldash.dashboard.figures import BOUNDED_SCORES, accuracy_matrix_figure, anytime_figure, series_figure
from cldash.dashboard.labels import run_label, run_style, weights_label
from cldash.dashboard.views import LiveCache, boundaries, live_overview, status_line, watched_run
from cldash.runs.launchers import logs
from pages.shared import ACTIVE, get_store, plot, png_name, runs_for_page, through_app

through_app()

store = get_store()
st.title("Live")
# The table is the picker: it lists the runs chosen in the sidebar, else the latest 12 (runs_for_page), which
# fit a class's handful of runs in one screen; a click on a row draws that run's charts below it.
runs = runs_for_page(store)
if not runs:
    st.info("No runs yet: launch some on the Launch page.")
    st.stop()
caches = st.session_state.setdefault("live_cache", {})


def overview_table(overview) -> list[int]:
    """The overview as a table whose rows select the run drawn below; the selected rows' positions. Its key
    alone names the widget (Streamlit keeps a keyed table's selection while its data changes), so a selection
    survives the refreshes. Its columns' widths add up to the 660 px that the page leaves it at 1024 px beside
    the sidebar, so no column hides behind a sideways scroll."""
    metrics = sorted(set(overview.metric))
    bounded = all(m in BOUNDED_SCORES for m in metrics)
    shown = overview.assign(**{"each task now": [   # the bars: an unscored task at 0, a run not yet scored none
        [v if math.isfinite(v) else 0.0 for v in row] if any(math.isfinite(v) for v in row) else []
        for row in overview["each task now"]]})
    event = st.dataframe(
        shown, key="live-overview", on_select="rerun", selection_mode="single-row", hide_index=True,
        width="stretch", column_order=["run", "status", "progress", "task", "score", "each task now"],
        column_config={
            "run": st.column_config.TextColumn("run", width=145,
                                               help="Its id and method; its whole name heads its charts."),
            "status": st.column_config.TextColumn("status", width=80),
            "progress": st.column_config.ProgressColumn("progress", width=115, min_value=0.0, max_value=1.0,
                                                        format="percent", help="Share of its training steps done."),
            "task": st.column_config.TextColumn("task now", width=125,
                                                help="The task it trains (or trained last), of all its tasks."),
            "score": st.column_config.NumberColumn(
                "score", width=55, format="%.2f",
                help=f"Mean {' / '.join(metrics)} over the tasks trained so far, at the run's latest evaluation."),
            "each task now": st.column_config.BarChartColumn(
                "each task now", width=100, y_min=0.0 if bounded else None, y_max=1.0 if bounded else None,
                help="Its latest evaluation's score of every task, task 1 first: a task forgotten shows as its "
                     "bar falling, the tasks still to come as low ones.")})
    return list(event.selection.rows)


def details(run: dict, row, cache: LiveCache) -> None:
    """One run's progress, log, loss, score of every task over training and accuracy matrix so far."""
    style = run_style(run)
    st.subheader(run_label(run))
    n = int(row["scored tasks"])
    score = (f" · score {row.score:.3f}: {row.metric} at step {int(row['evaluated at'])}, "
             + ("task 1" if n == 1 else f"mean of tasks 1 to {n}")) if math.isfinite(row.score) else ""
    st.caption(f"backbone: {weights_label(run.get('weights'))}{score}")
    done, text, note = status_line(run)     # one source for the step shown, also once a run has stopped
    st.progress(done, text=text)
    if note:
        (st.info if run["status"] == "cancelled" else st.error)(note)
    where = (run.get("launcher_info") or {}).get("address")
    if st.toggle("show its log" + (f" (from the Ray cluster at {where})" if where else ""), key=f"log-{run['id']}",
                 help="The run's output, wherever it runs: this machine's log file, or the cluster's job log."):
        st.code(logs(store, run, tail=60), language=None)
    tasks = store.tasks(run["id"])
    names = dict(zip(tasks.position, tasks.name))
    ends = boundaries(run)
    c1, c2 = st.columns(2)
    with c1:
        loss = cache.loss.assign(label="loss")
        plot(series_figure(loss, title="training loss", y_title="loss (log scale)", boundaries=ends, log_y=True,
                           styles={"loss": {"name": style["name"], "color": style["color"]}},
                           task_names={t: n for t, n in names.items() if t},
                           empty_note="waiting for the first training step"),
             key=f"loss-{run['id']}", filename=png_name("live-loss-run", run["id"]))
    with c2:
        plot(anytime_figure(cache.evals, names, run["primary_metric"], ends,
                            title="score of every task over training"),
             key=f"any-{run['id']}", filename=png_name("live-scores-run", run["id"]))
    m = store.accuracy_matrix(run["id"])
    if m["rows"]:
        c3, _ = st.columns([3, 2])
        with c3:
            plot(accuracy_matrix_figure(m, title="accuracy matrix so far"), key=f"R-{run['id']}",
                 filename=png_name("live-matrix-run", run["id"]))


@st.fragment(run_every=2 if any(r["status"] in ACTIVE for r in runs) else None)
def watch(run_ids: list[int]) -> None:
    watched = store.runs(ids=run_ids)
    overview = live_overview(store, watched, caches)
    st.caption("Click a row to draw that run's charts below; without a click, the first running run's.")
    rid = watched_run(overview, overview_table(overview))
    at = overview.index[overview.id == rid][0]
    details(next(r for r in watched if r["id"] == rid), overview.loc[at], caches[rid])


watch([r["id"] for r in runs])
