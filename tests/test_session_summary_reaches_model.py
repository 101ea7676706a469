"""``sliding_window`` + ``include_summary: true`` with no context step: the stored summary of the
messages that left the window is in the request the model receives."""

from __future__ import annotations

import sibyl_nb as sb
from sibyl_nb.context.strategies import SUMMARY_PREFIX
from sibyl_nb.providers.base import Completion
from sibyl_nb.providers.registry import register_provider, unregister_provider


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.requests: list[list[dict]] = []

    async def complete(self, messages, **params):
        self.requests.append([dict(m) for m in messages])
        return Completion(text=f"noted {len(self.requests)}")


DOC = """
pipelines:
  chat:
    steps:
      - use: workflow_orchestration.session_management
        config:
          subtechnique: sliding_window
          window_size: 2
          include_summary: {flag}
          storage: memory
      - use: ai_generation.generation
        config:
          provider: recorder_{unique}
"""


def _run(flag: str, unique: str) -> Recorder:
    rec = Recorder()
    register_provider(f"recorder_{unique}", rec)
    try:
        pipe = sb.Pipeline.from_yaml(DOC.format(flag=flag, unique=unique))
        for text in [
            "My name is Alice Moreau.",
            "I live in Lyon.",
            "I work as a pilot.",
            "What do you know?",
        ]:
            pipe.run({"session_id": unique, "message": text})
    finally:
        unregister_provider(f"recorder_{unique}")
    return rec


def test_include_summary_alone_sends_the_summary(unique):
    rec = _run("true", unique)
    last = rec.requests[-1]
    summaries = [m["content"] for m in last if m["content"].startswith(SUMMARY_PREFIX)]
    assert len(summaries) == 1 and "Alice Moreau" in summaries[0]
    # the window itself: the last two stored messages, then the current question
    assert [m["content"] for m in last[-3:]] == ["I work as a pilot.", "noted 3", "What do you know?"]


def test_without_include_summary_no_summary_is_sent(unique):
    rec = _run("false", unique)
    assert not any(m["content"].startswith(SUMMARY_PREFIX) for m in rec.requests[-1])
