"""One lesson end to end in a real headless Chromium at 1024x768 (a projector), as a teacher would do it: open the
dashboard, go to Lessons, pick "Spectral imbalance", set a tiny length, launch, wait until both runs have finished,
then follow each step of the reading: its link opens the page it names on the run, update kind, module and measures
the step names (read from the widgets in the DOM), with the step's section header in view, and the class can change
the widgets afterwards. The server and the browser are those of tests/pages/test_browser.py. Screenshots go to
$CLDASH_SCREENSHOTS when it is set, else to the test's temporary folder."""

import os
import re
from pathlib import Path

import pytest

from cldash.analysis import lessons as L
from cldash.dashboard.labels import MEASURE_LABELS

from test_browser import CHROMIUM, server  # noqa: F401  (server: the served dashboard, a pytest fixture)

pytestmark = pytest.mark.browser
ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# where an element's top is, and the viewport's height: a section "in view" starts between 0 and the height
TOP = "e => [e.getBoundingClientRect().top, window.innerHeight]"
IN_VIEW = """(sel) => { const e = document.querySelector(sel);
                        return !!e && e.getBoundingClientRect().top >= 0 &&
                               e.getBoundingClientRect().top < window.innerHeight; }"""


def select_value(page, label: str) -> str:
    """The text a select box shows (its combobox input's value), found by its label."""
    return page.get_by_role("combobox", name=label, exact=True).input_value()


def fits(page, label: str) -> bool:
    """Whether a select box shows its whole value (its input is not scrolled: "… · seed" was cut at 1024 px)."""
    return page.get_by_role("combobox", name=label, exact=True).evaluate("e => e.scrollWidth <= e.clientWidth")


def check_step(page, step, run_ids: dict[str, int], shot: Path) -> None:
    """The page a step's link opened shows the state the step names, and its section (else its title) in view."""
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=step.page, exact=True)).to_be_attached(timeout=30_000)
    if step.run:
        expect(page.get_by_role("combobox", name="run", exact=True)).to_have_value(
            re.compile(rf"^#{run_ids[step.run]} "), timeout=60_000)
    if step.kind:
        assert select_value(page, "update") == step.kind
    if step.module:
        assert select_value(page, "module") == step.module
    if step.measures:
        chosen = page.locator("[data-testid=stMultiSelect]").filter(has_text="measures").inner_text()
        assert all(MEASURE_LABELS[m] in chosen for m in step.measures), chosen
    where = f"#{step.section}" if step.section else "h1"
    page.wait_for_function(IN_VIEW, arg=where, timeout=30_000)
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
    page.wait_for_timeout(2000)            # the charts above have drawn by now: the header is still in view
    top, height = page.locator(where).first.evaluate(TOP)
    assert 0 <= top < height, (step.section, top, height)
    page.mouse.move(0, 0)
    page.screenshot(path=str(shot))


def test_a_lesson_from_the_lessons_page_to_its_first_chart(server):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    from cldash.store import Store

    url, tmp = server
    shots = Path(os.environ.get("CLDASH_SCREENSHOTS") or tmp)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.goto(url)
        expect(page.get_by_text("Welcome to cldash")).to_be_visible(timeout=60_000)
        expect(page.get_by_role("link", name="Launch page")).to_be_visible()    # a link, not bold text
        page.screenshot(path=str(shots / "lesson-0-welcome.png"), full_page=True)
        page.get_by_role("link", name="Lessons").click()
        expect(page.get_by_role("heading", name="Lessons")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(shots / "lesson-0-lessons.png"), full_page=True)
        page.locator("[data-testid=stSelectbox]").first.click()          # the lesson select box
        page.keyboard.type("Spectral")
        page.keyboard.press("Enter")
        expect(page.get_by_text("Is its energy spread over its r directions").first).to_be_visible(timeout=30_000)
        steps = page.get_by_role("spinbutton", name="steps per task")
        steps.fill("2")
        steps.press("Enter")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Launch this lesson").click()
        page.mouse.move(0, 0)                                             # no tooltip over the screenshots
        expect(page.get_by_text("Queued runs #1, #2")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(shots / "lesson-1-lesson-launched.png"), full_page=True)
        expect(page.get_by_text("2 of 2 finished")).to_be_visible(timeout=120_000)
        page.screenshot(path=str(shots / "lesson-2-lesson-finished.png"), full_page=True)
        first = page.get_by_role("link", name="Open Spectra").first
        first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "lesson-2-reading.png"))

        lesson, run_ids = L.get_lesson("spectra"), {"LoRA r=16": 1, "EBLoRA": 2}
        for n, step in enumerate(lesson.reading, start=1):
            if n > 1:    # back to the lesson for the next step, as a class does: the same lesson, the same length
                page.get_by_role("link", name="Lessons", exact=True).click()
                expect(page.get_by_text("2 of 2 finished")).to_be_visible(timeout=30_000)
            page.get_by_role("link", name="Open ").nth(n - 1).click()
            check_step(page, step, run_ids, shots / f"lesson-3-step-{n}-{step.page.lower()}.png")
            if n == 1:
                plot = page.locator(".js-plotly-plot").first
                expect(plot.get_by_text("singular values over steps").first).to_be_attached(timeout=30_000)
                assert "runs=1%2C2" in page.url or "runs=1,2" in page.url
                # the link preset the widgets once: the class can pick another update kind, and it stays
                page.get_by_role("combobox", name="update", exact=True).click()
                page.get_by_role("option", name="cumulative").click()
                expect(plot.get_by_text("singular values over steps (cumulative)").first).to_be_attached(
                    timeout=30_000)
                assert select_value(page, "update") == "cumulative" and select_value(page, "run").startswith("#1 ")
                # each select shows its whole value ("#1 LoRA r=16 merge · seed 0", "cumulative", the module) at
                # 1024 and at 1280 px: the long run label lost its end ("… · seed"), the update "cumulati"
                for size in ({"width": 1280, "height": 800}, {"width": 1024, "height": 768}):
                    page.set_viewport_size(size)
                    page.wait_for_timeout(500)     # the columns follow the new width
                    assert [label for label in ("run", "update", "module") if not fits(page, label)] == [], size
        browser.close()
    runs = Store(str(tmp / "browser.db")).runs()
    assert [(r["method"], r["status"], r["config"]["steps_per_task"]) for r in runs] == \
        [("lora", "finished", 2), ("eblora", "finished", 2)]
    assert {r["group_key"] for r in runs} == {"lesson:spectra"}
    assert (shots / "lesson-3-step-1-spectra.png").stat().st_size > 10_000
