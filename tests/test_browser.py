"""JupyterLab in a real browser (Playwright + Debian's /usr/bin/chromium): every check is on the page.

One JupyterLab server (free localhost port, token off, its own config/runtime/settings dirs) serves a
scratch directory with the committed quickstart and small notebooks written here. Each test saves a
screenshot under ``artifacts/`` and asserts what it shows: the run views of a Run All, a reopened
saved notebook (no kernel needed), a lone node running with a ticking clock, Kernel › Interrupt
keeping what finished, a 50-node graph whose boxes and labels never overlap, the dark theme's
contrast, and YAML highlighting of ``%%sibyl_pipeline`` cells.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

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

NAP = """%load_ext sibyl_nb
import time
import sibyl_nb as sb


@sb.technique("browser.nap")
def nap(ctx):
    time.sleep(float(ctx.config.get("seconds", 1.0)))
    return {"text": ctx.node_id + " slept"}
"""


# a YAML key, a quoted string, a boolean and a comment: the key and `true` are plain names in Python
YAML_BODY = "# the answer step\nsteps:\n  - name: answer\n    use: 'rag.retrieval'\n    enabled: true\n"


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


def _write(path: Path, *sources: str) -> None:
    book = new_notebook(
        cells=[new_code_cell(s) for s in sources],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(book, path)


def _chain(name: str, n: int, seconds: float, flags: str) -> str:
    steps = "\n".join(
        f"      - {{name: call_{i}, use: browser.nap, config: {{seconds: {seconds}}}}}" for i in range(n)
    )
    return f"%%sibyl_pipeline {flags}\npipelines:\n  {name}:\n    steps:\n{steps}"


def _wide_graph_cell() -> str:
    from test_draw import wide_graph  # the same 52-node graph the layout unit test checks

    yaml = wide_graph().document  # noqa: F841  (built to be sure it loads)
    import inspect

    src = inspect.getsource(wide_graph)
    return (
        "import sibyl_nb as sb\n"
        + src
        + "\nwide = wide_graph()\nfrom sibyl_nb.notebook.render import pipeline_html\n"
        "from IPython.display import HTML\nHTML(pipeline_html(wide))"
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, work dir) of a JupyterLab server over a scratch directory of notebooks."""
    _need_chromium()
    tmp = tmp_path_factory.mktemp("lab")
    work = tmp / "work"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", work / "01_quickstart.ipynb")
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", work / "saved_quickstart.ipynb")
    _write(work / "live.ipynb", NAP, _chain("naps", 3, 2.5, "-o live_res --show graph,steps"))
    _write(
        work / "interrupt.ipynb",
        NAP,
        _chain("long_naps", 6, 1.5, "-o res --show graph,steps"),
        "print('STOPPED_BY=', res.stopped_by, ','.join(res.ran()))",
    )
    _write(work / "wide.ipynb", _wide_graph_cell())
    _write(work / "yaml.ipynb", "%%sibyl_pipeline --dry-run\n" + YAML_BODY, YAML_BODY)
    settings = tmp / "settings"
    for plugin, values in {
        # render every cell (no windowing), so offscreen outputs are laid out and measurable
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    # the prebuilt extension as pip installs it (an editable install skips data files): share/jupyter
    jpath = tmp / "jupyter_path"
    (jpath / "labextensions").mkdir(parents=True)
    (jpath / "labextensions" / "sibyl-nb-yaml").symlink_to(ROOT / "sibyl_nb" / "labextension")
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_PATH": str(jpath),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "SIBYL_HOME": str(tmp / ".sibyl"),
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
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        f"--LabApp.user_settings_dir={settings}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",
        "--allow-root",
    ]
    log = open(tmp / "jupyterlab.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError("jupyterlab exited:\n" + (tmp / "jupyterlab.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{base}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("jupyterlab did not start in 90 s")
            time.sleep(0.3)
        yield base, work
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _open(browser, lab, name: str, *, kernel: bool = True, theme: str | None = None):
    base, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _open.count = getattr(_open, "count", 0) + 1  # a fresh workspace per page: only this notebook open
    page.goto(f"{base}/lab/workspaces/w{_open.count}/tree/{name}?reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands", timeout=60_000)
    try:  # JupyterLab may ask which kernel to start: accept its (the notebook's python3) choice
        page.locator(".jp-Dialog button.jp-mod-accept").click(timeout=5_000)
    except Exception:
        pass
    try:  # the "get notified about Jupyter news?" toast would cover the screenshot
        page.locator(".jp-Notification-Toast button", has_text="No").click(timeout=2_000)
    except Exception:
        pass
    if theme:
        page.evaluate("t => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme)
        page.wait_for_function("t => document.body.dataset.jpThemeName === t", arg=theme, timeout=30_000)
    if kernel:
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    return page


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _shot(page, locator, name: str) -> Path:
    path = ARTIFACTS / name
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path))
    assert path.stat().st_size > 5_000
    return path


