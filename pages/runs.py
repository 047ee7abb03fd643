"""Runs: every stored run with status, progress, group and key metrics; filter; select runs one by one or a
whole group (a sweep) at once; cancel, re-run, delete."""

import uuid

import streamlit as st

from cldash.launch import cancel, launch_demo, rerun
from cldash.tables import runs_table
from cldash.views import filter_runs, group_label, group_sizes, run_regime
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
        "singular-value spectra of every adapter, ranks over time.\n\n"
        "Start with the demo: LoRA, full fine-tuning and every other registered method on **rotated digits** "
        "(a tiny ViT pre-trained on upright digits learns five rotations one after the other). Runs go in the "
        "background and queue for free CPU slots; you can close the browser and come back.")
    if st.button("🚀 Launch the demo comparison", type="primary", key="demo-button"):
        key = st.session_state.setdefault("demo_key", f"demo-{uuid.uuid4().hex[:8]}")
        ids = launch_demo(store, key)
        set_selected(ids)
        st.success(f"Launched runs {', '.join(map(str, ids))}. Watch them on the Live page.")
        st.rerun()
    st.info("Or design your own comparison on the **Launch** page, or from a terminal: "
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


any_active = any(r["status"] in ACTIVE for r in all_runs)
# The full run's listing, for the fragment's first call; a fragment rerun (every few seconds) reads its own.
listing = {"runs": all_runs}


@st.fragment(run_every=2 if any_active else 10)   # quiet stores still notice runs started elsewhere
def table():
    runs = visible(listing.pop("runs", None) or store.run_listing())
    df = runs_table(runs)
    chosen = set(selected_ids())
    event = st.dataframe(
        df, hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs_table",
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


table()


def select_group(group_key: str) -> None:
    """Select every run of a group. The table's own selection is dropped so that it shows the new one
    (its selection_default applies only when it holds none)."""
    set_selected(store.group_run_ids(group_key))
    st.session_state.pop("runs_table", None)


if groups:
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    pick = c1.selectbox("group", [key for key, _ in groups], key="runs_group_pick",
                        format_func=lambda k: f"{group_label(k)} · {dict(groups)[k]} runs")
    c2.button(f"Select the {dict(groups)[pick]} runs of {group_label(pick)}", key="runs_group_select",
              on_click=select_group, args=(pick,),
              help="Replaces the selection; the Compare page then shows them with the mean ± sd over seeds "
                   "of each setting.")

ids = selected_ids()
chosen = set(ids)
sel = [r for r in all_runs if r["id"] in chosen]    # this render's listing: no second read of the store
if sel:
    st.markdown(f"**{len(sel)} selected:** " + ", ".join(f"#{r['id']}" for r in sel))
    c1, c2, c3 = st.columns(3)
    active = [r for r in sel if r["status"] in ACTIVE]
    if c1.button(f"⏹ Cancel {len(active)} active", disabled=not active):
        for r in active:
            cancel(store, r["id"])
        st.rerun()
    seed = c2.number_input("seed for re-runs", min_value=0, value=max(r["seed"] for r in sel) + 1, step=1)
    if c2.button("🔁 Re-run with this seed"):
        # the same run with the same seed would repeat itself exactly: a second click is a double click
        new = [rerun(store, r["id"], int(seed), launch_key=f"rerun:{r['id']}:seed{int(seed)}") for r in sel]
        st.success(f"Queued runs {', '.join(map(str, new))}.")
    ended = [r for r in sel if r["status"] not in ACTIVE]
    confirm = c3.checkbox(f"I want to delete {len(ended)} run(s) and all their rows", disabled=not ended)
    if c3.button("🗑 Delete", disabled=not (ended and confirm)):
        for r in ended:
            store.delete_run(r["id"])
        set_selected([i for i in ids if i not in {r["id"] for r in ended}])
        st.rerun()
    errors = [r for r in sel if r["error"]]
    for r in errors[:5]:     # a sweep's selection may hold dozens: the table's error column has them all
        st.warning(f"#{r['id']} {r['status']}: {r['error'].splitlines()[0]}")
    if len(errors) > 5:
        st.caption(f"… and {len(errors) - 5} more runs with an error (the table's error column).")
