"""Runs: every stored run with status, progress, group, lineage and key metrics; filter; select runs one by
one or a whole group (a sweep) at once; cancel, re-run, resume, delete; and "What if…": fork a finished run
after one of its tasks with changed options."""

import uuid

import streamlit as st

from cldash.analysis.lessons import LESSONS, get_lesson, launch_lesson, summary as lesson_summary
from cldash.core.errors import ConfigError, UserError
from cldash.dashboard.forks import (
    fork_changes,
    fork_error,
    fork_intro,
    fork_launch_key,
    fork_methods,
    fork_points,
    fork_preview,
    fork_started,
    no_fork_reason,
)
from cldash.dashboard.labels import group_label, launcher_label, run_refs
from cldash.dashboard.tables import runs_table
from cldash.dashboard.views import delete_label, filter_runs, group_sizes, listing_caption, resumed_message, run_regime
from cldash.engine import checkpoints
from cldash.methods import REGISTRY
from cldash.runs import lineage, recovery
from cldash.runs.demo import FULL_DEMO_TIME, QUICK_DEMO_TIME, launch_demo
from cldash.runs.launch import cancel, rerun
from cldash.runs.queue import schedule
from pages.shared import ACTIVE, download, get_store, selected_ids, set_selected, through_app

through_app()

store = get_store()
all_runs = store.run_listing()     # without the configs: the table shows only their preset

if not all_runs:   # an empty store: the first page a person sees is a welcome, not an empty "Runs" table
    st.set_page_config(page_title="Welcome · cldash")
    st.title("Welcome to cldash")
    st.markdown(
        "cldash trains a small pre-trained model through a stream of tasks with several continual-learning "
        "methods side by side and shows, live, how each one forgets: accuracy matrices filling in, the "
        "singular-value spectra of every adapter, ranks over time. Runs go in the background and queue for free "
        "CPU slots; you can close the browser and come back.")
    with st.container(border=True):
        st.markdown("**Start with a lesson**: a question, runs that take about a minute, and what to look at.")
        pick = st.selectbox("Lesson", [x.key for x in LESSONS], key="welcome-lesson",
                            format_func=lambda k: get_lesson(k).title)
        st.markdown(f"*{get_lesson(pick).question}*  \n{lesson_summary(get_lesson(pick))}")
        if st.button("Launch this lesson", type="primary", key="welcome-lesson-button", icon=":material/school:"):
            set_selected(launch_lesson(store, pick))
            st.switch_page("pages/lessons.py", query_params={"lesson": pick})
    with st.container(border=True):
        st.markdown("**Or the demo**: LoRA, full fine-tuning, EBLoRA and PiSSA on three rotations of the digits "
                    "(a tiny ViT pre-trained on upright digits learns them one after the other), "
                    f"{QUICK_DEMO_TIME}; or the full comparison of every method.")
        with st.container(horizontal=True):
            quick = st.button(f"Launch the quick demo ({QUICK_DEMO_TIME})", key="demo-button", type="primary",
                              icon=":material/rocket_launch:")
            full = st.button(f"The full comparison ({len(REGISTRY)} methods, {FULL_DEMO_TIME})",
                             key="demo-full-button", icon=":material/view_list:")
        if quick or full:
            key = st.session_state.setdefault("demo_key", f"demo-{uuid.uuid4().hex[:8]}")
            ids = launch_demo(store, key, full=full)
            set_selected(ids)
            st.switch_page("pages/live.py", query_params={"runs": ",".join(map(str, sorted(ids)))})
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown("Or design your own comparison on the", width="content")
        st.page_link("pages/launch.py", label="Launch page", icon=":material/tune:")
    st.caption("From a terminal: `cldash lessons`, `cldash demo`, or "
               "`cldash run --method lora --stream digits-rotate --seed 0`.")
    st.stop()