def _fail_shot(page, name: str) -> None:
    try:
        page.screenshot(path=str(ARTIFACTS / name))
    except Exception:
        pass


def test_quickstart_run_all_renders_graph_tokens_and_steps(lab, browser):
    from playwright.sync_api import expect

    page = _open(browser, lab, "01_quickstart.ipynb")
    try:
        _run_all(page)
        # the last cell is the demo error: when its one-line error shows, everything above has run
        page.wait_for_selector(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']:has-text('UnknownTechniqueError')",
            timeout=120_000,
        )
        runs = page.locator(".jp-OutputArea-output .sibyl-run:not(.sibyl-pipeline)")
        assert runs.count() >= 3, "the run views were not rendered"
        first = runs.first
        expect(first.locator(".sibyl-summary")).to_contain_text(
            "completed · 4/4 nodes · 4 steps", timeout=30_000
        )
        expect(first.locator("svg.sibyl-graph-svg .sibyl-node")).to_have_count(4)
        expect(first.locator("svg .sibyl-node[data-status='ran']")).to_have_count(4)
        expect(first.locator(".sibyl-token-bar")).to_have_count(1)
        assert first.locator(".sibyl-token-seg").count() >= 2
        expect(first.locator(".sibyl-steps-table tr.sibyl-step-row")).to_have_count(4)
        expect(first.locator("tr.sibyl-step-row .sibyl-status-ran")).to_have_count(4)
        assert page.locator(".jp-RenderedHTMLCommon .sibyl-pipeline svg .sibyl-node").count() >= 1
        err = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
            has_text="UnknownTechniqueError",
        ).first
        assert len(err.inner_text().strip().splitlines()) == 1
        _shot(page, first, "browser_quickstart.png")
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000
        )
    except Exception:
        _fail_shot(page, "browser_quickstart_failure.png")
        raise
    page.close()
    # reopened: the saved (and so trusted) notebook shows the same views, with no kernel and no widget
    page = _open(browser, lab, "01_quickstart.ipynb", kernel=False)
    try:
        runs = page.locator(".jp-OutputArea-output .sibyl-run:not(.sibyl-pipeline)")
        runs.first.wait_for(timeout=30_000)
        assert runs.count() >= 3
        first = runs.first
        assert first.locator("svg.sibyl-graph-svg .sibyl-node[data-status='ran']").count() == 4
        assert first.locator("img.sibyl-graph-fallback").is_hidden()  # inline SVG shown, not both
        assert first.locator("tr.sibyl-step-row").count() == 4
        assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()
        _shot(page, first, "browser_reopened_trusted.png")
    except Exception:
        _fail_shot(page, "browser_reopened_trusted_failure.png")
        raise


def test_committed_notebook_opened_untrusted_still_shows_graph_and_steps(lab, browser):
    """A notebook from elsewhere is untrusted: JupyterLab sanitizes its HTML (no <svg>, no <style>),
    and the run view's <img> copy of the graph takes over."""
    saved = nbformat.read(lab[1] / "saved_quickstart.ipynb", as_version=4)
    want = [  # steps per run view in the committed outputs
        int(re.search(r"· (\d+) steps? ·", o["data"]["text/html"]).group(1))
        for c in saved.cells
        for o in c.get("outputs", [])
        if 'class="sibyl-run sibyl-static"' in o.get("data", {}).get("text/html", "")
        and "sibyl-pipeline" not in o["data"]["text/html"]
    ]
    assert len(want) >= 3
    page = _open(browser, lab, "saved_quickstart.ipynb", kernel=False)
    try:
        runs = page.locator(".jp-OutputArea-output .sibyl-run:not(.sibyl-pipeline)")
        runs.first.wait_for(timeout=30_000)
        assert runs.count() == len(want)
        for i, steps in enumerate(want):
            assert runs.nth(i).locator("tr.sibyl-step-row").count() == steps
        first = runs.first
        img = first.locator("img.sibyl-graph-fallback")
        assert img.is_visible()
        page.wait_for_function(
            "el => el.complete && el.naturalWidth > 200", arg=img.element_handle(), timeout=30_000
        )
        # the sanitizer drops the <svg> tags but keeps their text: it must not show above the image
        box = first.locator(".sibyl-graph")
        assert img.bounding_box()["y"] - box.bounding_box()["y"] < 2, (img.bounding_box(), box.bounding_box())
        assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()
        assert "completed" in first.locator(".sibyl-summary").inner_text()
        _shot(page, first, "browser_reopened_untrusted.png")
    except Exception:
        _fail_shot(page, "browser_reopened_failure.png")
        raise


