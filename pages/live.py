"""Live: progress, loss, anytime accuracy per task and the accuracy matrix so far, refreshed
every two seconds with incremental queries (only rows newer than the last step seen)."""

import streamlit as st

from cldash.dashboard.figures import accuracy_matrix_figure, anytime_figure, series_figure
from cldash.dashboard.labels import run_label, run_style, weights_label
from cldash.dashboard.views import LiveCache, boundaries, status_line
from cldash.runs.launchers import logs
from pages.shared import ACTIVE, get_store, plot, png_name, runs_for_page, through_app

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
        style = run_style(run)
        st.subheader(run_label(run))
        st.caption(f"backbone: {weights_label(run.get('weights'))}")
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


if shown:
    watch(shown)
