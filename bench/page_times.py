"""Server time of each dashboard page's first render after navigation, with Streamlit's AppTest in one
process, on a store of a few finished runs (made once per call, tiny: 5 rotations x `--steps` steps).

For each round, the pages are visited in turn (each visit is a navigation from the page before, the
selection in the URL naming every run); a visit's time is that of the whole script run (the sidebar and the
page), and its time to the first chart is from the start of the run to the end of its first
`st.plotly_chart` (pages without a chart report none). Medians over the rounds; the first round is a
warm-up (the first import of each page's modules), reported apart. This process has imported torch already
(bench/common), and its first script run (not timed) imports what the Runs page needs; a fresh dashboard
process's first page also imports torch and transformers (cldash.methods, imported by the Runs, Launch,
Orders and Methods pages): about 3 s on an idle 2-core machine, measured apart.

    python bench/page_times.py [--rounds 5] [--steps 20] [--profile Live]   # --profile: cProfile of one page
    python bench/page_times.py --label before   # results/page_times_before.json, to keep a before/after pair
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # the pages/ package, also when run as `python bench/page_times.py`
PAGES = {"Runs": "pages/runs.py", "Lessons": "pages/lessons.py", "Launch": "pages/launch.py", "Live": "pages/live.py",
         "Compare": "pages/compare.py", "Claims": "pages/claims.py", "Spectra": "pages/spectra.py",
         "Ranks": "pages/ranks.py", "Orders": "pages/orders.py", "Methods": "pages/methods.py"}
METHODS = ("lora", "full", "eblora", "codyra")


def make_store(folder: Path, steps: int) -> str:
    """A store with one finished run per method in METHODS (digits-rotate, `steps` steps a task)."""
    from cldash.config import describe_run, resolve
    from cldash.runs.execute import execute
    from cldash.store import Store

    db = str(folder / "runs.db")
    store = Store(db)
    for method in METHODS:
        resolved = resolve({"method": method, "steps_per_task": steps, "eval_interval": max(1, steps // 2)})
        run_id = store.create_run(resolved.to_dict(), name=describe_run(resolved.config))
        assert execute(store, run_id) == "finished"
    return db


def first_chart_clock():
    """Note when the first chart of a script run is drawn (pages draw through pages.shared.plot or
    st.plotly_chart); returns (reset, read)."""
    import streamlit as st

    import pages.shared as shared

    seen: dict[str, float] = {}

    def noting(draw):
        def drawn(*args, **kwargs):
            out = draw(*args, **kwargs)
            seen.setdefault("t", time.perf_counter())
            return out
        return drawn

    shared.plot = noting(shared.plot)
    st.plotly_chart = noting(st.plotly_chart)
    return seen.clear, lambda: seen.get("t")


def sidebar_clock(profile: cProfile.Profile | None):
    """Time pages.shared.sidebar, and run the sidebar and the page under `profile` when profiling is on
    (the script runs in AppTest's own thread, which a profiler started here would not see)."""
    from streamlit.navigation.page import StreamlitPage

    import pages.shared as shared

    spent: dict[str, float] = {}
    on = {"profile": False}
    sidebar, run_page = shared.sidebar, StreamlitPage.run

    def profiled(fn):
        def call(*args, **kwargs):
            if not (on["profile"] and profile is not None):
                return fn(*args, **kwargs)
            profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profile.disable()
        return call

    def timed_sidebar(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return profiled(sidebar)(*args, **kwargs)
        finally:
            spent["sidebar"] = time.perf_counter() - t0

    shared.sidebar = timed_sidebar
    StreamlitPage.run = profiled(run_page)
    return spent, on


def v2_navigation() -> None:
    """As tests/pages/test_app.py does: AppTest runs like a served dashboard after its first page load."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = patched


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--profile", choices=list(PAGES), help="print a cProfile of one visit to this page")
    p.add_argument("--label", default="", help="a suffix for the results file (before, after)")
    p.add_argument("--store", help="a store made by an earlier call (its runs.db), instead of a new one")
    args = p.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="cldash-page-times-"))
    os.environ["CLDASH_CACHE"] = str(folder / "cache")
    start = time.perf_counter()
    db = args.store or make_store(folder, args.steps)
    make_seconds = time.perf_counter() - start
    print(f"store: {db}", flush=True)
    os.environ["CLDASH_DB"] = db

    from streamlit.testing.v1 import AppTest

    v2_navigation()
    reset, first_chart = first_chart_clock()
    prof = cProfile.Profile() if args.profile else None
    spent, profiling = sidebar_clock(prof)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["runs"] = ",".join(str(i) for i in range(1, len(METHODS) + 1))
    at.run()

    def visit(page: str) -> tuple[float, float | None]:
        reset()
        t0 = time.perf_counter()
        at.switch_page(PAGES[page]).run()
        t1 = time.perf_counter()
        if at.exception:
            raise SystemExit(f"{page} raised: {[e.value for e in at.exception]}")
        chart = first_chart()
        drawn[page] = len(at.get("plotly_chart"))
        sidebars[page].append(spent.get("sidebar", float("nan")))
        return t1 - t0, None if chart is None else chart - t0

    drawn: dict[str, int] = {}
    sidebars: dict[str, list[float]] = {page: [] for page in PAGES}

    warmup = {page: visit(page)[0] for page in PAGES}
    for page in PAGES:
        sidebars[page].clear()
    seconds: dict[str, list[float]] = {page: [] for page in PAGES}
    charts: dict[str, list[float]] = {page: [] for page in PAGES}
    loads = []
    for _ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for page in PAGES:
            total, chart = visit(page)
            seconds[page].append(total)
            if chart is not None:
                charts[page].append(chart)
    if args.profile:
        visit("Runs" if args.profile != "Runs" else "Methods")
        profiling["profile"] = True
        visit(args.profile)
        profiling["profile"] = False
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(50)
        print(out.getvalue())
    result = {page: {"median_seconds": round(median(seconds[page]), 3),
                     "first_chart_seconds": round(median(charts[page]), 3) if charts[page] else None,
                     "sidebar_seconds": round(median(sidebars[page]), 3),
                     "warmup_seconds": round(warmup[page], 3), "charts": drawn[page]} for page in PAGES}
    save("page_times" + (f"_{args.label}" if args.label else ""), {
        "what": f"server time of each page's render after navigation (AppTest, one process), {len(METHODS)} "
                f"finished runs ({', '.join(METHODS)}; 5 tasks x {args.steps} steps), all selected; medians of "
                f"{args.rounds} rounds after a warm-up round",
        "load_average_1min": [round(x, 2) for x in loads], "cpu_count": os.cpu_count(),
        "store_seconds": round(make_seconds, 1), "pages": result, "rounds": args.rounds})
    for page, r in result.items():
        chart = r["first_chart_seconds"]
        print(f"{page:8s} {r['median_seconds']:6.3f} s   sidebar {r['sidebar_seconds']:.3f} s   "
              f"first chart {'-' if chart is None else f'{chart:.3f} s'}"
              f"   ({r['charts']} charts)")

if __name__ == "__main__":
    main()
