"""Every page readable on a projector: headless Chromium at 1024x768 on a fresh store, after the quick demo and a
lesson have finished, visits each page and checks it there and at 1280x800 from the DOM (one helper, PAGE_CHECK,
for every page):

- no visible page text under 14 px (each visible text node's element, its computed font size);
- no text of a Plotly chart under 14 px, no two text boxes of one chart intersecting (titles, axis titles, tick
  labels, legend items, annotations), no chart text outside its chart's visible area;
- no horizontal scrollbar (the main block's and the document's scrollWidth within their clientWidth).

An order is measured as well (Orders' Measure button), so that Orders shows its conflict matrix and table; on
Live a click on the overview's first row draws that run's charts, checked as well (pick_a_run). All
violations also go to projector-violations.json beside the screenshots.

Every violation is named (page, element, sizes) in the assertion message. A screenshot of every page goes to
$CLDASH_SCREENSHOTS when it is set, else to the test's temporary folder. The server and browser are those of
tests/pages/test_browser.py."""

import json
import os
import re
import time
from pathlib import Path

import pytest

from test_browser import CHROMIUM, serve

pytestmark = pytest.mark.browser
ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1024, "height": 768}
WIDE = {"width": 1280, "height": 800}   # the other common projector: every page is checked there as well
MIN_PX = 14
# page -> (address, its heading)
PAGES = {"Runs": ("", "Runs"), "Lessons": ("lessons", "Lessons"), "Launch": ("launch", "Launch runs"),
         "Live": ("live", None), "Compare": ("compare", None), "Claims": ("claims", None),
         "Spectra": ("spectra", "Spectra"), "Ranks": ("ranks", None), "Orders": ("orders", None),
         "Methods": ("methods", "Methods")}
# Text that the page's CSS cannot make 14 px, each with its reason:
EXEMPT = {
    # KaTeX draws sub- and superscripts at 0.7 (and 0.5) of the formula's size by design; the formula itself is
    # 1.3em (about 21 px), so its scripts are about 14.5 px and only second-level scripts fall below.
    ".katex .mtight": "second-level sub/superscripts of a typeset formula",
    # the hidden MathML copy of a formula for screen readers (clipped to 1 px)
    ".katex-mathml": "a formula's hidden MathML for screen readers",
}
PAGE_CHECK = """([minPx, exempt]) => {
  const out = {text: [], charts: [], scroll: []};
  const name = (el) => {
    const id = el.getAttribute('data-testid') || (typeof el.className === 'string' && el.className) ||
      (el.className && el.className.baseVal) || '';
    return `${el.tagName.toLowerCase()}${id ? '.' + String(id).trim().split(/\\s+/).join('.') : ''}`;
  };
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 1 && r.height > 1 && el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
  };
  // page text outside charts
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  while (walker.nextNode()) {
    const node = walker.currentNode, text = node.textContent.replace(/[\\s\\u200b]+/g, ' ').trim();
    const el = node.parentElement;
    if (!text || !el || seen.has(el)) continue;
    seen.add(el);
    if (el.closest('svg') || el.closest('style, script, noscript')) continue;
    if (exempt.some((sel) => el.closest(sel))) continue;
    if (!visible(el)) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (size < minPx - 0.05) out.text.push(`${size}px ${name(el)} "${text.slice(0, 50)}"`);
  }
  // every Plotly chart: its text boxes
  document.querySelectorAll('.js-plotly-plot').forEach((plot, k) => {
    const area = plot.getBoundingClientRect();
    const title = (plot.querySelector('.gtitle') || {}).textContent || `chart ${k + 1}`;
    const boxes = [];
    plot.querySelectorAll('.main-svg text').forEach((t) => {
      const text = t.textContent.trim();
      if (!text || t.closest('.hoverlayer') || !visible(t)) return;
      const r = t.getBoundingClientRect(), size = parseFloat(getComputedStyle(t).fontSize);
      const cls = t.getAttribute('class') || (t.parentElement && t.parentElement.getAttribute('class')) || 'text';
      const where = `[${title.slice(0, 40)}] ${cls} "${text.slice(0, 30)}"`;
      if (size < minPx - 0.05) out.charts.push(`${size}px ${where}`);
      if (r.left < area.left - 1 || r.right > area.right + 1 || r.top < area.top - 1 || r.bottom > area.bottom + 1)
        out.charts.push(`outside its chart ${where}: box ${r.left|0}-${r.right|0} x ${r.top|0}-${r.bottom|0}, ` +
                        `chart ${area.left|0}-${area.right|0} x ${area.top|0}-${area.bottom|0}`);
      boxes.push({r, where});
    });
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].r, b = boxes[j].r;   // 2 px of slack: the boxes of neighbouring glyphs touch
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 2 && h > 2) out.charts.push(`overlap ${boxes[i].where} with ${boxes[j].where} (${w|0}x${h|0} px)`);
    }
  });
  // horizontal scrolling
  const main = document.querySelector('[data-testid="stMain"]');
  for (const el of [main, document.scrollingElement]) {
    if (el && el.scrollWidth > el.clientWidth + 1)
      out.scroll.push(`${name(el)} scrolls sideways: scrollWidth ${el.scrollWidth} > clientWidth ${el.clientWidth}`);
  }
  return out;
}"""


def settle(page, timeout: float = 60) -> None:
    """Until the script has stopped running (Streamlit's status widget gone) and stayed so for a moment, then
    a little longer for Plotly to lay its charts out."""
    deadline, calm = time.time() + timeout, 0
    while time.time() < deadline and calm < 3:
        running = page.locator('[data-testid="stStatusWidget"]').count()
        calm = 0 if running else calm + 1
        page.wait_for_timeout(400)
    page.wait_for_timeout(1500)


