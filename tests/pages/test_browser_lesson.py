"""One lesson end to end in a real headless Chromium, as a teacher would do it: open the dashboard, go to Lessons,
pick "Spectral imbalance", set a tiny length, launch, wait until both runs have finished, follow the reading's first
link and check that the chart it names (Spectra: singular values over steps) renders for one of the lesson's runs.
The server and the browser are those of tests/pages/test_browser.py. Screenshots go to the test's temporary folder."""

import pytest

from test_browser import CHROMIUM, server  # noqa: F401  (server: the served dashboard, a pytest fixture)

pytestmark = pytest.mark.browser
ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def test_a_lesson_from_the_lessons_page_to_its_first_chart(server):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    from cldash.store import Store

    url, tmp = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        expect(page.get_by_text("Welcome to cldash")).to_be_visible(timeout=60_000)
        expect(page.get_by_role("link", name="Launch page")).to_be_visible()    # a link, not bold text
        page.screenshot(path=str(tmp / "0-welcome.png"), full_page=True)
        page.get_by_role("link", name="Lessons").click()
        expect(page.get_by_role("heading", name="Lessons")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp / "0-lessons.png"), full_page=True)
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
        page.screenshot(path=str(tmp / "1-lesson-launched.png"), full_page=True)
        expect(page.get_by_text("2 of 2 finished")).to_be_visible(timeout=120_000)
        page.screenshot(path=str(tmp / "2-lesson-finished.png"), full_page=True)
        first = page.get_by_role("link", name="Open Spectra").first
        first.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp / "2-reading.png"))

        first.click()
        expect(page.get_by_role("heading", name="Spectra")).to_be_visible(timeout=30_000)
        plot = page.locator(".js-plotly-plot").first
        expect(plot).to_be_visible(timeout=60_000)
        expect(plot.get_by_text("singular values over steps").first).to_be_attached(timeout=30_000)
        expect(page.get_by_text("#2 eblora").first).to_be_visible()     # the lesson's last run, selected
        assert "runs=1%2C2" in page.url or "runs=1,2" in page.url
        page.screenshot(path=str(tmp / "3-spectra.png"), full_page=True)
        browser.close()
    runs = Store(str(tmp / "browser.db")).runs()
    assert [(r["method"], r["status"], r["config"]["steps_per_task"]) for r in runs] == \
        [("lora", "finished", 2), ("eblora", "finished", 2)]
    assert {r["group_key"] for r in runs} == {"lesson:spectra"}
    assert (tmp / "3-spectra.png").stat().st_size > 10_000
