"""What every page shares: the store, the selected runs, the sidebar, option widgets, downloads.

The selection lives in the session and is mirrored in the URL (``?runs=3,5``), so it survives a
page switch (Streamlit clears query parameters when navigating) and a reload or a shared link.
Nothing here trains. (torch is loaded all the same: the automatic-resume settings come from
cldash.engine.checkpoints, which imports it.)
"""

from __future__ import annotations

import functools
import json
import re
import threading

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from cldash.core.errors import UserError
from cldash.dashboard.figures import PLOTLY_CONFIG
from cldash.dashboard.labels import run_label
from cldash.runs.processes import RUNS_PER_GPU_SETTING, default_limit, gpu_count, max_concurrent, runs_per_gpu
from cldash.runs.queue import schedule
from cldash.runs.recovery import AUTO_RESUME_LIMIT, AUTO_RESUME_SETTING
from cldash.store import Store, default_db, mask_url

ACTIVE = ("queued", "running")


def through_app() -> None:
    """Make sure a page runs inside app.py (navigation and sidebar), also when opened directly.

    Streamlit sees the pages/ folder next to app.py and, until some session has run app.py's
    st.navigation, serves a URL like /launch by running pages/launch.py on its own (its old
    multipage mode). Switching that mode off and re-running routes the request through app.py,
    which picks the same page by its URL. Every page calls this first.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def db_location() -> str:
    """The store the sidebar names. The default ($CLDASH_DB) is shown with its password masked, so
    that masked text stands for the default itself."""
    typed = st.session_state.get("db_location")
    return default_db() if not typed or typed == mask_url(default_db()) else typed


def get_store() -> Store:
    """The store named in the sidebar; an error box and a stop when it cannot be opened."""
    try:
        return Store(db_location())
    except UserError as exc:
        st.error(str(exc))
        st.stop()


def _parse_ids(text: str) -> list[int]:
    return [int(t) for t in str(text).replace(" ", "").split(",") if t.isdigit()]


def selected_ids() -> list[int]:
    if "selected" not in st.session_state:
        st.session_state.selected = _parse_ids(st.query_params.get("runs", ""))
    return list(st.session_state.selected)


def set_selected(ids: list[int]) -> None:
    """Select these runs; the sidebar redraws its counts and picker (`refresh_sidebar`), since a page selects
    the runs it has just launched."""
    ids = sorted(dict.fromkeys(int(i) for i in ids))
    st.session_state.selected = ids
    if ids:
        st.query_params["runs"] = ",".join(map(str, ids))
    elif "runs" in st.query_params:
        del st.query_params["runs"]
    refresh_sidebar()


REFRESH_SECONDS = 2   # the sidebar's counts follow the store this often while runs are queued or running
_RUN = threading.local()   # this script run's sidebar slots (refresh_sidebar); a session runs one script at a time


@functools.lru_cache(maxsize=16384)
def _choice_label(run_id: int, seed: int, config: str) -> str:
    """A run's label from its stored config text, which never changes for a run: parsed once per process."""
    return run_label({"id": run_id, "seed": seed, "config": json.loads(config) if config else {}})


def _counts_panel(url: str, first: dict) -> None:
    """How many runs the store holds, run and wait, and the concurrency limit. Drawn by the sidebar with what it
    has just read (`first`); as a fragment it then reads again by itself every REFRESH_SECONDS while runs are
    active, reconciling and starting queued runs as a page refresh does."""
    store, counts = first.pop("store", None), first.pop("counts", None)
    if store is None:   # a rerun of the fragment alone: the runs may have moved on since
        try:
            store = Store(url)
            schedule(store)
        except UserError as exc:
            st.error(str(exc))
            return
        counts = store.status_counts()
    total = sum(counts.values())
    st.caption(f":material/check_circle: {store.display} · {total} run{'s' * (total != 1)}")
    running, queued = counts.get("running", 0), counts.get("queued", 0)
    st.metric("Running", f"{running} / {max_concurrent(store)}")
    if queued:   # a count, in words: a metric's delta would draw an arrow, which reads as a change
        st.caption(f"{queued} queued")


def _draw_counts(store: Store) -> None:
    counts = store.status_counts()
    active = any(counts.get(s) for s in ACTIVE)
    st.fragment(_counts_panel, run_every=REFRESH_SECONDS if active else None)(store.url,
                                                                           {"store": store, "counts": counts})