st.title("Runs")
groups = group_sizes(all_runs)
with st.expander("Filters", expanded=False):
    c1, c2, c3, c4, c5 = st.columns(5)
    f_status = c1.multiselect("status", sorted({r["status"] for r in all_runs}))
    f_method = c2.multiselect("method", sorted({r["method"] for r in all_runs}))
    f_stream = c3.multiselect("stream", sorted({r["stream"] for r in all_runs}))
    f_regime = c4.multiselect("regime", sorted({run_regime(r) for r in all_runs}),
                              help="common: the shared defaults; paper / paper:METHOD: an authors' regime")
    f_group = c5.multiselect("group", [key for key, _ in groups] + [""] * any(not r["group_key"] for r in all_runs),
                             format_func=lambda k: f"{group_label(k)} ({dict(groups)[k]})" if k else "no group",
                             key="runs_group_filter",
                             help="The runs launched together: a sweep (`cldash sweep`), the claims' runs, a "
                                  "launch from the Launch page or the demo.")
    c1, c2, _, _, _ = st.columns(5)
    f_launcher = c1.multiselect("launcher", sorted({launcher_label(r) for r in all_runs}), key="runs_launcher_filter",
                                help="What started the run: cli (a `cldash run` in a terminal), local (this "
                                     "machine's queue), ray (a Ray cluster's job)")
    f_host = c2.multiselect("host", sorted({r["host"] or "" for r in all_runs}), key="runs_host_filter",
                            format_func=lambda h: h or "not started yet",
                            help="The machine the run ran on (a queued run has none yet)")


def visible(runs):
    return filter_runs(runs, f_status, f_method, f_stream, f_regime, f_group, f_launcher, f_host)


def say_after_rerun(message: str, links: bool = False, errors: list[str] | None = None) -> None:
    """Show `message` (links to Live and Compare, errors) on the next render, then rerun: the table and the
    selection then show the new state (a queued run, a new fork selected next to its parent)."""
    st.session_state["runs-said"] = {"message": message, "links": links, "errors": errors or []}
    st.session_state.pop("runs_table", None)   # the table's own selection would hide the new one
    st.rerun()


def resume_runs(runs: list[dict]) -> None:
    """Queue each run again from its last checkpoint; say which from which task, and why one could not."""
    done, refused = [], []
    for r in runs:
        try:
            task = lineage.resume(store, r["id"], start=False)
        except UserError as exc:    # a run of a Ray cluster, a status changed meanwhile
            refused.append(str(exc))
            continue
        done.append((r["id"], task))
    if done:
        schedule(store)   # once for all of them, not once a run
        say_after_rerun(resumed_message(done), links=True, errors=refused)
    for message in refused:
        st.error(message)


def actions(sel: list[dict]) -> None:
    """Cancel, resume, re-run and delete the selected runs, counted on this listing (the table's, so the
    counts follow its refresh)."""
    ids = [r["id"] for r in sel]
    st.markdown(f"**{len(sel)} selected:** " + run_refs(ids))
    c1, c2, c3 = st.columns(3)
    active = [r for r in sel if r["status"] in ACTIVE]
    if c1.button(f"Cancel {len(active)} active", disabled=not active, key="runs-cancel", icon=":material/stop_circle:"):
        for r in active:
            try:
                cancel(store, r["id"])
            except UserError:   # it ended meanwhile: nothing to cancel
                pass
        st.rerun()
    resumable = [r for r in sel if r["status"] in recovery.RESUMABLE]
    if c1.button(f"Resume {len(resumable)} stopped", disabled=not resumable, key="runs-resume",
                 icon=":material/play_arrow:",
                 help="Continue each interrupted, failed or cancelled run from its last finished task (its "
                      "task-end checkpoint); the rows of the task it did not finish are dropped. A run without "
                      "a checkpoint starts over. It keeps its id."):
        resume_runs(resumable)
    seed = c2.number_input("seed for re-runs", min_value=0, value=max(r["seed"] for r in sel) + 1, step=1,
                           key="runs-rerun-seed")
    if c2.button("Re-run with this seed", key="runs-rerun", icon=":material/replay:"):
        # the same run with the same seed would repeat itself exactly: a second click is a double click
        new = [rerun(store, r["id"], int(seed), launch_key=f"rerun:{r['id']}:seed{int(seed)}") for r in sel]
        say_after_rerun(f"Queued run{'s' * (len(new) != 1)} {run_refs(new)}.", links=True)
    ended = [r for r in sel if r["status"] not in ACTIVE]
    label, still = delete_label(len(sel), len(active))
    confirm = c3.checkbox(label, disabled=not ended, key="runs-delete-confirm",
                          help="Deleting removes each run with all its rows (evaluations, scalars, spectra, "
                               "checkpoints); it cannot be undone.")
    if still:
        c3.caption(still)
    if c3.button("Delete", disabled=not (ended and confirm), key="runs-delete", icon=":material/delete:"):
        for r in ended:
            store.delete_run(r["id"])
        set_selected([i for i in selected_ids() if i not in {r["id"] for r in ended}])
        st.session_state.pop("runs-delete-confirm", None)
        st.rerun()
    errors = [r for r in sel if r["error"]]
    for r in errors[:5]:     # a sweep's selection may hold dozens: the table's error column has them all
        st.warning(f"#{r['id']} {r['status']}: {r['error'].splitlines()[0]}")
    if len(errors) > 5:
        st.caption(f"… and {len(errors) - 5} more runs with an error (the table's error column).")