def wait_finished(db: Path, count: int, timeout: float) -> None:
    from cldash.store import Store

    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = Store(str(db)).runs()
        if len(runs) >= count and all(r["status"] == "finished" for r in runs):
            return
        bad = [r for r in runs if r["status"] in ("failed", "cancelled", "interrupted")]
        assert not bad, f"runs did not finish: {[(r['id'], r['status'], r.get('error')) for r in bad]}"
        time.sleep(2)
    pytest.fail(f"runs still not finished after {timeout:.0f} s: {[(r['id'], r['status']) for r in runs]}")


def wait_measured(db: Path, timeout: float) -> None:
    from cldash.store import Store

    deadline = time.time() + timeout
    while time.time() < deadline:
        if Store(str(db)).orders():
            return
        time.sleep(2)
    pytest.fail(f"no order measured after {timeout:.0f} s")


def pick_a_run(page, shots: Path, results: dict) -> None:
    """Live draws one run's charts below its overview table: a click on the first row's marker (the table is a
    canvas: the row's place, one row height under the header) draws the first run's instead of the newest's;
    its checks join Live's, its screenshot is projector-live-picked.png."""
    from playwright.sync_api import expect

    table = page.locator('[data-testid="stDataFrame"]').first
    box = table.bounding_box()
    heading = page.locator("h3").first
    before = heading.inner_text()
    page.mouse.click(box["x"] + 14, box["y"] + 35 + 17)   # 35 px rows (Streamlit's default), the marker at the left
    expect(page.locator("h3").first).to_have_text(re.compile(r"^#1 "), timeout=30_000)
    assert not before.startswith("#1 "), before           # the default was another run: the click changed it
    settle(page)
    page.mouse.move(0, 0)
    page.screenshot(path=str(shots / "projector-live-picked.png"))
    picked = page.evaluate(PAGE_CHECK, [MIN_PX, list(EXEMPT)])
    for check, found in picked.items():
        results["Live"][check] += [f"after picking run #1: {v}" for v in found]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The quick demo and a lesson, finished; then every page visited at 1024x768: {page: violations}."""
    from playwright.sync_api import expect, sync_playwright

    tmp = tmp_path_factory.mktemp("projector")
    shots = Path(os.environ.get("CLDASH_SCREENSHOTS") or tmp)
    shots.mkdir(parents=True, exist_ok=True)
    results = {}
    with serve(tmp) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        expect(page.get_by_role("heading", name="Welcome to cldash")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Launch the quick demo").click()
        expect(page.get_by_role("heading", name="Live")).to_be_visible(timeout=60_000)
        page.get_by_role("link", name="Lessons").click()
        expect(page.get_by_role("heading", name="Lessons")).to_be_visible(timeout=30_000)
        page.locator("[data-testid=stSelectbox]").first.click()
        page.keyboard.type("Spectral")
        page.keyboard.press("Enter")
        expect(page.get_by_text("Is its energy spread over its r directions").first).to_be_visible(timeout=30_000)
        steps = page.get_by_role("spinbutton", name="steps per task")
        steps.fill("2")
        steps.press("Enter")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Launch this lesson").click()
        expect(page.get_by_text("Queued runs").first).to_be_visible(timeout=30_000)
        page.get_by_role("link", name="Orders").click()     # a measured order, so that Orders shows its table
        page.get_by_role("button", name="Measure").click()
        expect(page.get_by_text("measuring").first).to_be_visible(timeout=30_000)
        wait_finished(tmp / "browser.db", 6, timeout=900)
        wait_measured(tmp / "browser.db", timeout=600)
        page.goto(f"{url}/runs")      # the address people type: the Runs page (served at the root), not a 404
        expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible(timeout=60_000)
        settle(page)     # Streamlit's "Page not found" dialog comes after the default page has drawn
        expect(page.get_by_text("Page not found")).to_have_count(0)
        assert page.get_by_role("dialog").count() == 0
        for title, (address, heading) in PAGES.items():
            page.goto(f"{url}/{address}")
            if heading:
                expect(page.get_by_role("heading", name=heading).first).to_be_visible(timeout=60_000)
            settle(page)
            page.mouse.move(0, 0)
            page.screenshot(path=str(shots / f"projector-{title.lower()}.png"))
            results[title] = page.evaluate(PAGE_CHECK, [MIN_PX, list(EXEMPT)])
            # the whole page at 1024 px wide: Streamlit scrolls its main block, not the document, so the window
            # is made as tall as the page for one more picture
            tall = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(tall), 12_000)})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / f"projector-{title.lower()}-full.png"))
            # the same page at 1280x800, once its charts have drawn to the width (a resize reruns no script: Plotly's
            # relayout is all there is to wait for)
            page.set_viewport_size(WIDE)
            page.wait_for_timeout(1200)
            page.screenshot(path=str(shots / f"projector-{title.lower()}-1280.png"))
            results[f"{title} at 1280x800"] = page.evaluate(PAGE_CHECK, [MIN_PX, list(EXEMPT)])
            page.set_viewport_size(VIEWPORT)
            if title == "Live":
                pick_a_run(page, shots, results)
        browser.close()
    (shots / "projector-violations.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return results


CASES = [pytest.param(page, size, check, id=f"{page}-{size}-{check}") for page in PAGES
         for size in ("1024x768", "1280x800") for check in ("text", "charts", "scroll")]


@pytest.mark.parametrize("page, size, check", CASES)
def test_every_page_is_readable_on_a_projector(measured, page, size, check):
    violations = measured[page if size == "1024x768" else f"{page} at {size}"][check]
    assert not violations, f"{page} at {size}, {check}: {len(violations)} violation(s):\n" + "\n".join(violations)
