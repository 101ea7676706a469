"""JupyterLab in a real browser: run the quickstart and check the run widget's three views rendered.

JupyterLab is served on a free localhost port with the token disabled; Playwright drives Debian's
``/usr/bin/chromium`` (never a downloaded browser). A screenshot is written to ``artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (Debian package 'chromium')"
    if os.environ.get("SIBYL_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and SIBYL_REQUIRE_SERVICES=1 forbids skipping this test")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on localhost over a copy of the quickstart; yields its base URL."""
    _need_chromium()
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", work / "01_quickstart.ipynb")
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "SIBYL_HOME": str(tmp_path / ".sibyl"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={work}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--allow-root",
    ]
    log = open(tmp_path / "jupyterlab.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("jupyterlab exited:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("jupyterlab did not start in 60 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_quickstart_renders_graph_tokens_and_steps(jupyterlab):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "browser_quickstart.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{jupyterlab}/lab/tree/01_quickstart.ipynb", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            # JupyterLab may ask which kernel to start: accept its (the notebook's python3) choice
            try:
                page.locator(".jp-Dialog button.jp-mod-accept").click(timeout=8_000)
            except Exception:  # no dialog: the kernel started on its own
                pass
            try:  # the "get notified about Jupyter news?" toast would cover the screenshot
                page.locator(".jp-Notification-Toast button", has_text="No").click(timeout=3_000)
            except Exception:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            # the last cell is the demo error: when its one-line error shows, everything above has run
            page.wait_for_selector(
                ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                ":has-text('UnknownTechniqueError')",
                timeout=90_000,
            )
            runs = page.locator(".jp-OutputArea-output .sibyl-run:not(.sibyl-pipeline)")
            assert runs.count() >= 3, "the run views were not rendered"
            first = runs.first
            first.scroll_into_view_if_needed()
            expect(first.locator(".sibyl-summary")).to_contain_text("completed", timeout=30_000)
            expect(first.locator("svg.sibyl-graph-svg .sibyl-node")).to_have_count(4)
            expect(first.locator(".sibyl-token-bar")).to_have_count(1)
            assert first.locator(".sibyl-token-seg").count() >= 2
            expect(first.locator(".sibyl-steps-table tr.sibyl-step-row")).to_have_count(4)
            expect(first.locator("tr.sibyl-step-row .sibyl-status-ran")).to_have_count(4)
            # a Pipeline alone in a cell draws its graph as static HTML
            assert page.locator(".jp-RenderedHTMLCommon .sibyl-pipeline svg").count() >= 1
            # the error cell shows exactly one line
            err = page.locator(
                ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                has_text="UnknownTechniqueError",
            ).first
            assert len(err.inner_text().strip().splitlines()) == 1
            first.screenshot(path=str(shot))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser_quickstart_failure.png"))
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
