"""A quickstart executed headless (nbclient) and exported with nbconvert shows, in Chromium with the
network off, every run's graph and every step row: the saved run view needs no kernel, no widget
manager and nothing from the internet."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _need_chromium

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_nbconvert_html_of_an_executed_quickstart_shows_graph_and_steps_offline(tmp_path, monkeypatch):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("SIBYL_HOME", str(tmp_path / ".sibyl"))
    book = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    for cell in book.cells:  # start from nothing: what this run makes is what is exported
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(
        book, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    body, _ = HTMLExporter().from_notebook_node(book)
    page_path = tmp_path / "quickstart.html"
    page_path.write_text(body, encoding="utf-8")
    expected = []  # (nodes in the graph, steps in the summary) per run view in the saved outputs
    for cell in book.cells:
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html", "")
            if 'class="sibyl-run sibyl-static"' in html and "sibyl-pipeline" not in html:
                steps = int(re.search(r"· (\d+) steps? ·", html).group(1))
                expected.append((html.count('class="sibyl-node '), steps))
    assert len(expected) >= 3 and all(steps > 0 for _, steps in expected), expected
    assert sum(1 for nodes, _ in expected if nodes) >= 2, expected  # (a --show steps run has no graph)

    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
            context.route(
                re.compile(r"^(?!file:).*"), lambda route: (requests.append(route.request.url), route.abort())
            )
            page = context.new_page()
            page.goto(page_path.as_uri(), wait_until="load")
            runs = page.locator(".sibyl-run.sibyl-static:not(.sibyl-pipeline)")
            assert runs.count() == len(expected)
            for i, (nodes, steps) in enumerate(expected):
                run = runs.nth(i)
                graph = run.locator("svg.sibyl-graph-svg")
                if nodes:
                    assert graph.count() == 1 and graph.bounding_box()["width"] > 200
                    assert run.locator("svg .sibyl-node").count() == nodes
                    assert run.locator("svg .sibyl-node").first.is_visible()
                assert run.locator("tr.sibyl-step-row").count() == steps
                for row in range(steps):
                    assert run.locator("tr.sibyl-step-row").nth(row).is_visible()
            runs.first.scroll_into_view_if_needed()
            runs.first.screenshot(path=str(ARTIFACTS / "export_offline_quickstart.png"))
            shutil.copy(page_path, ARTIFACTS / "export_offline_quickstart.html")
        finally:
            browser.close()
    # whatever the page asked for from the network was refused, and the run views did not need it
    assert all(not u.startswith("file:") for u in requests)
