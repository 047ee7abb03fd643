"""Links that carry a page's state (pages/links.py), under AppTest on the seeded store: a page opened with a lesson
step's query parameters presets its widgets once, on arrival, and the user can change them afterwards; a step's
section is a header the page draws with that anchor, and only the named one scrolls. The real browser, with the
scroll itself, is tests/pages/test_browser_lesson.py."""

import pytest
from streamlit.testing.v1 import AppTest

from cldash.analysis import lessons as L

from test_app import ROOT, v2_navigation

pytestmark = pytest.mark.floors


def opened(db, monkeypatch, page: str, **params) -> AppTest:
    """`page` opened as a link opens it: its query parameters in the URL (they stay there on the welcome page, which
    reads none of them), then the page run through app.py."""
    monkeypatch.setenv("CLDASH_DB", str(db))
    v2_navigation(monkeypatch)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def select(at, label: str):
    return next(s for s in at.selectbox if s.label == label)


def measures(at):
    return next(m for m in at.multiselect if m.label == "measures")


def scrolls(at) -> list[str]:
    """The anchors the page's scripts scroll to (pages/links.SCROLL_JS, one per named section)."""
    return [h.proto.body.split("const anchor = ")[1].split(",")[0].strip('"') for h in at.get("html")
            if "scrollIntoView" in h.proto.body]


def test_spectra_opens_on_the_linked_run_kind_module_and_measures_and_the_user_changes_them(seeded_store, monkeypatch):
    modules = list(seeded_store.modules(1).name)
    at = opened(seeded_store.display, monkeypatch, "pages/spectra.py", runs="1,2", run="1", kind="task",
                module=modules[3], measures="w0_energy,frobenius", section="shape-measures")
    assert select(at, "run").value == 1 and select(at, "update").value == "task"
    assert select(at, "module").value == modules[3]
    assert measures(at).value == ["w0_energy", "frobenius"]
    assert scrolls(at) == ["shape-measures"]
    assert "kind" not in at.query_params and at.query_params["runs"] == "1,2"   # read once; the selection stays
    # the user's changes stand on the next reruns: the link is not applied again
    select(at, "run").select(2).run()
    select(at, "update").select("cumulative").run()
    assert select(at, "run").value == 2 and select(at, "update").value == "cumulative"
    assert select(at, "module").value == modules[3]      # run 2 logs the same module: the user's choice stays
    measures(at).unselect("frobenius").run()
    assert measures(at).value == ["w0_energy"] and scrolls(at) == []
    assert not at.exception


def test_spectra_without_a_link_or_with_a_stale_one_keeps_its_defaults(seeded_store, monkeypatch):
    at = opened(seeded_store.display, monkeypatch, "pages/spectra.py", runs="1,2")
    first = list(seeded_store.modules(2).name)[0]
    assert select(at, "run").value == 2 and select(at, "update").value == "cumulative"
    assert select(at, "module").value == first and scrolls(at) == []
    # a run that is not shown, a kind no run logs, a module of no run: the page's own defaults, no error
    at = opened(seeded_store.display, monkeypatch, "pages/spectra.py", runs="1,2", run="99", kind="sideways",
                module="nowhere", measures="erank,nonsense")
    assert select(at, "run").value == 2 and select(at, "update").value == "cumulative"
    assert select(at, "module").value == first
    assert measures(at).value == ["erank", "top1_energy", "stable_rank", "frobenius"]
    # the short run names fit the select at 1024 px; the seed still tells two seeds of one setting apart
    assert select(at, "run").options == ["#1 LoRA r=8 · seed 0", "#2 full FT · seed 0"]


def test_ranks_opens_on_the_linked_run_and_the_user_picks_another(seeded_store, monkeypatch):
    at = opened(seeded_store.display, monkeypatch, "pages/ranks.py", runs="1,2", run="1")
    assert select(at, "run").value == 1
    select(at, "run").select(2).run()
    assert select(at, "run").value == 2 and not at.exception


@pytest.mark.parametrize("page", sorted(L.SECTIONS))
def test_every_section_a_step_may_name_is_a_header_with_that_anchor_and_only_the_named_one_scrolls(
        seeded_store, monkeypatch, page):
    sections = L.SECTIONS[page]
    for anchor in sections:
        at = opened(seeded_store.display, monkeypatch, L.PAGES[page], runs="1,2", section=anchor)
        headers = {h.proto.anchor: h.value for h in at.subheader}
        assert headers[anchor] == sections[anchor]
        assert scrolls(at) == [anchor]
    at.run()       # a rerun (a widget changed): the link was read, nothing scrolls again
    assert scrolls(at) == []
