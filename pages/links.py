"""The state a link carries to a page, read once on arrival.

A lesson step's link (pages/lessons.py, `Step.link_state`) opens its page on a run, an update kind, a module and the
shape measures it names, scrolled to a section: ``?runs=1,2&run=2&kind=task&module=…&section=shape-measures``. The
page calls `arrival()` first: it takes these parameters out of the URL, so that the next rerun (the user picks
another run) keeps the user's choice, and a second click on the link applies them again. `preset` puts a value into a
widget's session state before the widget is drawn (the widget then has no default of its own, which Streamlit would
warn about), and `header` draws a section header with a stable anchor and scrolls to it when the link named it.
"""

from __future__ import annotations

import json

import streamlit as st

LINK_PARAMS = ("run", "kind", "module", "measures", "section")

# Scrolls the header with id ANCHOR to the top of the view, below Streamlit's toolbar, once it exists. Charts above it
# are drawn after the page's script has run, and each one pushes the header down: the script puts it back in place
# until it has stayed there for a second (or after 15 s), and stops at once when the user scrolls, types or clicks.
# A URL fragment (#metrics) scrolls only on a page load, never after st.page_link's navigation within the app.
SCROLL_JS = """<script>
(() => {
  const anchor = ANCHOR, until = Date.now() + 15000;
  let quit = false, still = 0;
  for (const ev of ["wheel", "touchstart", "keydown", "mousedown"]) {
    window.addEventListener(ev, () => { quit = true; }, {once: true, capture: true, passive: true});
  }
  const tick = () => {
    if (quit || Date.now() > until) return;
    const el = document.getElementById(anchor);
    if (el) {
      el.style.scrollMarginTop = "4.5rem";
      const top = el.getBoundingClientRect().top;
      if (Math.abs(top - parseFloat(getComputedStyle(el).scrollMarginTop)) > 2) {
        el.scrollIntoView({block: "start"});
        still = 0;
      } else if (++still >= 10) {
        return;
      }
    }
    setTimeout(tick, 100);
  };
  tick();
})();
</script>"""


def arrival() -> dict[str, str]:
    """The link state this page was opened with ({} on every later rerun): the LINK_PARAMS in the URL, taken out
    of it."""
    params = st.query_params
    state = {k: params[k] for k in LINK_PARAMS if k in params}
    for k in state:
        del params[k]
    return state


def wanted_run(state: dict[str, str]) -> int | None:
    """The run id a link named, or None (none named, or not a number)."""
    text = state.get("run", "")
    return int(text) if text.isdigit() else None


def wanted_list(state: dict[str, str], key: str) -> list[str] | None:
    """A comma-separated list a link named ("measures"), or None."""
    return [t for t in state[key].split(",") if t] if state.get(key) else None


def preset(key: str, options, default, wanted=None) -> None:
    """Before the selectbox or multiselect `key` is drawn: `wanted` (the link's value) when it is one of
    `options` (for a multiselect: a list of them), else the user's earlier choice while it still is one, else
    `default`."""
    options = list(options)

    def valid(value) -> bool:
        if isinstance(value, list):
            return all(v in options for v in value)
        return value in options

    if wanted is not None and valid(wanted):
        st.session_state[key] = wanted
    elif key not in st.session_state or not valid(st.session_state[key]):
        st.session_state[key] = default


def header(text: str, anchor: str, state: dict[str, str]) -> None:
    """A section header with a stable anchor (a link's ``section=``, a URL's #anchor); the view scrolls to it when
    the link that opened the page named it."""
    st.subheader(text, anchor=anchor)
    if state.get("section") == anchor:
        st.html(SCROLL_JS.replace("ANCHOR", json.dumps(anchor)), unsafe_allow_javascript=True)
