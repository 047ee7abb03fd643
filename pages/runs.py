"""Runs: every stored run with its status, progress and key metrics."""

import streamlit as st

from cldash.errors import UserError
from cldash.launch import reconcile
from cldash.store import Store, default_db
from cldash.tables import runs_table

st.title("Runs")
db = st.sidebar.text_input("Run store (path or SQLAlchemy URL)", value=default_db())
try:
    store = Store(db)
except UserError as exc:
    st.error(str(exc))
    st.stop()
reconcile(store)
st.sidebar.caption(f"store: {store.display}")
table = runs_table(store.runs())
if table.empty:
    st.info("No runs yet. Start one from a terminal: `cldash run --method lora --stream digits-rotate --seed 0`.")
else:
    st.dataframe(table, hide_index=True, column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
    })
