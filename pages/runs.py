"""Runs: every stored run with status, progress, group, lineage and key metrics; filter; select runs one by
one or a whole group (a sweep) at once; cancel, re-run, resume, delete; and "What if…": fork a finished run
after one of its tasks with changed options."""

import uuid

import streamlit as st

from cldash.engine import checkpoints
from cldash.runs import lineage, recovery
from cldash.core.errors import ConfigError, UserError
from cldash.runs.demo import FULL_DEMO_TIME, launch_demo, QUICK_DEMO_TIME
from cldash.runs.launch import cancel, rerun
from cldash.runs.queue import schedule
from cldash.analysis.lessons import LESSONS, get_lesson, launch_lesson, summary as lesson_summary
from cldash.methods import REGISTRY
from cldash.core.options import worded
from cldash.dashboard.tables import runs_table
from cldash.dashboard.views import (filter_runs, fork_changes, fork_launch_key, group_label, group_sizes, run_regime,
                          starts_on_merged_weights)
from pages.shared import ACTIVE, download, get_store, selected_ids, set_selected, through_app

through_app()

store = get_store()
st.title("Runs")
all_runs = store.run_listing()     # without the configs: the table shows only their preset

if not all_runs:
    st.subheader("Welcome to cldash")
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


def visible(runs):
    return filter_runs(runs, f_status, f_method, f_stream, f_regime, f_group)


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
        done.append(f"#{r['id']} from its checkpoint after task {task}" if task else
                    f"#{r['id']} from the start (it has no checkpoint)")
    if done:
        schedule(store)   # once for all of them, not once a run
        say_after_rerun(f"Resumed {', '.join(done)}; the rows of each unfinished task were dropped, so nothing "
                        "counts twice.", links=True, errors=refused)
    for message in refused:
        st.error(message)


def delete_label(selected: int, active: int) -> tuple[str, str]:
    """The delete checkbox's label (how many of the selected runs it deletes) and the line under it (why not
    the active ones), short enough for a third of the page."""
    ended = selected - active
    still = "" if not active else \
        f"{active} {'is' if active == 1 else 'are'} still active: cancel {'it' if active == 1 else 'them'} first."
    if not active:
        label = "I want to delete the selected run" if selected == 1 else f"I want to delete the {selected} selected runs"
    elif not ended:
        label = "Nothing to delete"
    else:
        label = f"I want to delete {ended} of the {selected} selected runs"
    return label, still


def actions(sel: list[dict]) -> None:
    """Cancel, resume, re-run and delete the selected runs, counted on this listing (the table's, so the
    counts follow its refresh)."""
    ids = [r["id"] for r in sel]
    st.markdown(f"**{len(sel)} selected:** " + ", ".join(f"#{i}" for i in ids))
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
        say_after_rerun(f"Queued run{'s' * (len(new) != 1)} {', '.join(f'#{i}' for i in new)}.", links=True)
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
    counts = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    st.caption(" · ".join(f"{n} {status}" for status, n in sorted(counts.items())) + " — latest: " +
               ", ".join(f"#{r['id']} {r['status']}" for r in runs[-8:]))
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
def what_if(run: dict) -> None:
    """A form for a new run from `run`'s state after task K with changed options (cldash.engine.lineage.fork).
    What cannot fork is said under the field it comes from, and nothing is created."""
    parent = store.get_run(run["id"])   # with its config (the listing has none)
    config, n = parent["config"], parent["num_tasks"] or 0
    tasks = [t for t in checkpoints.available(store, run["id"]) if t < n]   # after the last: nothing to train
    key = f"fork{run['id']}"   # widget keys per parent: another parent's form starts from its own values
    with st.expander(f"What if… run #{run['id']} had gone on differently after one of its tasks",
                     expanded=bool(tasks)):
        if not tasks:
            why = (f"it ran with checkpoints {config['checkpoints']!r}" if "checkpoints" in config else
                   "it ran before cldash kept checkpoints")
            st.caption(f"Run #{run['id']} kept no checkpoint before its last task ({why}), so it cannot fork; "
                       "launch it again with checkpoints 'all' to fork after any task.")
            return
        slots = {}
        labels = {"after_task": "after task", "lr": "learning rate", "replay": "replay buffer size",
                  "ewc_lambda": "EWC lambda"}    # what the fields below are called, for their errors

        def field(name: str, container, widget):
            value = widget(container)
            slots[name] = container.empty()    # this field's error, right under it
            return value

        def say(slot: str, message: str) -> None:
            """An error under its field, naming the field by its label (the JSON options' keep their names)."""
            slots[slot].error(message if slot == "other" else worded(message, labels))

        st.caption(f"A new run starts from #{run['id']}'s state after the task you pick (its rows up to there "
                   "are copied) and trains the remaining tasks with the options below.")
        if len(tasks) < n - 1:
            st.caption(f"Checkpoints kept after task{'s' * (len(tasks) > 1)} {', '.join(map(str, tasks))} only "
                       "(checkpoints 'all' keeps one after every task).")
        c1, c2, c3 = st.columns(3)
        after = field("after_task", c1, lambda c: c.selectbox(
            "after task", tasks, index=len(tasks) - 1, key=f"{key}-after",
            format_func=lambda t: f"after task {t}"))
        names = sorted(REGISTRY, key=lambda m: (m != config["method"], m))
        method = field("method", c1, lambda c: c.selectbox(
            "method", names, key=f"{key}-method", format_func=lambda m: REGISTRY[m].label))
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
        try:
            changes = fork_changes(parent, {"method": method, "lr": lr, "seed": int(seed), "replay": int(replay),
                                            "ewc_lambda": float(ewc)}, other)
        except ConfigError as exc:
            changes, bad_json = None, str(exc)
        else:
            bad_json = None
        if changes is not None and starts_on_merged_weights(parent, changes):
            new = changes.get("method", config["method"])
            st.info(f"{REGISTRY[new].label} starts on run #{run['id']}'s merged weights after task {after}: each "
                    "adapted layer's effective weight there becomes its base weight, with a fresh adapter, so "
                    "its spectra measure the update since the fork. (The same method and options would go on "
                    "with the parent's own adapters and memories.)")
        elif changes == {}:
            st.caption("Nothing changed yet: this fork would repeat the parent's remaining tasks exactly.")
        if bad_json:
            slots["other"].error(bad_json)
        if not st.button("Start the fork", type="primary", key=f"{key}-button", icon=":material/call_split:") \
                or bad_json:
            return
        try:
            new_id = lineage.fork(store, run["id"], int(after), changes,
                                      launch_key=fork_launch_key(run["id"], int(after), changes))
        except ConfigError as exc:
            say(exc.field if exc.field in slots else "other", str(exc))
            return
        except UserError as exc:
            # what cannot change at a fork comes from the JSON options; the rest is about the fork point
            fixed = any(option in changes for option in lineage.FIXED_AT_FORK)
            say("other" if fixed else "after_task", str(exc))
            return
        set_selected([run["id"], new_id])
        say_after_rerun(f"Started run #{new_id} from #{run['id']}'s state after task {after}"
                        + (f" with {', '.join(f'{k}={v}' for k, v in changes.items())}" if changes else
                           " with the same options") + "; parent and fork are selected.", links=True)


if len(sel) == 1 and sel[0]["status"] == "finished":
    what_if(sel[0])