def _draw_choices(store: Store) -> list[int]:
    """The "Selected runs" picker over every run (a light listing: ids, seeds and config texts); its options."""
    labels = {i: _choice_label(i, seed, config) for i, seed, config in store.run_choices()}
    chosen = [i for i in selected_ids() if i in labels]
    picked = st.multiselect("Selected runs", options=list(labels), default=chosen,
                            format_func=lambda i: labels.get(i, f"#{i}"),
                            help="The runs the Live, Compare, Spectra and Ranks pages show. "
                                 "Select rows on the Runs page or pick them here.")
    if picked != chosen or st.query_params.get("runs", "") != ",".join(map(str, sorted(picked))):
        set_selected(picked)
    return list(labels)


def _runs_per_gpu(store: Store) -> None:
    """The input of how many background runs share one GPU (shown where there is a GPU)."""
    share = runs_per_gpu(store)
    new_share = st.number_input("Runs per GPU", min_value=1, max_value=64, value=share, step=1, key="runs-per-gpu",
                                help="How many background runs share one GPU (each sees only its own): small runs "
                                     "leave a large GPU mostly idle.")
    if new_share != share:
        try:
            store.set_setting(RUNS_PER_GPU_SETTING, str(int(new_share)))
            schedule(store)
        except UserError as exc:   # a read-only store
            st.error(str(exc))


# Injected on every page (app.py): the README promises text of at least 14 px for a projector at 1024x768.
# Streamlit draws inline code at 0.75em (10.5 px in a caption); long equations would be cut at the column's edge
# (a select's value is an <input>, which CSS cannot wrap: its column must be wide enough); and the main block's
# wide side padding (5rem) takes a tenth of a 1024 px projector's width.
PAGE_CSS = """<style>
[data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] p { font-size: 14px; }
[data-testid="stMarkdownContainer"] code, [data-testid="stCaptionContainer"] code,
[data-testid="stWidgetLabel"] code { font-size: 14px; }
[data-testid="stTable"] th, [data-testid="stTable"] td { font-size: 14px; overflow-wrap: anywhere; }
[data-testid="stTooltipContent"], [data-testid="stTooltipContent"] * { font-size: 14px; }
[data-testid="stMainBlockContainer"] { padding-left: 2rem; padding-right: 2rem; padding-top: 3rem; }
[data-baseweb="tag"] span { font-size: 14px; }
.katex-display { overflow-x: auto; overflow-y: hidden; padding: 0.25rem 0; }
.katex { font-size: 1.3em; }
</style>"""


def page_style() -> None:
    """The page-wide CSS (PAGE_CSS), once per script run, before the page draws."""
    st.html(PAGE_CSS)


def sidebar() -> Store | None:
    """Store location and health, active runs, concurrency limit, automatic resume, the selected runs.

    The counts and the run picker sit in placeholders, so that a page that creates runs redraws them in the
    same script run (`refresh_sidebar`); the counts also follow the store by themselves while runs are active."""
    _RUN.slots = None
    with st.sidebar:
        st.text_input("Run store", value=mask_url(db_location()), key="db_location",
                      help="A path to a SQLite file or any SQLAlchemy URL (default: $CLDASH_DB or ./runs.db).")
        try:
            store = Store(db_location())
        except UserError as exc:
            st.error(str(exc))
            return None
        schedule(store)   # reconcile with the processes, start queued runs in free slots
        counts_slot = st.empty()
        with counts_slot.container():
            _draw_counts(store)
        if gpu_count():
            _runs_per_gpu(store)
        limit = max_concurrent(store)
        new_limit = st.number_input("Runs at once", min_value=1, max_value=64, value=limit, step=1,
                                    help=f"Concurrency limit for background runs (default {default_limit(store)}: "
                                         "Runs per GPU on each GPU, else one per CPU core). Queued runs start when "
                                         "a slot frees.")
        if new_limit != limit:
            try:
                store.set_setting("max_concurrent", str(int(new_limit)))
                schedule(store)
            except UserError as exc:   # a read-only store
                st.error(str(exc))
        auto = store.get_setting(AUTO_RESUME_SETTING) == "on"
        # no key: the toggle shows the store's setting, also when the CLI or another browser changed it; the
        # rerun after a change draws it with the new setting at once, so the next click reaches that toggle
        wanted = st.toggle("Resume interrupted runs automatically", value=auto,
                           help="When a run is interrupted (a reboot, a killed process, a lost node), queue it "
                                "again from its last task-end checkpoint: it costs at most one task. A run is "
                                f"resumed automatically at most {AUTO_RESUME_LIMIT} times; after that it waits "
                                "for you (the Resume button on the Runs page). Stored with the runs, so it holds "
                                "for every dashboard and `cldash` on this store.")
        if wanted != auto:
            try:
                store.set_setting(AUTO_RESUME_SETTING, "on" if wanted else "off")
            except UserError as exc:   # a read-only store
                st.error(str(exc))
            else:
                st.rerun()
        choices_slot = st.empty()
        with choices_slot.container():
            options = _draw_choices(store)
    _RUN.slots = {"store": store, "counts": counts_slot, "choices": choices_slot, "options": options}
    return store