def _summary(page) -> str:
    return page.locator(".jp-OutputArea-output .sibyl-run .sibyl-summary").first.inner_text()


def _clock(summary: str) -> float:
    m = re.search(r"· ([\d.]+) (ms|s)\b", summary)
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def test_a_lone_node_is_shown_running_with_a_ticking_clock(lab, browser):
    page = _open(browser, lab, "live.ipynb")
    try:
        _run_all(page)
        running = page.locator(
            ".jp-OutputArea-output svg .sibyl-node[data-node='call_0'][data-status='running']"
        )
        running.wait_for(timeout=60_000)
        first = _summary(page)
        assert first.startswith("running · 0/3 nodes") and "running: call_0" in first, first
        time.sleep(1.0)
        second = _summary(page)
        assert second.startswith("running · 0/3 nodes"), second  # still the first 2.5 s call
        assert _clock(second) >= _clock(first) + 0.5, (first, second)  # the clock ticks between completions
        row = page.locator(".jp-OutputArea-output tr.sibyl-step-row[data-node='call_0']")
        assert row.get_attribute("data-status") == "running"
        # the view is repainted every tick (never "stable"): photograph the page where it is
        box = page.locator(".jp-OutputArea-output .sibyl-run").first.bounding_box()
        page.screenshot(path=str(ARTIFACTS / "browser_live_running.png"), clip=box)
        assert (ARTIFACTS / "browser_live_running.png").stat().st_size > 5_000
        page.locator(".jp-OutputArea-output .sibyl-summary", has_text="completed · 3/3 nodes").wait_for(
            timeout=60_000
        )
    except Exception:
        _fail_shot(page, "browser_live_failure.png")
        raise


