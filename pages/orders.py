"""Orders: the gradient-conflict matrices measured by `cldash order`, the adversarial task order built
from each (SLICE's adversarial sequences), and a button that launches a run in that order."""

import pandas as pd
import streamlit as st

from cldash.config import RunConfig, describe_run, resolve
from cldash.errors import ConfigError
from cldash.figures import PLOTLY_CONFIG, conflict_heatmap
from cldash.launch import launch
from cldash.methods import REGISTRY
from cldash.orders import stream_flags
from pages.shared import get_store, set_selected, through_app

through_app()

store = get_store()
st.title("Adversarial task orders")
st.caption("For every pair of tasks, the cosine between the gradients of their losses with respect to each "
           "targeted module's full weight, on the pre-trained backbone (mean over modules). The adversarial order "
           "puts next to each other the tasks whose gradients oppose most: it minimises the sum of consecutive "
           "cosines (exact up to 8 tasks). SLICE's adversarial sequences; the exact recipe here is a reconstruction.")
orders = store.orders()
if not orders:
    st.info("No order measured yet. Measure one from a terminal, e.g. `cldash order --stream skills` "
            "(or `--stream digits-rotate`); it appears here.")
    st.stop()

labels = {o["id"]: f"#{o['id']} · {o['stream']} on {o['backbone']} · {len(o['tasks'])} tasks" for o in orders}
chosen = st.selectbox("Measured order", list(labels)[::-1], format_func=labels.get)
o = next(x for x in orders if x["id"] == chosen)
st.plotly_chart(conflict_heatmap(o["tasks"], o["matrix"], o["order"]), config=PLOTLY_CONFIG)

table = pd.DataFrame({"position": range(1, len(o["order"]) + 1),
                      "task": [f"T{i + 1}: {o['tasks'][i]}" for i in o["order"]],
                      "cosine with the next": [o["matrix"][a][b] for a, b in zip(o["order"][:-1], o["order"][1:])]
                      + [float("nan")]})
left, right = st.columns(2)
left.metric("Sum of consecutive cosines (adversarial)", f"{o['cost']:.3f}")
right.metric("Configured order", f"{o['natural_cost']:.3f}")
st.dataframe(table, hide_index=True, column_config={"cosine with the next": st.column_config.NumberColumn(
    format="%.3f")})
st.download_button("Conflict matrix (CSV)", pd.DataFrame(o["matrix"], index=[f"T{i + 1}" for i in range(len(o["tasks"]))],
                                                         columns=[f"T{i + 1}" for i in range(len(o["tasks"]))]).to_csv(),
                   file_name=f"order-{o['id']}-conflict.csv", mime="text/csv")

st.subheader("Run in this order")
flags = stream_flags(o["ordered_options"])
methods = st.multiselect("Methods", sorted(REGISTRY), default=["lora"],
                         help="One run per method, each on the stream's tasks in the adversarial order.")
seed = st.number_input("Seed", min_value=0, value=0, step=1)
st.code(f"cldash run --method {methods[0] if methods else 'lora'} --stream {o['stream']} --backbone {o['backbone']} "
        f"{flags} --seed {seed}", language="bash")
if st.button("Launch", type="primary", disabled=not methods):
    try:
        configs = [resolve({"method": m, "stream": o["stream"], "backbone": o["backbone"],
                            "stream_options": o["ordered_options"],
                            "backbone_options": o["config"].get("backbone_options", {}),
                            "targets": o["config"].get("targets", []), "seed": int(seed),
                            "name": f"{m} · {o['stream']} adversarial order #{o['id']} · seed {int(seed)}"}).to_dict()
                   for m in methods]
    except ConfigError as exc:
        st.error(str(exc))
        st.stop()
    # the same order, methods and seed launched twice is one set of runs (launch keys)
    ids = launch(store, configs, [f"order{o['id']}:{c['method']}:{c['seed']}" for c in configs],
                 group_key=f"order{o['id']}", names=[c["name"] or describe_run(RunConfig(**c)) for c in configs])
    set_selected(ids)
    st.success(f"Launched {', '.join(f'#{i}' for i in ids)} in the adversarial order.")
    st.page_link("pages/live.py", label="Watch them live", icon=":material/monitoring:")
