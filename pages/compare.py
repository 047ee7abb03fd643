"""Compare: accuracy matrices side by side (one colour scale) and as a difference, every metric
with its formula at hand, mean and spread over seeds, and accuracy against forgetting."""

import streamlit as st

from cldash.figures import accuracy_matrix_figure, matrix_difference_figure, pareto_figure
from cldash.metrics import METRICS
from cldash.tables import matrix_table, metric_help
from cldash.views import compare_data, run_label
from pages.shared import download, get_store, plot, runs_for_page, through_app

through_app()

store = get_store()
st.title("Compare")
runs = runs_for_page(store)
if not runs:
    st.info("No runs yet: launch some on the Launch page, or select runs on the Runs page.")
    st.stop()
data = compare_data(store, [r["id"] for r in runs])
labels = {r["id"]: run_label(r) for r in data.runs}

st.subheader("Accuracy matrices")
st.caption("R[i][j]: score on task j after training through task i; row 'before' is the pre-trained model, "
           "the last column the general (pre-training) task. One colour scale, 0 to 1, for every run.")
per_row = st.select_slider("matrices per row", options=[1, 2, 3, 4], value=min(3, len(data.runs)))
for start in range(0, len(data.runs), per_row):
    cols = st.columns(per_row)
    for col, run in zip(cols, data.runs[start:start + per_row]):
        with col:
            m = data.matrices[run["id"]]
            if m["rows"]:
                plot(accuracy_matrix_figure(m, title=labels[run["id"]], show_scale=False), key=f"cmp-R-{run['id']}")
                download(matrix_table(m), f"run-{run['id']}-matrix", "R as CSV", key=f"dl-R-{run['id']}")
            else:
                st.caption(f"{labels[run['id']]}: nothing evaluated yet")

if len(data.runs) >= 2:
    st.subheader("Difference")
    c1, c2 = st.columns(2)
    ids = [r["id"] for r in data.runs]
    a = c1.selectbox("run A", ids, index=0, format_func=labels.get)
    b = c2.selectbox("run B", ids, index=1, format_func=labels.get)
    ma, mb = data.matrices[a], data.matrices[b]
    if ma["tasks"] != mb["tasks"]:
        st.warning("These two runs have different task lists; pick two runs of the same stream.")
    elif ma["rows"] and mb["rows"]:
        plot(matrix_difference_figure(ma, mb, title="A − B (blue: A scores higher)"), key="cmp-diff")

st.subheader("Metrics")
helps = metric_help()
config = {m.key: st.column_config.NumberColumn(m.label, help=helps[m.key], format="%.3f") for m in METRICS}
table = data.metrics.drop(columns=["setting_key", "setting"])
st.dataframe(table, hide_index=True, column_config=config)
download(table, "metrics", key="dl-metrics")
with st.expander("How each metric is computed"):
    st.markdown("\n".join(f"- **{m.label}** = `{m.formula}` — uses {m.cells}." for m in METRICS))

if (data.by_setting["seeds"] > 1).any():
    st.subheader("Mean ± standard deviation over seeds")
    shown = data.by_setting.copy()
    for m in METRICS:
        shown[m.key] = [f"{mu:.3f} ± {sd:.3f}" if sd == sd else f"{mu:.3f}"
                        for mu, sd in zip(data.by_setting[m.key], data.by_setting[f"{m.key}_std"])]
    st.dataframe(shown[["setting", "seeds", *[m.key for m in METRICS]]], hide_index=True,
                 column_config={m.key: st.column_config.TextColumn(m.label, help=helps[m.key]) for m in METRICS})
    download(data.by_setting, "metrics-over-seeds", key="dl-seeds")

st.subheader("Accuracy against forgetting")
grouped = st.toggle("one point per setting (mean over seeds, bars: standard deviation)",
                    value=bool((data.by_setting["seeds"] > 1).any()))
if grouped:
    fig = pareto_figure(data.by_setting.assign(label=data.by_setting["setting"]), x_err="forgetting_std",
                        y_err="acc_std")
else:
    fig = pareto_figure(data.metrics.assign(label=data.metrics["setting"]))
plot(fig, key="cmp-pareto")
