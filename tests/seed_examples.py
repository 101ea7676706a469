"""The seed guide's YAML blocks, extracted by section (the seed is a copy in tests/data/seed.md)."""

from __future__ import annotations

import re
from pathlib import Path

SEED = Path(__file__).parent / "data" / "seed.md"


def yaml_blocks() -> list[tuple[str, str]]:
    """(section heading, yaml text) for every ```yaml block, in order."""
    text = SEED.read_text(encoding="utf-8")
    out = []
    heading = ""
    for m in re.finditer(r"^(#{2,4}) ([^\n]+)$|^```yaml\n(.*?)^```", text, flags=re.M | re.S):
        if m.group(2):
            heading = m.group(2).strip()
        elif m.group(3) is not None:
            out.append((heading, m.group(3)))
    return out


def pipeline_blocks() -> list[tuple[str, str]]:
    """Blocks that are pipelines: they define ``pipelines:`` or ``steps:`` at the top level."""
    return [(h, y) for h, y in yaml_blocks() if re.search(r"^(pipelines|steps):", y, flags=re.M)]


def block(heading: str) -> str:
    """The first pipeline block under ``heading``."""
    for h, y in pipeline_blocks():
        if h == heading:
            return y
    raise KeyError(heading)
