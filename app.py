"""cldash dashboard: `streamlit run app.py`.

The entry point sets up navigation over the files in pages/ and the shared sidebar (store,
active runs, concurrency limit, selected runs); pages read from the store and render. Nothing
here trains: runs are separate processes started by cldash.launch.
"""

import streamlit as st

from pages.shared import sidebar

st.set_page_config(page_title="cldash", page_icon="📉", layout="wide")

PAGES = [
    st.Page("pages/runs.py", title="Runs", icon="📋", default=True),
    st.Page("pages/lessons.py", title="Lessons", icon=":material/school:"),
    st.Page("pages/launch.py", title="Launch", icon="🚀"),
    st.Page("pages/live.py", title="Live", icon="📈"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
    st.Page("pages/claims.py", title="Claims", icon=":material/fact_check:"),
    st.Page("pages/spectra.py", title="Spectra", icon="🌈"),
    st.Page("pages/ranks.py", title="Ranks", icon="🪜"),
    st.Page("pages/orders.py", title="Orders", icon="🔀"),
    st.Page("pages/methods.py", title="Methods", icon="📚"),
]
page = st.navigation(PAGES)
sidebar()
page.run()