said = st.session_state.pop("runs-said", None)
if said:
    st.success(said["message"])
    for message in said["errors"]:
        st.error(message)
    if said["links"]:
        l1, l2, _ = st.columns([1, 1, 4])
        with l1:
            st.page_link("pages/live.py", label="Watch it live", icon=":material/monitoring:")
        with l2:
            st.page_link("pages/compare.py", label="Compare", icon=":material/compare:")

any_active = any(r["status"] in ACTIVE for r in all_runs)
# The full run's listing, for the fragment's first call; a fragment rerun (every few seconds) reads its own.
listing = {"runs": all_runs}


@st.fragment(run_every=2 if any_active else 10)   # quiet stores still notice runs started elsewhere
def table():
    fresh = listing.pop("runs", None) or store.run_listing()
    runs = visible(fresh)
    df = runs_table(runs)
    chosen = set(selected_ids())
    event = st.dataframe(
        df, hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs_table",
        placeholder="",    # an unfinished run's metrics are empty cells, not "None"
        selection_default={"selection": {"rows": [i for i, r in enumerate(runs) if r["id"] in chosen]}},
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "final acc": st.column_config.NumberColumn(format="%.3f", help="(1/T) Σ_j R[T][j]"),
            "BWT": st.column_config.NumberColumn(format="%.3f", help="(1/(T-1)) Σ_{j<T} (R[T][j] − R[j][j])"),
            "forgetting": st.column_config.NumberColumn(
                format="%.3f", help="(1/(T-1)) Σ_{j<T} (max_{j≤l<T} R[l][j] − R[T][j])"),
            "general kept": st.column_config.NumberColumn(format="%.3f", help="general-task score G[T] / G[0]"),
        })
    st.caption(listing_caption(runs))
    picked = [runs[i]["id"] for i in event.selection.rows] if event and event.selection else []
    if set(picked) != chosen and (picked or chosen & {r["id"] for r in runs}):
        set_selected(picked)
        st.rerun()
    download(df, "runs", key="dl-runs")
    sel = [r for r in fresh if r["id"] in chosen]    # this tick's listing, also for runs the filters hide
    if sel:
        actions(sel)


def select_group(group_key: str) -> None:
    """Select every run of a group. The table's own selection is dropped so that it shows the new one
    (its selection_default applies only when it holds none)."""
    set_selected(store.group_run_ids(group_key))
    st.session_state.pop("runs_table", None)


def group_picker() -> None:
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    pick = c1.selectbox("group", [key for key, _ in groups], key="runs_group_pick",
                        format_func=lambda k: f"{group_label(k)} · {dict(groups)[k]} runs")
    c2.button(f"Select the {dict(groups)[pick]} runs of {group_label(pick)}", key="runs_group_select",
              on_click=select_group, args=(pick,),
              help="Replaces the selection; the Compare page then shows them with the mean ± sd over seeds "
                   "of each setting.")


if groups:
    group_picker()
table()

chosen = set(selected_ids())
sel = [r for r in all_runs if r["id"] in chosen]    # this render's listing: no second read of the store


