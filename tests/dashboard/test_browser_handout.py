"""An exported HTML handout in headless Chromium (Debian's package, through Playwright), opened as a file with
every network request refused: every figure renders (Plotly's SVG in each plot, cells in each matrix) and
nothing is asked of the network. No server: the handout is one file.

At a projector's 1024×768 and at 1280×800 it is read from the DOM: no horizontal scrollbar on the page, no chart
text and no page text (formulas' scripts included) under 14 px, no chart text box outside its chart or on another
of the same chart, and every formula (MathML) drawn with a size. Screenshots go to $CLDASH_SCREENSHOTS when set,
else to the test's temporary folder."""

import os
import shutil
from pathlib import Path

import pytest

from test_report import three_runs

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORTS = ((1024, 768), (1280, 800))
MIN_FONT_PX = 14

playwright = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

# Every non-empty, displayed SVG text of each chart: its text, computed font size and box. Plotly draws a chart
# in two stacked SVGs (the plot and its titles, legend and annotations above); the hover layer holds no text
# until a pointer rests on the chart.
CHART_TEXTS = """[...document.querySelectorAll('.plot')].map(d => {
    const box = d.getBoundingClientRect();
    const texts = [...d.querySelectorAll('svg text')].filter(t => t.textContent.trim() && t.getClientRects().length
        && getComputedStyle(t).display !== 'none' && getComputedStyle(t).visibility !== 'hidden'
        && Number(getComputedStyle(t).opacity) > 0).map(t => {
        const r = t.getBoundingClientRect();
        return {text: t.textContent.trim(), size: parseFloat(getComputedStyle(t).fontSize),
                left: r.left, top: r.top, right: r.right, bottom: r.bottom};
    });
    return {id: d.id, box: {left: box.left, top: box.top, right: box.right, bottom: box.bottom}, texts};
})"""

PAGE = """({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
    maths: [...document.querySelectorAll('math')].map(m => { const r = m.getBoundingClientRect();
        return {w: r.width, h: r.height, text: m.textContent}; }),
    small: (() => { const out = [], walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let n = walk.nextNode(); n; n = walk.nextNode()) {   // page text, formulas' scripts too; charts apart
            const e = n.parentElement;
            if (!n.textContent.trim() || e.closest('svg, script, style') || !e.getClientRects().length) continue;
            const size = parseFloat(getComputedStyle(e).fontSize);
            if (size < 14) out.push(`${e.tagName} ${n.textContent.trim().slice(0, 40)} ${size}px`);
        }
        return out; })(),
    table: (() => { const t = document.querySelector('table.metrics'), w = t.closest('.scroll');
        return {table: t.getBoundingClientRect().right, box: w.getBoundingClientRect().right,
                overflow: getComputedStyle(w).overflowX}; })()})"""


def _shots(tmp_path) -> Path:
    folder = Path(os.environ.get("CLDASH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _overlap(a, b, slack=1.0) -> bool:
    return min(a["right"], b["right"]) - max(a["left"], b["left"]) > slack and \
        min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack


def _problems(charts) -> list[str]:
    """What a class could not read, chart by chart: small text, text outside its chart, text on text."""
    out = []
    for c in charts:
        box, texts = c["box"], c["texts"]
        for t in texts:
            if t["size"] < MIN_FONT_PX:
                out.append(f"{c['id']}: {t['text']!r} is {t['size']} px")
            if t["left"] < box["left"] - 1 or t["right"] > box["right"] + 1 or t["top"] < box["top"] - 1 \
                    or t["bottom"] > box["bottom"] + 1:
                out.append(f"{c['id']}: {t['text']!r} runs outside its chart ({t} in {box})")
        for i, a in enumerate(texts):
            out += [f"{c['id']}: {a['text']!r} overlaps {b['text']!r}" for b in texts[i + 1:] if _overlap(a, b)]
    return out


def test_the_handout_renders_every_figure_offline_and_reads_on_a_projector(tmp_path):
    from playwright.sync_api import sync_playwright

    from cldash.dashboard.report import write_handout
    from cldash.measures.metrics import METRICS

    path = tmp_path / "handout.html"
    write_handout(three_runs(tmp_path / "runs.db"), [1, 2, 3], path)
    shots = _shots(tmp_path)
    asked, errors, seen = [], [], {}

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
            for width, height in VIEWPORTS:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.route("**/*", only_files)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(path.as_uri())
                page.wait_for_function(
                    "[...document.querySelectorAll('.plot')].every(d => d.querySelector('.main-svg'))", timeout=30_000)
                page.wait_for_timeout(300)   # a responsive plot redraws once at its div's final width
                drawn = page.evaluate("""[...document.querySelectorAll('.plot')].map(d => ({
                    svg: d.querySelectorAll('.main-svg').length,
                    heatmap: d.querySelectorAll('.hm').length,
                    cells: d.querySelectorAll('.hm image').length,
                    bars: d.querySelectorAll('.bars .point').length,
                    lines: d.querySelectorAll('.scatterlayer .js-line').length}))""")
                seen[width] = (drawn, page.evaluate(CHART_TEXTS), page.evaluate(PAGE))
                page.screenshot(path=str(shots / f"handout-{width}x{height}.png"))          # the top
                page.screenshot(path=str(shots / f"handout-{width}x{height}-full.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert asked == [] and errors == []
    for width, (drawn, charts, whole) in seen.items():
        assert len(drawn) == 8 and all(d["svg"] >= 1 for d in drawn)
        matrices = [d for d in drawn if d["heatmap"]]
        assert len(matrices) == 3 and all(d["cells"] >= 1 for d in matrices)   # each heatmap drew its cells
        assert drawn[0]["bars"] == 5 * 3                                         # 5 headline metrics x 3 runs
        assert drawn[5]["lines"] >= 3                                            # a loss curve per run
        assert whole["scroll"] <= whole["client"], f"the page scrolls sideways at {width} px"
        assert whole["small"] == [], width   # no page text under 14 px either (a closed <details> is not drawn)
        assert _problems(charts) == [], width
        # the headline bars name every run in full, on the chart itself
        assert {"#1 LoRA r=4", "#2 full FT"} <= {t["text"] for t in charts[0]["texts"]}
        assert len(whole["maths"]) >= len(METRICS) and all(m["w"] > 0 and m["h"] > 0 for m in whole["maths"])
        table = whole["table"]   # the metrics table scrolls inside its own box, never the page
        assert table["overflow"] == "auto" and table["box"] <= whole["client"]
