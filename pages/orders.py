"""Orders: measure a stream's gradient conflict (the same as `cldash order`, in a background process), the
stored conflict matrices, the adversarial task order built from each (SLICE's adversarial sequences), and a
button that launches a run in that order."""

import streamlit as st

from cldash.analysis.orders import measurement_state, order_args, start_measurement, stream_flags
from cldash.backbones import BACKBONES
from cldash.core.errors import ConfigError, UserError
from cldash.dashboard.figures import PLOTLY_CONFIG, conflict_heatmap
from cldash.dashboard.labels import order_label, run_refs
from cldash.dashboard.tables import conflict_table, order_table
from cldash.dashboard.views import order_runs
from cldash.methods import REGISTRY
from cldash.runs.launch import launch
from cldash.streams import STREAMS
from pages.shared import get_store, set_selected, through_app

through_app()

store = get_store()
st.title("Adversarial task orders")
st.caption("For every pair of tasks, the cosine between the gradients of their losses with respect to each "
           "targeted module's full weight, on the pre-trained backbone (mean over modules). The adversarial order "
           "puts next to each other the tasks whose gradients oppose most: it minimises the sum of consecutive "
           "cosines (exact up to 8 tasks). SLICE's adversarial sequences; the exact recipe here is a reconstruction.")
orders = store.orders()


def watch(started: dict) -> None:
    """The measurement's state, refreshed every 2 s until its order is in the store (then shown below) or
    its process stopped (its one-line reason)."""
    state, value = measurement_state(store, started)
    if state == "measuring":
        st.info(f"measuring… {value:.0f} s so far (`cldash order {' '.join(started['args'])}` in the "
                "background); the order appears below when it is stored.", icon=":material/hourglass_top:")
    elif state == "done":
        del st.session_state["order-measuring"]
        st.session_state["order-pick"] = value["id"]     # the selector below shows the new order
        st.session_state["order-measured"] = value["id"]
        st.rerun(scope="app")
    else:    # said above the button until the next measurement
        del st.session_state["order-measuring"]
        st.session_state["order-failed"] = value
        st.rerun(scope="app")


# the streams whose tasks can run in another order (an hf: stream: from a terminal, `cldash order --stream hf:…`)
orderable = [n for n, cls in STREAMS.items() if hasattr(cls, "reordered")]
with st.expander("Measure an order", expanded=not orders, icon=":material/straighten:"):
    # two to a row, the backbone's long name the wider: at 1024 px four columns cut the names ("Rotated digi")
    c1, c2 = st.columns([2, 3])
    c3, c4 = st.columns(2)
    stream = c1.selectbox("stream", orderable, format_func=lambda n: STREAMS[n].label, key="order-stream")
    fitting = [n for n, e in BACKBONES.items() if e.kind in STREAMS[stream].backbone_kinds]
    backbone = c2.selectbox("backbone", fitting, format_func=lambda n: BACKBONES[n].label, key="order-backbone")
    batches = c3.number_input("gradient batches per task", min_value=1, max_value=256, value=4, step=1,
                              key="order-batches", help="Batches whose gradients are summed for each task.")
    batch_size = c4.number_input("batch size", min_value=1, max_value=4096, value=32, step=1,
                                 key="order-batch-size")
    args = order_args(stream, backbone, {}, int(batches), int(batch_size))
    st.caption(f"The stream's tasks with their default options, on the pre-trained backbone: the same as "
               f"`cldash order {' '.join(args)}` in a terminal (about a minute for rotated digits on a busy "
               "2-core machine; more options there, such as `--stream-angles`).")
    measuring = st.session_state.get("order-measuring")
    if st.button("Measure", key="order-measure", icon=":material/straighten:", disabled=measuring is not None,
                 type="primary" if not orders else "secondary"):
        st.session_state.pop("order-failed", None)
        try:   # the same measurement still running is not started twice (another tab, a double click)
            st.session_state["order-measuring"] = measuring = start_measurement(store, args)
        except UserError as exc:
            st.error(str(exc))
    if "order-failed" in st.session_state:
        st.error(st.session_state["order-failed"])
if measuring is not None:    # outside the expander: seen also when it is folded
    st.fragment(watch, run_every=2)(measuring)
done = st.session_state.pop("order-measured", None)
if done is not None:
    st.success(f"Measured order #{done}; it is shown below.")

if not orders:
    st.info("No order measured yet: measure one above, or from a terminal (`cldash order --stream skills`); it "
            "appears here.")
    st.stop()

labels = {o["id"]: order_label(o) for o in orders}
chosen = st.selectbox("Measured order", list(labels)[::-1], format_func=labels.get, key="order-pick")
o = next(x for x in orders if x["id"] == chosen)
st.plotly_chart(conflict_heatmap(o["tasks"], o["matrix"], o["order"]), config=PLOTLY_CONFIG)

table = order_table(o)
left, right = st.columns(2)
left.metric("Sum of consecutive cosines (adversarial)", f"{o['cost']:.3f}")
right.metric("Configured order", f"{o['natural_cost']:.3f}")
# a static table (HTML, so the page's 14 px text rule reaches it; a dataframe is a canvas), its cosines written
# out: the last task has no next one, an em dash rather than a blank "None"
cosines = table["cosine with the next"]
table["cosine with the next"] = ["—" if c != c else f"{c:.3f}" for c in cosines]
st.table(table, hide_index=True)
st.download_button("Conflict matrix (CSV)", conflict_table(o).to_csv(), file_name=f"order-{o['id']}-conflict.csv",
                   mime="text/csv")

st.subheader("Run in this order")
flags = stream_flags(o["ordered_options"])
methods = st.multiselect("Methods", sorted(REGISTRY), default=["lora"],
                         help="One run per method, each on the stream's tasks in the adversarial order.")
seed = st.number_input("Seed", min_value=0, value=0, step=1)
st.code(f"cldash run --method {methods[0] if methods else 'lora'} --stream {o['stream']} --backbone {o['backbone']} "
        f"{flags} --seed {seed}", language="bash", wrap_lines=True)   # read in full at 1024 px, not scrolled
if st.button("Launch", type="primary", disabled=not methods, key="order-launch", icon=":material/rocket_launch:"):
    try:
        configs, keys, names = order_runs(o, methods, int(seed))
    except ConfigError as exc:
        st.error(str(exc))
        st.stop()
    ids = launch(store, configs, keys, group_key=f"order{o['id']}", names=names)
    set_selected(ids)
    st.success(f"Launched {run_refs(ids)} in the adversarial order.")
    st.page_link("pages/live.py", label="Watch them live", icon=":material/monitoring:")