# -- What if…: a fork of one finished run -----------------------------------------------------------
def fork_form(parent: dict, tasks: list[int], slots: dict) -> dict:
    """The "What if…" fields, each with an empty slot under it for its error (`slots`); their values."""
    config, key = parent["config"], f"fork{parent['id']}"   # widget keys per parent: each form its own values

    def field(name: str, container, widget):
        value = widget(container)
        slots[name] = container.empty()    # this field's error, right under it
        return value

    c1, c2, c3 = st.columns(3)
    after = field("after_task", c1, lambda c: c.selectbox(
        "after task", tasks, index=len(tasks) - 1, key=f"{key}-after",
        format_func=lambda t: f"after task {t}"))
    method = field("method", c1, lambda c: c.selectbox(
        "method", fork_methods(REGISTRY, config["method"]), key=f"{key}-method",
        format_func=lambda m: REGISTRY[m].label))
    default_lr = config.get("lr") or REGISTRY[method].default_lr
    lr = field("lr", c2, lambda c: c.text_input(
        "learning rate", key=f"{key}-lr", placeholder=f"{default_lr:g}",
        help="Empty: the parent's learning rate, or the new method's default when the method changes."))
    seed = field("seed", c2, lambda c: c.number_input(
        "seed", min_value=0, value=int(config["seed"]), step=1, key=f"{key}-seed",
        help="Each task's batches come from the seed and the task, so another seed changes the tasks "
             "after the fork only."))
    replay = field("replay", c3, lambda c: c.number_input(
        "replay buffer size", min_value=0, value=int(config.get("replay") or 0), step=50,
        key=f"{key}-replay",
        help="Examples of finished tasks mixed into every step; switched on at the fork, the buffer starts "
             "filled from the tasks up to the fork."))
    ewc = field("ewc_lambda", c3, lambda c: c.number_input(
        "EWC lambda", min_value=0.0, value=float(config.get("ewc_lambda") or 0.0), step=50.0,
        key=f"{key}-ewc",
        help="Switched on at the fork, EWC consolidates the tasks up to the fork on the weights there."))
    other = field("other", st, lambda c: c.text_area(
        "other run options (JSON)", key=f"{key}-other", height=68, placeholder='{"batch_size": 32, '
        '"method_options": {"rank": 4}}',
        help="Any run option (cldash run --help) and method_options; they win over the fields above. The "
             "stream, backbone, targets and steps per task stay the parent's."))
    return {"after_task": after, "method": method, "lr": lr, "seed": int(seed), "replay": int(replay),
            "ewc_lambda": float(ewc), "other": other}


def start_fork(parent_id: int, after: int, changes: dict, slots: dict) -> None:
    """Queue the fork; what refuses it is said under the field it comes from, and nothing is created."""
    try:
        new_id = lineage.fork(store, parent_id, int(after), changes,
                                  launch_key=fork_launch_key(parent_id, int(after), changes))
    except UserError as exc:   # a ConfigError too: under its own field
        field, message = fork_error(exc, changes, lineage.FIXED_AT_FORK)
        slots[field].error(message)
        return
    set_selected([parent_id, new_id])
    say_after_rerun(fork_started(parent_id, new_id, after, changes), links=True)


def what_if(run: dict) -> None:
    """A form for a new run from `run`'s state after task K with changed options (cldash.engine.lineage.fork).
    What cannot fork is said under the field it comes from, and nothing is created."""
    parent = store.get_run(run["id"])   # with its config (the listing has none)
    tasks = fork_points(checkpoints.available(store, run["id"]), parent["num_tasks"])
    with st.expander(f"What if… run #{run['id']} had gone on differently after one of its tasks",
                     expanded=bool(tasks)):
        if not tasks:
            st.caption(no_fork_reason(parent))
            return
        for line in fork_intro(parent, tasks):
            st.caption(line)
        slots: dict = {}
        values = fork_form(parent, tasks, slots)
        after, other = values.pop("after_task"), values.pop("other")
        try:
            changes, bad_json = fork_changes(parent, values, other), None
        except ConfigError as exc:
            changes, bad_json = None, str(exc)
        kind, note = fork_preview(parent, changes, after, REGISTRY)
        if kind:
            (st.info if kind == "info" else st.caption)(note)
        if bad_json:
            slots["other"].error(bad_json)
        clicked = st.button("Start the fork", type="primary", key=f"fork{run['id']}-button",
                            icon=":material/call_split:")
        if clicked and not bad_json:
            start_fork(run["id"], after, changes, slots)


if len(sel) == 1 and sel[0]["status"] == "finished":
    what_if(sel[0])
