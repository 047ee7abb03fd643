"""An exported HTML handout in headless Chromium (Debian's package, through Playwright), opened as a file with
every network request refused: every figure renders (Plotly's SVG in each plot, cells in each matrix) and
nothing is asked of the network. No server: the handout is one file. The screenshot goes to the test's
temporary folder."""

import os
import shutil

import pytest

from test_report import three_runs

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

playwright = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


def test_the_handout_renders_every_figure_offline(tmp_path):
    from playwright.sync_api import sync_playwright

    from cldash.dashboard.report import write_handout

    path = tmp_path / "handout.html"
    write_handout(three_runs(tmp_path / "runs.db"), [1, 2, 3], path)
    asked, errors = [], []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", only_files)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(path.as_uri())
            page.wait_for_function("[...document.querySelectorAll('.plot')].every(d => d.querySelector('.main-svg'))",
                                   timeout=30_000)
            drawn = page.evaluate("""[...document.querySelectorAll('.plot')].map(d => ({
                svg: d.querySelectorAll('.main-svg').length,
                heatmap: d.querySelectorAll('.hm').length,
                cells: d.querySelectorAll('.hm image').length,
                texts: d.querySelectorAll('.hm ~ .texts text, g.text text, .textpoint text').length,
                bars: d.querySelectorAll('.bars .point').length,
                lines: d.querySelectorAll('.scatterlayer .js-line').length}))""")
            plots = page.locator(".plot").count()
            page.screenshot(path=str(tmp_path / "handout.png"))   # the top: title, runs, headline bars
        finally:
            browser.close()
    assert asked == [] and errors == []
    assert plots == len(drawn) == 8 and all(d["svg"] >= 1 for d in drawn)
    matrices = [d for d in drawn if d["heatmap"]]
    assert len(matrices) == 3 and all(d["cells"] >= 1 for d in matrices)   # each heatmap drew its cells
    assert drawn[0]["bars"] == 5 * 3                                         # 5 headline metrics x 3 runs
    assert drawn[5]["lines"] >= 3                                            # a loss curve per run