def refresh_sidebar() -> None:
    """Redraw the sidebar's counts and run picker from the store now. The sidebar is drawn before the page, so a
    page that has just created runs (a launch) calls this once after it: the sidebar then says "2 runs",
    "Running 2 / 2" and offers the new runs at once, not only from the next rerun."""
    slots = getattr(_RUN, "slots", None)
    ctx = get_script_run_ctx()
    if not slots or (ctx is not None and ctx.fragment_ids_this_run):   # no sidebar, or a fragment's own rerun
        return
    store = slots["store"]
    with slots["counts"].container():
        _draw_counts(store)
    if [i for i, _, _ in store.run_choices()] != slots["options"]:   # same options: the picker stands as drawn
        with slots["choices"].container():
            slots["options"] = _draw_choices(store)


def runs_for_page(store: Store, statuses: tuple[str, ...] | None = None, limit: int = 12) -> list[dict]:
    """The selected runs (in the given statuses), or else the latest ones (read alone: a store of a few
    sweeps holds thousands)."""
    ids = selected_ids() or store.latest_run_ids(limit)
    runs = store.runs(ids=ids)
    if statuses:
        runs = [r for r in runs if r["status"] in statuses]
    return runs


def option_widget(row: dict, key: str, default=None, container=st):
    """A widget for one option row of cldash.core.options.describe; the value goes to validation as is."""
    value = row["default"] if default is None else default
    help_text = row["help"] + (f" — default from {row['source']}" if row.get("source") else "")
    label = row["name"].replace("_", " ")
    typ = row["type"]
    if row.get("choices"):
        choices = list(row["choices"])
        return container.selectbox(label, choices, index=choices.index(value) if value in choices else 0,
                                   key=key, help=help_text)
    if typ is bool:
        return container.checkbox(label, value=bool(value), key=key, help=help_text)
    if typ is int:
        return container.number_input(label, value=int(value), step=1, key=key, help=help_text)
    if isinstance(value, list):
        return container.text_input(label, value=", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                                                            for v in value), key=key, help=help_text)
    return container.text_input(label, value="" if value is None else f"{value:g}" if isinstance(value, float)
                                else str(value), key=key, help=help_text)


def png_name(*parts) -> str:
    """A PNG's file name from the chart and its runs: png_name("compare", "matrix", "run", 4) ->
    "cldash-compare-matrix-run-4" (anything but letters, digits and dashes becomes a dash)."""
    text = "-".join(str(p) for p in ("cldash", *parts) if p not in (None, ""))
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]+", "-", text)).strip("-").lower()


def plot(fig, key: str | None = None, filename: str | None = None) -> None:
    """A Plotly chart whose camera button saves `filename`.png (default: named after the chart's key, never
    Plotly's "plot-image.png")."""
    config = {**PLOTLY_CONFIG, "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"],
                                                        "filename": filename or png_name(key or "chart")}}
    st.plotly_chart(fig, config=config, key=key, width="stretch")


def download(df, name: str, label: str = "Download CSV", key: str | None = None) -> None:
    st.download_button(label, df.to_csv(index=False).encode(), file_name=f"{name}.csv", mime="text/csv",
                       key=key or f"dl-{name}")


def download_later(make_frame, name: str, label: str, key: str) -> None:
    """A CSV download made only when clicked: for a table that costs more to write than the page does to
    render (every matrix of a sweep)."""
    st.download_button(label, lambda: make_frame().to_csv(index=False).encode(), file_name=f"{name}.csv",
                       mime="text/csv", key=key)
