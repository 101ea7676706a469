"""An interrupted run's form in JupyterLab, answered in a real browser (Playwright + Debian chromium):
the question and one button per choice show under the run view; a click resumes the run, the same
run view turns ``completed`` in place, and the magic's ``-o`` variable holds the finished result."""

from __future__ import annotations

import nbformat
import pytest
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, lab  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GATE = """%%sibyl_pipeline --input '{"query": "What is Python used for?"}' --output res
pipelines:
  gate:
    steps:
      - {name: draft, use: ai_generation.generation}
      - name: review
        use: workflow_orchestration.human_input
        config: {prompt: "Ship this answer?", choices: [ship, hold]}
      - {name: after, use: workflow_orchestration.passthrough}
"""


@pytest.fixture
def gate_notebook(lab):  # noqa: F811
    base, work = lab
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell("%load_ext sibyl_nb"),
        nbformat.v4.new_code_cell(GATE),
    ]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, work / "gate.ipynb")
    return base


def test_the_interrupt_form_is_answered_in_the_browser_and_the_run_continues_in_place(gate_notebook):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{gate_notebook}/lab/tree/gate.ipynb", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            try:
                page.locator(".jp-Dialog button.jp-mod-accept").click(timeout=8_000)
            except Exception:
                pass
            try:
                page.locator(".jp-Notification-Toast button", has_text="No").click(timeout=3_000)
            except Exception:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            form = page.locator(".sibyl-interrupt-form")
            expect(form).to_be_visible(timeout=90_000)
            expect(form.locator(".sibyl-interrupt-prompt")).to_contain_text("Ship this answer?")
            expect(form.locator(".sibyl-interrupt-upstream")).to_contain_text("Python")
            buttons = form.locator("button.sibyl-interrupt-choice")
            expect(buttons).to_have_count(2)
            cell = page.locator(".jp-Cell").nth(1)
            run_view = cell.locator(".sibyl-run").first
            expect(run_view.locator(".sibyl-summary")).to_contain_text("interrupted", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "browser_interrupt_form.png"))

            buttons.filter(has_text="ship").click()

            # the same run view, in the same cell output, now shows the finished run
            expect(run_view.locator(".sibyl-summary")).to_contain_text("completed", timeout=60_000)
            expect(form).to_contain_text("answered 'ship'", timeout=30_000)
            expect(cell.locator(".sibyl-run")).to_have_count(1)
            expect(buttons.first).to_be_disabled()

            # -o res holds the finished run: ask the kernel in a new cell
            page.locator(".jp-Cell").nth(1).click()
            page.keyboard.press("Escape")
            page.keyboard.press("b")  # insert a cell below
            page.keyboard.press("Enter")
            page.keyboard.type('print("ANSWER", res.stopped_by, res.outputs["review"]["answer"])')
            page.keyboard.press("Shift+Enter")
            expect(page.locator(".jp-OutputArea-output", has_text="ANSWER completed ship")).to_be_visible(
                timeout=30_000
            )
            run_view.screenshot(path=str(ARTIFACTS / "browser_interrupt_answered.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser_interrupt_failure.png"))
            raise
        finally:
            browser.close()
