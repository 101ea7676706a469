"""A sweep that a test kills midway (``python sweep_kill_child.py``): one slow step per run, in order."""

from __future__ import annotations

import os
import sys
import time

import sibyl_nb as sb

DOC = """
steps:
  - id: slow
    use: killtest.slow
    config: {pause: 0.25}
"""
INPUTS = [{"query": f"q{i}"} for i in range(6)]


@sb.technique("killtest.slow", config_schema={"pause": float})
def slow(ctx):
    with open(os.environ["KILLTEST_CALLS"], "a", encoding="utf-8") as fh:
        fh.write(ctx.input["query"] + "\n")
    time.sleep(ctx.config["pause"])
    return {"answer": ctx.input["query"].upper()}


def sweep():
    return sb.sweep(sb.Pipeline.from_yaml(DOC), INPUTS, name="killed", max_concurrent=1, progress=False)


if __name__ == "__main__":
    sweep()
    sys.exit(0)
