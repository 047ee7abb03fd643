"""cldash dashboard: `streamlit run app.py`.

The entry point sets up navigation over the files in pages/ and the shared sidebar (store,
active runs, concurrency limit, selected runs); pages read from the store and render. Nothing
here trains: runs are separate processes started by cldash.runs.launch.
"""

import streamlit as st

from pages.shared import page_style, sidebar

st.set_page_config(page_title="cldash", page_icon=":material/trending_down:", layout="wide")



def runs_address() -> None:
    """/runs: the Runs page lives at the root (Streamlit serves the default page only there), so this address,
    which people type and links carry, opens it rather than "Page not found"."""
    st.switch_page("pages/runs.py")


PAGES = [
    # served at the root; its own pathname (reserved all the same) is not "runs", which the redirect below takes
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:", default=True, url_path="home"),
    st.Page(runs_address, title="Runs", url_path="runs", visibility="hidden"),
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
page_style()
sidebar()
page.run()