def test_kernel_interrupt_stops_sync_techniques_and_keeps_what_finished(lab, browser):
    page = _open(browser, lab, "interrupt.ipynb")
    try:
        _run_all(page)
        page.locator(
            ".jp-OutputArea-output svg .sibyl-node[data-node='call_1'][data-status='running']"
        ).wait_for(timeout=60_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Interrupt Kernel").first.click()
        summary = page.locator(".jp-OutputArea-output .sibyl-summary", has_text="interrupted")
        summary.wait_for(timeout=30_000)
        text = summary.inner_text()
        assert re.match(r"interrupted · [23]/6 nodes", text), text
        nodes = page.locator(".jp-OutputArea-output svg .sibyl-node")
        statuses = [nodes.nth(i).get_attribute("data-status") for i in range(nodes.count())]
        assert statuses[:2] == ["ran", "ran"] and statuses[-1] == "pending" and "running" not in statuses, (
            statuses
        )
        err = page.locator(".jp-OutputArea-output", has_text="RunInterrupted").first
        err.wait_for(timeout=10_000)
        # Run All stops at the failed cell: run the last cell on its own, it reads -o
        page.evaluate(
            "() => { const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = 2; }"
        )
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
        out = page.locator(".jp-OutputArea-output", has_text="STOPPED_BY=")
        out.wait_for(timeout=30_000)
        words = out.inner_text().split()
        assert words[1] == "interrupted" and words[2].split(",")[:2] == ["call_0", "call_1"], words
        assert len(words[2].split(",")) <= 3
        _shot(page, page.locator(".jp-OutputArea-output .sibyl-run").first, "browser_interrupt.png")
    except Exception:
        _fail_shot(page, "browser_interrupt_failure.png")
        raise


GEOMETRY = """() => {
  const svg = document.querySelector('.jp-OutputArea-output svg.sibyl-graph-svg');
  const boxes = [];
  svg.querySelectorAll('.sibyl-node').forEach(g => {
    const r = g.querySelector('rect').getBoundingClientRect();
    const texts = [...g.querySelectorAll('text')].map(t => t.getBoundingClientRect());
    boxes.push({name: 'node:' + g.dataset.node, r, texts});
  });
  svg.querySelectorAll('.sibyl-edge-label').forEach(g => {
    const r = g.querySelector('rect').getBoundingClientRect();
    const texts = [...g.querySelectorAll('tspan')].map(t => t.getBoundingClientRect());
    boxes.push({name: 'label:' + g.dataset.src + '->' + g.dataset.dst, r, texts});
  });
  const overlaps = [], spills = [];
  for (let i = 0; i < boxes.length; i++) {
    const a = boxes[i].r;
    for (const t of boxes[i].texts)
      if (t.left < a.left - 0.5 || t.right > a.right + 0.5 || t.top < a.top - 0.5 || t.bottom > a.bottom + 0.5)
        spills.push(boxes[i].name);
    for (let j = i + 1; j < boxes.length; j++) {
      const b = boxes[j].r;
      if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
        overlaps.push([boxes[i].name, boxes[j].name]);
    }
  }
  const texts = [...svg.querySelectorAll('.sibyl-node')].map(g =>
      [...g.querySelectorAll('text')].slice(0, 3).map(t => t.textContent).join(''));
  return {count: boxes.length, nodes: svg.querySelectorAll('.sibyl-node').length, overlaps, spills, texts};
}"""


def test_fifty_node_graph_has_no_overlapping_or_spilling_labels(lab, browser):
    page = _open(browser, lab, "wide.ipynb")
    try:
        _run_all(page)
        page.wait_for_selector(".jp-OutputArea-output svg.sibyl-graph-svg .sibyl-node", timeout=60_000)
        geo = page.evaluate(GEOMETRY)
        assert geo["nodes"] == 52 and geo["count"] == 62, geo["count"]  # 52 boxes + 10 condition labels
        assert geo["overlaps"] == [], geo["overlaps"][:5]
        assert geo["spills"] == [], geo["spills"][:5]  # every label fits inside its box, in the real font
        assert len(set(geo["texts"])) == 52  # no two long ids cut to the same prefix
        _shot(page, page.locator(".jp-OutputArea-output .sibyl-graph").first, "browser_graph_52_nodes.png")
    except Exception:
        _fail_shot(page, "browser_graph_failure.png")
        raise


CONTRAST = """(sel) => {
  const lum = c => {
    const m = c.match(/[\\d.]+/g).map(Number);
    const [r, g, b] = m.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const bgOf = el => { for (let e = el; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
      if (c && !c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return c; } return 'rgb(255,255,255)'; };
  const out = {};
  const page = getComputedStyle(document.querySelector('.jp-OutputArea-output')).backgroundColor;
  out.page_bg = bgOf(document.querySelector('.jp-OutputArea-output'));
  const pending = document.querySelector(sel + ' svg .sibyl-node[data-status="pending"]');
  if (pending) out.node = ratio(getComputedStyle(pending.querySelector('text')).fill, getComputedStyle(pending.querySelector('rect')).fill);
  const ran = document.querySelector(sel + ' svg .sibyl-node[data-status="ran"]');
  if (ran) out.ran_node = ratio(getComputedStyle(ran.querySelector('text')).fill, getComputedStyle(ran.querySelector('rect')).fill);
  const summary = document.querySelector(sel + ' .sibyl-summary');
  out.summary = ratio(getComputedStyle(summary).color, bgOf(summary));
  const cell = document.querySelector(sel + ' tr.sibyl-step-row td:nth-child(2)');
  if (cell) out.steps = ratio(getComputedStyle(cell).color, bgOf(cell));
  const legend = document.querySelector(sel + ' svg .sibyl-legend text');
  if (legend) out.legend = ratio(getComputedStyle(legend).fill, out.page_bg);
  const tokens = document.querySelector(sel + ' .sibyl-token-totals');
  if (tokens) out.tokens = ratio(getComputedStyle(tokens).color, bgOf(tokens));
  return out;
}"""


def test_dark_theme_keeps_every_text_readable(lab, browser):
    # the quickstart as saved by the first test (trusted: its inline SVG follows the theme)
    page = _open(browser, lab, "01_quickstart.ipynb", kernel=False, theme="JupyterLab Dark")
    try:
        page.locator(".jp-OutputArea-output .sibyl-run").first.wait_for(timeout=30_000)
        bg = page.evaluate(
            "() => getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim()"
        )
        assert bg and bg.lower() not in ("#fff", "#ffffff", "white"), bg  # really dark
        run = ".jp-OutputArea-output .sibyl-run:not(.sibyl-pipeline)"
        ratios = page.evaluate(CONTRAST, run)
        pipeline = page.evaluate(CONTRAST, ".jp-OutputArea-output .sibyl-pipeline")
        # WCAG AA: 4.5:1 for text
        for key in ("ran_node", "summary", "steps", "legend", "tokens"):
            assert ratios[key] >= 4.5, (key, ratios)
        assert pipeline["node"] >= 4.5, pipeline
        _shot(page, page.locator(run).first, "browser_dark_theme.png")
        page.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})"
        )
    except Exception:
        _fail_shot(page, "browser_dark_failure.png")
        raise


