"""Live: progress, loss, anytime accuracy per task and the accuracy matrix so far, refreshed
every two seconds with incremental queries (only rows newer than the last step seen)."""

import streamlit as st

from cldash.launchers import logs
from cldash.figures import accuracy_matrix_figure, anytime_figure, series_figure
from cldash.tables import weights_label
from cldash.views import LiveCache, boundaries, run_label
from pages.shared import ACTIVE, get_store, plot, runs_for_page, through_app

through_app()

store = get_store()
st.title("Live")
runs = runs_for_page(store)
if not runs:
    st.info("No runs yet: launch some on the Launch page.")
    st.stop()
active_ids = [r["id"] for r in runs if r["status"] in ACTIVE]
shown = st.multiselect("Runs to watch", [r["id"] for r in runs],
                       default=active_ids[:4] or [r["id"] for r in runs][-2:],
                       format_func=lambda i: next(run_label(r) for r in runs if r["id"] == i))
caches = st.session_state.setdefault("live_cache", {})


@st.fragment(run_every=2 if active_ids else None)
def watch(run_ids):
    for run in store.runs(ids=run_ids):
        cache = caches.setdefault(run["id"], LiveCache(run["id"])).update(store)
        st.subheader(run_label(run))
        st.caption(f"backbone: {weights_label(run.get('weights'))}")
        total = max(1, run["total_steps"] or 1)
        st.progress(min(1.0, (run["step"] or 0) / total),
                    text=f"{run['status']} · step {run['step']}/{run['total_steps']} · task {run['task']}/"
                         f"{run['num_tasks']}")
        if run["error"]:
            (st.info if run["status"] == "cancelled" else st.error)(run["error"].splitlines()[0])
        where = (run.get("launcher_info") or {}).get("address")
        if st.toggle("show its log" + (f" (from the Ray cluster at {where})" if where else ""), key=f"log-{run['id']}",
                     help="The run's output, wherever it runs: this machine's log file, or the cluster's job log."):
            st.code(logs(store, run, tail=60), language=None)
        c1, c2, c3 = st.columns([1, 1, 1])
        with c1:
            if len(cache.loss):
                loss = cache.loss.assign(label="loss")
                plot(series_figure(loss, title="training loss", y_title="loss", boundaries=boundaries(run),
                                   log_y=True), key=f"loss-{run['id']}")
        tasks = store.tasks(run["id"])
        names = dict(zip(tasks.position, tasks.name))
        with c2:
            if len(cache.evals):
                plot(anytime_figure(cache.evals, names, run["primary_metric"], boundaries(run),
                                    title="score of every task over training"), key=f"any-{run['id']}")
        with c3:
            m = store.accuracy_matrix(run["id"])
            if m["rows"]:
                plot(accuracy_matrix_figure(m, title="accuracy matrix so far", show_scale=False),
                     key=f"R-{run['id']}")


if shown:
    watch(shown)
