"""The engine-level ``workflow_orchestration`` techniques.

``graph`` and ``orchestration`` are compiled into the graph IR by the loader (they are never called);
``passthrough`` stands in for the seed's placeholder steps that name no technique; ``human_input``
pauses the run for a person's answer (an approval or an edit).
"""

from __future__ import annotations

from typing import Any

from ...document.schema import ConfigSchema, Field
from ...techniques.context import StepContext
from ..registry import register_technique

__all__ = ["passthrough", "human_input"]


def _compiled(ctx: StepContext) -> Any:  # pragma: no cover - the loader never lets this be called
    raise RuntimeError(f"{ctx.technique} is compiled into the graph and is never called directly")


register_technique(
    "workflow_orchestration.graph",
    _compiled,
    blocking=False,
    compiles=True,
    subtechniques=("dag", "cyclic", "conditional", "dynamic"),
)
register_technique(
    "workflow_orchestration.orchestration",
    _compiled,
    blocking=False,
    compiles=True,
    subtechniques=("sequential", "parallel", "conditional", "error_handling"),
)


def passthrough(ctx: StepContext) -> Any:
    """Placeholder step: hands on its upstream output (or the input when it has none)."""
    upstream = ctx.upstream
    if len(upstream) == 1:
        return next(iter(upstream.values()))
    if upstream:
        return dict(upstream)
    return ctx.input


register_technique(
    "workflow_orchestration.passthrough",
    passthrough,
    blocking=False,
    # open: a placeholder stands for a technique still to be written; its config is rendered (so a
    # template typo is still caught) but not otherwise checked
    config_schema=ConfigSchema({}, closed=False, description="placeholder step: hands its input on"),
)


def human_input(ctx: StepContext) -> Any:
    """Ask a person: pauses the run (``ctx.interrupt``) with the prompt, the choices and what the
    upstream steps produced; ``resume(workflow_id, value=...)`` supplies the answer. With ``choices``
    an answer outside them asks again, saying why."""
    from ...engine.result import text_of

    prompt = ctx.config.get("prompt") or "Your input?"
    choices = ctx.config.get("choices")
    shown = {k: text_of(v)[:2000] for k, v in ctx.upstream.items()}
    payload: dict[str, Any] = {"prompt": str(prompt), "choices": list(choices) if choices else None}
    if shown:
        payload["upstream"] = shown
    while True:
        answer = ctx.interrupt(payload)
        if not choices or answer in choices:
            break
        payload = {**payload, "error": f"{answer!r} is not one of: {', '.join(map(str, choices))}"}
    text = answer if isinstance(answer, str) else text_of(answer)
    return {"answer": answer, "text": text, "prompt": str(prompt), "choices": payload["choices"]}


register_technique(
    "workflow_orchestration.human_input",
    human_input,
    blocking=False,
    config_schema=ConfigSchema(
        {
            "prompt": Field(str, "what to ask the person"),
            "choices": Field(list, "the answers to pick from (buttons in the notebook); omit for free text"),
        },
        description="pause for a person's answer: an approval, a choice or an edit",
    ),
    outputs=("answer", "text", "prompt", "choices"),
)
