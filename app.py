"""cldash dashboard: `streamlit run app.py`.

The entry point only sets up navigation over the files in pages/ and the shared sidebar; pages
read from the store and render (they never train).
"""

import streamlit as st

st.set_page_config(page_title="cldash", page_icon="📉", layout="wide")

pages = [st.Page("pages/runs.py", title="Runs", icon="📋", default=True)]
st.navigation(pages).run()
