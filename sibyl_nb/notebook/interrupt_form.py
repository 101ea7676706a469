"""The notebook face of an interrupt: a form under the run view, answered in place.

A run paused by ``ctx.interrupt`` / ``workflow_orchestration.human_input`` ends its cell with the run
view (state ``interrupted``) and, below it, this form: the question (the payload's ``prompt``, what
the upstream steps produced, the error of a previous answer), one button per choice or a text box
with a *Send* button. Answering calls ``pipe.resume(workflow_id, value=...)`` from the widget's
callback: the same run view (its display id) repaints live while the run goes on, and a run that
asks again shows a fresh form. The magic's ``-o`` variable is updated with the final result.

Buttons need a live kernel (ipywidgets); a saved notebook shows the run view and a static copy of
the question.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

__all__ = ["InterruptForm", "show_interrupt_form"]


def _question_html(payload: Any, node_id: str) -> str:
    if isinstance(payload, dict):
        prompt = str(payload.get("prompt") or payload.get("question") or "")
        upstream = payload.get("upstream") or {}
        error = payload.get("error")
        extra = {
            k: v
            for k, v in payload.items()
            if k not in ("prompt", "question", "choices", "upstream", "error")
        }
    else:
        prompt, upstream, error, extra = ("" if payload is None else str(payload)), {}, None, {}
    parts = [
        f"<div class='sibyl-interrupt-prompt'><b>{html.escape(node_id)}</b> asks: {html.escape(prompt)}</div>"
    ]
    for nid, text in upstream.items():
        parts.append(
            f"<details class='sibyl-interrupt-upstream' open><summary>{html.escape(str(nid))}</summary>"
            f"<div style='white-space:pre-wrap'>{html.escape(str(text))}</div></details>"
        )
    if extra:
        parts.append(
            f"<pre class='sibyl-interrupt-payload'>{html.escape(json.dumps(extra, indent=1, default=str))}</pre>"
        )
    if error:
        parts.append(f"<div class='sibyl-interrupt-error' style='color:#b00'>{html.escape(str(error))}</div>")
    return "".join(parts)


def _choices(payload: Any) -> list[Any] | None:
    if isinstance(payload, dict) and isinstance(payload.get("choices"), list) and payload["choices"]:
        return list(payload["choices"])
    return None


class InterruptForm:
    """The form for one paused run; ``answer(value)`` is what a button click does (tests call it too)."""

    def __init__(
        self,
        pipeline: Any,
        result: Any,
        live: Any,
        *,
        on_result: Callable[[Any], None] | None = None,
    ) -> None:
        import ipywidgets as w

        self.pipeline = pipeline
        self.live = live
        self.on_result = on_result
        self.result = result
        self.box = w.VBox(layout=w.Layout(border="1px solid #d0a000", padding="6px", margin="4px 0"))
        self.box.add_class("sibyl-interrupt-form")
        self._build(result)

    def _build(self, result: Any) -> None:
        import ipywidgets as w

        info = result.interrupt
        payload = info.payload
        question = w.HTML(_question_html(payload, info.node_id))
        choices = _choices(payload)
        self.status = w.HTML("")
        if choices:
            buttons = []
            for choice in choices:
                b = w.Button(description=str(choice), tooltip=f"answer {choice!r}")
                b.add_class("sibyl-interrupt-choice")
                b.on_click(lambda _b, c=choice: self.answer(c))
                buttons.append(b)
            self.controls: list[Any] = buttons
            row = w.HBox(buttons)
        else:
            text = w.Textarea(placeholder="your answer", layout=w.Layout(width="60%"))
            text.add_class("sibyl-interrupt-text")
            send = w.Button(description="Send", button_style="primary")
            send.add_class("sibyl-interrupt-send")
            send.on_click(lambda _b: self.answer(text.value))
            self.controls = [text, send]
            row = w.HBox([text, send])
        self.box.children = [question, row, self.status]

    def answer(self, value: Any) -> Any:
        """Resume the paused run with ``value``, repainting the run view in place; returns the result."""
        for c in self.controls:
            c.disabled = True
        self.status.value = f"<i>resuming with {html.escape(repr(value))}…</i>"
        workflow_id = self.result.interrupt.workflow_id or self.result.workflow_id
        try:
            result = resume_live(self.live, workflow_id, value)
        except Exception as exc:  # shown in the form; the cell that made it has finished long ago
            self.status.value = (
                f"<span style='color:#b00'>{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>"
            )
            for c in self.controls:
                c.disabled = False
            return None
        self.result = result
        if self.on_result is not None:
            self.on_result(result)
        if result.interrupt is not None:  # it asks again: a new form in the same place
            self._build(result)
        else:
            self.status.value = f"answered {html.escape(repr(value))} · run {html.escape(result.stopped_by)}"
        return result


def resume_live(live: Any, workflow_id: str, value: Any) -> Any:
    """``pipe.resume(workflow_id, value=)`` under ``live``'s run view (same display, repainted live)."""
    from ..engine.sync import run_in_thread
    from .live import RunView, following

    pipeline = live.pipeline
    live.view = RunView(pipeline.graph, pipeline.name)
    result = run_in_thread(
        following(live.view, lambda: pipeline.resume(workflow_id, value=value)),
        tick=live._tick if live.live else None,
        interval=min(live.interval, 0.05),
    )
    live.view.load_result(result)
    live._publish()
    return result


def show_interrupt_form(
    pipeline: Any, result: Any, live: Any, *, on_result: Callable[[Any], None] | None = None
) -> InterruptForm:
    """Display the form for ``result`` (a run with ``result.interrupt``) below its run view."""
    from IPython.display import display

    form = InterruptForm(pipeline, result, live, on_result=on_result)
    display(form.box)
    return form
