"""cldash dashboard: `streamlit run app.py`.

The entry point sets up navigation over the files in pages/ and the shared sidebar (store,
active runs, concurrency limit, selected runs); pages read from the store and render. Nothing
here trains: runs are separate processes started by cldash.runs.launch.
"""

import streamlit as st

from pages.shared import sidebar

st.set_page_config(page_title="cldash", page_icon=":material/trending_down:", layout="wide")

PAGES = [
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("pages/lessons.py", title="Lessons", icon=":material/school:"),
    st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:"),
    st.Page("pages/live.py", title="Live", icon=":material/monitoring:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/claims.py", title="Claims", icon=":material/fact_check:"),
    st.Page("pages/spectra.py", title="Spectra", icon=":material/ssid_chart:"),
    st.Page("pages/ranks.py", title="Ranks", icon=":material/stacked_line_chart:"),
    st.Page("pages/orders.py", title="Orders", icon=":material/shuffle:"),
    st.Page("pages/methods.py", title="Methods", icon=":material/menu_book:"),
]
page = st.navigation(PAGES)
sidebar()
page.run()
