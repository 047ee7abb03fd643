"""A real browser: headless Chromium (Debian's package) driven by Playwright against
`streamlit run app.py` on a free localhost port with a temporary store. It launches a short run
from the Launch page, waits until the Runs page shows it finished, checks that the Compare
page draws its accuracy matrix and that the Claims page lists the claims with a verdict badge, and that its
launch button asks first (the runs, the time on this machine) and Cancel queues nothing.
A screenshot of each step goes to the test's temporary folder."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

playwright = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(folder: Path):
    """`streamlit run app.py` on a free port over a new store in `folder`; yields its address."""
    port = free_port()
    env = {**os.environ, "CLDASH_DB": str(folder / "browser.db")}
    log = open(folder / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not come up: " + (folder / "streamlit.log").read_text()[-2000:])
    try:
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def server(tmp_path):
    with serve(tmp_path) as url:
        yield url, tmp_path


def test_launch_a_run_watch_it_finish_and_compare(server):
    from playwright.sync_api import expect, sync_playwright

    url, tmp = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{url}/launch")
        expect(page.get_by_role("heading", name="Launch runs")).to_be_visible(timeout=60_000)
        steps = page.get_by_role("spinbutton", name="steps per task")
        steps.fill("10")
        steps.press("Enter")
        page.get_by_text("Rotated digits options").click()
        angles = page.get_by_role("textbox", name="angles")
        angles.fill("90")
        angles.press("Enter")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Launch").last.click()
        expect(page.get_by_text("Launched run")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(tmp / "1-launched.png"), full_page=True)

        page.get_by_role("link", name="Runs").click()
        expect(page.get_by_text("#1 finished")).to_be_visible(timeout=180_000)
        page.screenshot(path=str(tmp / "2-finished.png"), full_page=True)

        page.get_by_role("link", name="Compare").click()
        expect(page.get_by_role("heading", name="Accuracy matrices")).to_be_visible(timeout=60_000)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)   # the headline bars
        matrix = page.locator(".js-plotly-plot").filter(has_text="after T1").first
        expect(matrix).to_be_attached(timeout=30_000)
        page.screenshot(path=str(tmp / "3-compare.png"), full_page=True)

        # the Claims page: every claim with a verdict badge per regime (the one finished run decides none)
        page.get_by_role("link", name="Claims").click()
        expect(page.get_by_text("A higher LoRA rank forgets less.")).to_be_visible(timeout=30_000)
        line = page.get_by_text("of 3 seeds ·").first      # "*common* [badge] 0 of 3 seeds · ... to launch"
        expect(line).to_contain_text("not enough evidence")
        expect(page.get_by_role("button", name="missing runs").first).to_be_enabled()
        page.screenshot(path=str(tmp / "4-claims.png"))
        # its launch button asks first, with the runs and the time on this machine; Cancel queues nothing
        page.get_by_role("button", name="missing runs").first.click()
        expect(page.get_by_text("on this machine,").first).to_be_visible(timeout=30_000)
        # the one run has 10 steps: too few to time a step by, so the shipped study's pace
        expect(page.get_by_text("Estimated from the shipped claims study's pace")).to_be_visible()
        page.screenshot(path=str(tmp / "5-claims-asks.png"))
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_text("on this machine,")).to_have_count(0, timeout=30_000)
        browser.close()
    from cldash.store import Store

    (run,) = Store(str(tmp / "browser.db")).runs()   # the launch run alone: the question queued nothing
    assert run["status"] == "finished" and run["config"]["steps_per_task"] == 10
    assert run["config"]["stream_options"]["angles"] == [90.0]
    assert (tmp / "3-compare.png").stat().st_size > 10_000
