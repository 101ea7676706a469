"""The ``sibyl`` command: visualize (PNG/SVG, the seed's command line), validate, run, resume, demo,
checkpoints, cache. Commands run in-process through ``main(argv)``; one test runs the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sibyl_nb.cli import BUNDLED_EXAMPLES, main


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_seed_visualize_command_writes_a_png_of_the_research_workflow(in_tmp, capsys):
    # exactly the seed's command line; no ./pipelines.yaml here, so the bundled seed examples are used
    assert main(["workflow", "visualize", "--pipeline", "research_workflow", "--output", "workflow.png"]) == 0
    out, err = capsys.readouterr()
    assert "bundled seed examples" in err
    assert "research_workflow: 7 nodes, 7 edges" in out
    with Image.open(in_tmp / "workflow.png") as img:
        assert img.format == "PNG"
        width, height = img.size
        # the notebook's geometry (pixels at 100 dpi), drawn at the default 150 dpi, plus the title line
        from sibyl_nb.draw import layout
        from sibyl_nb.pipeline import Pipeline

        geo = layout(Pipeline.from_yaml(BUNDLED_EXAMPLES, name="research_workflow"))
        assert abs(width - geo.width * 1.5) <= 2 and abs(height - (geo.height + 26) * 1.5) <= 2
        assert height > 700  # 6 layers: taller than wide
        assert img.getpixel((5, 5))[:3] == (255, 255, 255)  # white background
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colours) > 50  # real drawing, not a blank canvas


def test_visualize_svg_and_a_file_in_the_working_directory(in_tmp):
    shutil.copy(BUNDLED_EXAMPLES, in_tmp / "pipelines.yaml")
    assert main(["visualize", "-p", "iterative_refinement", "-o", "loop.svg"]) == 0
    svg = (in_tmp / "loop.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert (
        main(
            [
                "workflow",
                "visualize",
                "-p",
                "adaptive_workflow",
                "-o",
                "out/adaptive.png",
                "--run",
                "-q",
                "What is Python?",
            ]
        )
        == 0
    )
    assert (in_tmp / "out" / "adaptive.png").stat().st_size > 10_000


def test_visualize_rejects_unknown_formats_and_pipelines(in_tmp, capsys):
    assert main(["workflow", "visualize", "-p", "research_workflow", "-o", "x.gif"]) == 1
    assert "use a .png, .svg or .pdf" in capsys.readouterr().err
    assert main(["workflow", "visualize", "-p", "research_workflw", "-o", "x.png"]) == 1
    assert "did you mean 'research_workflow'" in capsys.readouterr().err
    assert main(["workflow", "visualize", "-o", "x.png"]) == 1
    assert "pick one with --pipeline" in capsys.readouterr().err


BAD = """pipelines:
  broken:
    steps:
      - use: rag.retrieval
        config:
          top_k: 5
      - use: ai_generation.generaton
"""


def test_validate_a_bad_file_exits_non_zero_with_path_and_line(in_tmp, capsys):
    (in_tmp / "bad.yaml").write_text(BAD)
    assert main(["validate", "bad.yaml"]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:7" in err and "pipelines.broken.steps[1].use" in err
    assert "did you mean 'ai_generation.generation'" in err
    (in_tmp / "syntax.yaml").write_text("pipelines:\n  p:\n    steps: [\n")
    assert main(["validate", "syntax.yaml"]) == 1
    assert "syntax.yaml:3:1: this `[` is never closed" in capsys.readouterr().err  # the line of the `[`
    assert main(["validate", "missing.yaml"]) == 1


def test_validate_a_good_file_prints_a_summary(capsys):
    assert main(["validate", str(BUNDLED_EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {BUNDLED_EXAMPLES}: 4 pipelines: research_workflow (7 nodes, 7 edges)")
    assert "conversational_agent" in out


def test_run_and_demo(in_tmp, capsys):
    assert (
        main(
            [
                "run",
                "-p",
                "research_workflow",
                "--input",
                '{"query": "What is Python used for?"}',
                "--json",
                "--trace",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    payload = json.loads(out[: out.index("\nrun ") + 1])
    assert payload["stopped_by"] == "completed" and payload["output"]
    assert "✓ validate" in out
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run ") and "research_workflow" in out and "✓ synthesize" in out


CHECKPOINTED = """pipelines:
  chain:
    steps:
      - {use: workflow_orchestration.passthrough, id: a}
      - {use: workflow_orchestration.passthrough, id: b}
shops:
  infrastructure:
    config:
      checkpointing: {enabled: true, frequency: 1}
      caching: {enabled: true}
"""


def test_run_resume_checkpoints_and_cache_commands(in_tmp, capsys):
    (in_tmp / "sibyl.yaml").write_text(CHECKPOINTED)
    assert main(["run", "--workflow-id", "wf-cli", "-q", "hello", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == {"query": "hello"}
    assert main(["resume", "wf-cli", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == {"query": "hello"}
    assert main(["checkpoints", "list", "-p", "chain"]) == 0
    out = capsys.readouterr().out
    assert "wf-cli" in out and "finished" in out
    assert main(["checkpoints", "prune", "-p", "chain"]) == 1
    assert "give --keep" in capsys.readouterr().err
    assert main(["checkpoints", "prune", "-p", "chain", "--older-than", "0s"]) == 0
    assert "pruned 1 workflow(s)" in capsys.readouterr().out
    assert main(["resume", "wf-cli"]) == 1
    assert "no checkpoint for workflow 'wf-cli'" in capsys.readouterr().err
    assert main(["cache", "clear"]) == 0
    assert "cleared 0" in capsys.readouterr().out  # passthrough steps are never cached


def test_console_script_runs(in_tmp):
    exe = Path(sys.executable).with_name("sibyl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sibyl_nb.cli"]
    (in_tmp / "bad.yaml").write_text(BAD)
    proc = subprocess.run([*cmd, "validate", "bad.yaml"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "bad.yaml:7" in proc.stderr
