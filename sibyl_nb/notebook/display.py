"""Rich display of sibyl_nb objects, hooked into IPython from the notebook layer.

Why here and not as ``_repr_html_`` methods: the engine must not know about notebooks (it never
imports IPython or this package). So the notebook layer registers IPython display formatters for
``RunResult`` and ``Pipeline`` *by name* — nothing is imported until an object is displayed.
``register_formatters`` runs on ``%load_ext sibyl_nb`` and, through ``sibyl_nb.__init__``, as soon
as ``sibyl_nb`` is imported inside a running IPython.

A result the magic already displayed as its run view is not displayed again as the cell's value
(``r = %sibyl_pipeline ...`` as the last line shows one view, not two).
"""

from __future__ import annotations

from typing import Any

__all__ = ["register_formatters", "result_bundle"]

_RESULT = ("sibyl_nb.engine.result", "RunResult")
_PIPELINE = ("sibyl_nb.pipeline", "Pipeline")


def _result_html(result: Any) -> str:
    from .render import result_html
    from .shell import get_magic

    magic = get_magic()
    width = magic.preview_width if magic is not None else 120
    return result_html(result, preview_width=width)


def _pipeline_html(pipeline: Any) -> str:
    from .render import pipeline_html

    return pipeline_html(pipeline)


def _skip_shown(obj: Any) -> bool:
    """IPython-display hook: True (= handled, show nothing) for what the magic displayed already."""
    from .shell import get_magic

    magic = get_magic()
    if magic is not None and magic.already_shown(obj):
        return True
    from IPython.display import display

    display(result_bundle(obj), raw=True)
    return True


def result_bundle(obj: Any) -> dict[str, Any]:
    """The mimebundle of a displayed object: its plain repr and its static HTML."""
    html = _result_html(obj) if obj.__class__.__name__ == "RunResult" else _pipeline_html(obj)
    return {"text/plain": repr(obj), "text/html": html}


def register_formatters(ipython: Any) -> None:
    """Register the HTML views of ``RunResult`` and ``Pipeline`` on ``ipython`` (idempotent)."""
    if ipython is None or getattr(ipython, "display_formatter", None) is None:
        return
    formatters = ipython.display_formatter.formatters
    html = formatters.get("text/html")
    if html is not None:
        html.for_type_by_name(*_RESULT, _result_html)
        html.for_type_by_name(*_PIPELINE, _pipeline_html)
    hook = getattr(ipython.display_formatter, "ipython_display_formatter", None)
    if hook is not None:
        hook.for_type_by_name(*_RESULT, _skip_shown)
        hook.for_type_by_name(*_PIPELINE, _skip_shown)