_TOKENS = """i => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[i].node;
  const out = [];
  for (const span of cell.querySelectorAll('.cm-content .cm-line span')) {
    if (!span.children.length) out.push([span.textContent.trim(), getComputedStyle(span).color]);
  }
  return out;
}"""
_THEME_COLOURS = """() => Object.fromEntries(['atom', 'keyword', 'string', 'comment'].map(k => {
  const probe = document.createElement('span');
  probe.style.color = `var(--jp-mirror-editor-${k}-color)`;
  document.body.appendChild(probe);
  const colour = getComputedStyle(probe).color;
  probe.remove();
  return [k, colour];
}))"""


def _tokens(page, index: int, *, until: str | None = None) -> dict[str, str]:
    """{token text: computed colour} of cell ``index``'s highlighted spans (waits for ``until``)."""
    if until is not None:
        page.wait_for_function(
            f"i => ({_TOKENS})(i).some(([text]) => text === {json.dumps(until)})", arg=index, timeout=15_000
        )
    return {text: colour for text, colour in page.evaluate(_TOKENS, index) if text}


def _set_source(page, index: int, source: str) -> None:
    page.evaluate(
        "([i, s]) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.setSource(s)",
        [index, source],
    )


@pytest.mark.parametrize("kernel", [False, True], ids=["no-kernel", "kernel"])
def test_sibyl_pipeline_cells_are_coloured_as_yaml_and_others_as_python(lab, browser, kernel):
    """The prebuilt extension colours a %%sibyl_pipeline cell's body with YAML tokens (keys, booleans),
    the same text in a plain cell with Python's (where `steps` and `true` are plain names), and follows
    edits: adding the magic line turns a cell YAML, removing it turns it back. With a kernel too: its
    language info resets every cell's mimeType to Python's when it starts."""
    page = _open(browser, lab, "yaml.ipynb", kernel=kernel)
    try:
        theme = page.evaluate(_THEME_COLOURS)
        assert len(set(theme.values())) == 4, theme  # four distinct colours to tell the tokens apart
        mimes = page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.mimeType)"
        )
        assert mimes[0] == "text/x-yaml" and mimes[1] != "text/x-yaml", mimes
        yaml = _tokens(page, 0, until="# the answer step")
        assert {k: yaml.get(k) for k in ("steps", "name", "use", "enabled")} == dict.fromkeys(
            ("steps", "name", "use", "enabled"), theme["atom"]
        ), yaml
        assert yaml.get("true") == theme["keyword"], yaml
        assert yaml.get("'rag.retrieval'") == theme["string"], yaml
        assert yaml.get("# the answer step") == theme["comment"], yaml
        python = _tokens(page, 1, until="# the answer step")
        # Python: the comment and the string are coloured, the YAML keys and `true` are plain names
        assert python.get("# the answer step") == theme["comment"], python
        assert python.get("'rag.retrieval'") == theme["string"], python
        assert not {"steps", "name", "use", "enabled", "true"} & set(python), python
        _shot(
            page,
            page.locator(".jp-Notebook"),
            f"browser_yaml_highlighting_{'kernel' if kernel else 'no_kernel'}.png",
        )

        # typing %%sibyl_pipeline into the Python cell colours it as YAML; removing it, as Python again
        _set_source(page, 1, "%%sibyl_pipeline\n" + YAML_BODY)
        switched = _tokens(page, 1, until="steps")
        assert switched.get("steps") == theme["atom"] and switched.get("true") == theme["keyword"], switched
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.content.widgets[1].model.mimeType === 'text/x-yaml'",
            timeout=10_000,
        )
        _set_source(page, 1, YAML_BODY)
        page.wait_for_function(f"() => !({_TOKENS})(1).some(([text]) => text === 'steps')", timeout=15_000)
        back = _tokens(page, 1, until="# the answer step")
        assert not {"steps", "true"} & set(back) and back.get("'rag.retrieval'") == theme["string"], back
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.content.widgets[1].model.mimeType !== 'text/x-yaml'",
            timeout=10_000,
        )
    except Exception:
        _fail_shot(page, "browser_yaml_failure.png")
        raise


def test_the_prebuilt_lab_extension_is_in_the_wheel(tmp_path):
    """pip installs it where JupyterLab looks (share/jupyter/labextensions): no Node.js, no lab build."""
    import zipfile

    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("sibyl_nb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    prefix = next(n for n in names if n.endswith("share/jupyter/labextensions/sibyl-nb-yaml/package.json"))
    meta = json.loads(zipfile.ZipFile(wheel).read(prefix))
    load = prefix.rsplit("/", 1)[0] + "/" + meta["jupyterlab"]["_build"]["load"]
    assert load in names
