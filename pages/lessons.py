"""Lessons: pick a lesson (or open ?lesson=KEY), read its question, launch its runs in one click (at its own
length or another), watch their state, then follow the guided reading, a link per step to the page it names with
the lesson's runs selected, opened on the state the step describes (the run, update kind, module and measures it
names, scrolled to its section: `Step.link_state`, read by the page through pages/links.py), and a link to the
Claims page entry of the claim it illustrates. The lessons
themselves (runs, wording, measured times) are data in cldash.analysis.lessons."""

import streamlit as st

from cldash.analysis import lessons as L
from cldash.analysis.claims import get_claim
from cldash.core.errors import UserError
from cldash.dashboard.labels import run_refs
from cldash.dashboard.views import lesson_progress, lesson_run_line
from pages.shared import get_store, selected_ids, set_selected, through_app

through_app()

STATUS_ICON = {"queued": ":gray[:material/schedule:]", "running": ":blue[:material/play_circle:]",
               "finished": ":green[:material/check_circle:]", "failed": ":red[:material/error:]",
               "cancelled": ":gray[:material/cancel:]", "interrupted": ":orange[:material/warning:]"}

store = get_store()
st.title("Lessons")
st.caption("Each lesson is a question, a one-click launch that takes about a minute, and a short guided reading: "
           "which chart to open, what to look at, what to notice. From a terminal: `cldash lessons`.")
keys = [lesson.key for lesson in L.LESSONS]
# a link to ?lesson=KEY opens that lesson; else the lesson and length last chosen, since widget state does not survive a
# page switch, and a class that follows a step's link comes back here for the next step
asked = st.query_params.get("lesson")
if "lesson-pick" not in st.session_state:
    last = asked if asked in keys else st.session_state.get("lesson-last")
    if last in keys:
        st.session_state["lesson-pick"] = last
key = st.selectbox("Lesson", keys, key="lesson-pick",
                   format_func=lambda k: f"{keys.index(k) + 1}. {L.get_lesson(k).title}")
if st.query_params.get("lesson") != key:
    st.query_params["lesson"] = key
lesson = L.get_lesson(key)
st.session_state["lesson-last"] = key

st.subheader(lesson.question)
st.caption(f"{L.summary(lesson)}: {'; '.join(lesson.runs)}" + (f" · {lesson.note}" if lesson.note else ""))
left, right = st.columns([1, 3], vertical_alignment="bottom")
if f"lesson-steps-{key}" not in st.session_state:
    st.session_state[f"lesson-steps-{key}"] = st.session_state.get(f"lesson-length-{key}", lesson.steps_per_task)
steps = left.number_input("steps per task", min_value=1, max_value=10_000, step=10, key=f"lesson-steps-{key}",
                          help=f"The lesson's own length is {lesson.steps_per_task} steps per task, the one its "
                               "reading's numbers were checked at. The time is about proportional to the steps, plus "
                               "a few seconds to start each run; at fewer steps the effects may not show yet.")
st.session_state[f"lesson-length-{key}"] = steps
length = None if steps == lesson.steps_per_task else int(steps)
if right.button(f"Launch this lesson ({len(lesson.runs)} runs)", type="primary", key=f"lesson-launch-{key}",
                icon=":material/play_arrow:",
                help="Queues the lesson's runs (a run it already has at this length is reused: a double click "
                     "launches once). They run in the background, as many at once as the sidebar allows."):
    try:
        ids = L.launch_lesson(store, key, length)
    except UserError as exc:
        st.error(f"Nothing was launched: {exc}")
    else:
        set_selected(ids)
        st.session_state["lesson-launched"] = ids
        st.rerun()
launched = st.session_state.pop("lesson-launched", None)
if launched:
    st.success(f"Queued runs {run_refs(launched)}. Their state is below; the reading's links "
               "open each page with them selected.")


# whether the runs are on their way, decided before the fragment is defined: deciding it inside would cost a rerun
# of the page right after a launch, which would wipe the "Queued runs" message above
st.session_state[f"lesson-live-{key}"] = L.progress(L.lesson_runs(store, lesson, length))["active"] > 0


@st.fragment(run_every=2 if st.session_state.get(f"lesson-live-{key}") else None)
def state_and_reading() -> None:
    runs = L.lesson_runs(store, lesson, length)
    state = L.progress(runs)
    live = state["active"] > 0
    if live != st.session_state.get(f"lesson-live-{key}", False):   # start or stop the two-second refresh
        st.session_state[f"lesson-live-{key}"] = live
        st.rerun(scope="app")
    ids = L.run_ids(runs)
    if ids and selected_ids() != sorted(ids) and st.session_state.get("lesson-selected") != ids:
        st.session_state["lesson-selected"] = ids     # once per set of runs: the user may pick others afterwards
        set_selected(ids)
        st.rerun(scope="app")
    st.markdown("#### The lesson's runs")
    if not ids:
        st.info("Not launched yet at this length: press the launch button above.")
    else:
        st.progress(state["progress"], text=lesson_progress(state, len(runs)))
        for label, run in runs.items():
            st.markdown(lesson_run_line(label, run, STATUS_ICON))
    st.markdown("#### Guided reading")
    if ids and not state["done"]:
        st.caption("The charts fill in as the runs go; the numbers the reading mentions are those of finished runs.")
    selection = {"runs": ",".join(map(str, sorted(ids)))} if ids else {}
    by_label = {label: run["id"] for label, run in runs.items() if run is not None}
    for n, step in enumerate(lesson.reading, start=1):
        query = {**selection, **step.link_state(by_label)} or None
        with st.container(border=True):
            st.markdown(f"**{n}. {step.page}: {step.chart}**  \nLook at {step.look}.  \n*Notice:* {step.notice}")
            with st.container(horizontal=True):
                st.page_link(L.PAGES[step.page], label=f"Open {step.page}", icon=":material/arrow_forward:",
                             query_params=query, help=step.opens(by_label))
                if step.claim:
                    claim = get_claim(step.claim)
                    st.page_link(L.PAGES["Claims"], label=f"The claim: {claim.paper}", icon=":material/fact_check:",
                                 query_params={"claim": claim.key}, help=claim.statement)


state_and_reading()
