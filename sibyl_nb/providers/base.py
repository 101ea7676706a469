"""The provider interface: OpenAI-style chat messages in, a :class:`Completion` out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Completion", "Provider", "Message"]

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(slots=True)
class Completion:
    """One model answer.

    ``fields`` carries structured values parsed from the answer (a classification such as
    ``{"type": "factual"}``, a ``score``), so conditions like ``${classify.type} == "factual"`` work.
    """

    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens
    model: str = ""
    provider: str = ""
    finish_reason: str = "stop"


@runtime_checkable
class Provider(Protocol):
    """Anything with a name and an async ``complete``; ``stream`` is optional."""

    name: str

    async def complete(self, messages: list[Message], **params: Any) -> Completion: ...
