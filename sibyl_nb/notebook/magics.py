"""``%%sibyl_pipeline`` / ``%sibyl_pipeline``: define and run pipelines from notebook cells.

Why these choices:

* The cell body is the user's own code, so it is loaded with ``trust_code=True`` (``builder_code``
  may run). Techniques registered in earlier cells are found because the registry is global.
* Errors fail the cell with one line: every problem is raised as a :class:`SibylError` (which has
  ``_render_traceback_``), never ``UsageError`` — notebook runners (nbclient, papermill) count a
  ``UsageError`` as a pass. Bad flags are re-raised the same way.
* Cell YAML line numbers are the cell's own: the body is parsed with one blank line in front, so
  line 2 is the first line under ``%%sibyl_pipeline`` — what Jupyter's line numbers show.
* Options live on a traitlets ``Configurable`` (``%config SibylMagic.show = "graph,steps"``), the
  JupySQL way, so they can also be set in ``ipython_config.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import keyword
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Float, Int, Unicode

from ..errors import SibylError
from .render import parse_show

__all__ = ["SibylMagic", "SibylMagicError", "get_magic", "load_ipython_extension", "unload_ipython_extension"]

CELL_SOURCE = "cell"


class SibylMagicError(SibylError):
    """A ``%%sibyl_pipeline`` usage problem (bad flag, unknown pipeline or variable)."""


@magics_class
class SibylMagic(Magics):
    """Run sibyl_nb pipelines from cells. Configure with ``%config SibylMagic.<option> = value``."""

    show = Unicode(
        "graph,tokens,steps",
        help="Default views for --show: a comma list of graph, tokens, steps (or all / none).",
    ).tag(config=True)
    autodisplay = Bool(
        True,
        help="Display the run view in the cell. False: no display; the magic returns the RunResult instead.",
    ).tag(config=True)
    widget = Bool(
        True,
        help="Use the live ipywidgets view. False: one static HTML output after the "
        "run (for front ends without a widget manager).",
    ).tag(config=True)
    live = Bool(True, help="Repaint the widget while the run goes on (False: paint once at the end).").tag(
        config=True
    )
    interval = Float(0.15, help="Minimum seconds between two live repaints.").tag(config=True)
    preview_width = Int(120, help="Characters of each step output shown in the step table.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.pipelines: dict[str, Any] = {}
        self.last_defined: str | None = None
        self.last_result: Any = None

    # ------------------------------------------------------------------ the magic
    @magic_arguments()
    @argument("name", nargs="?", default=None, help="Pipeline to run (same as --pipeline).")
    @argument(
        "-p",
        "--pipeline",
        default=None,
        help="Pipeline name: one of the cell's pipelines, or (line form) one defined in an earlier "
        "cell or a Pipeline variable. Line form without a name: the last one defined.",
    )
    @argument(
        "-i",
        "--input",
        default=None,
        help="The run's input: a variable in the notebook namespace, or inline JSON "
        '(quote it: -i \'{"query": "What is Python?"}\').',
    )
    @argument("-s", "--session", default=None, help="Session id (adds session_id to the input).")
    @argument(
        "--show",
        default=None,
        help="What to show: comma list of graph, tokens, steps (all / none). Default: SibylMagic.show.",
    )
    @argument(
        "-o", "--output", default=None, help="Store the RunResult (dry run: the Pipeline) in this variable."
    )
    @argument("--dry-run", action="store_true", help="Validate and draw the graph; do not execute.")
    @argument("--no-cache", action="store_true", help="Run without the step cache.")
    @line_cell_magic
    def sibyl_pipeline(self, line: str = "", cell: str | None = None) -> Any:
        """Define (cell form: the body is YAML) and run a sibyl_nb pipeline.

        Cell form: the body is a whole document (``pipelines: ...``) or one pipeline (``steps: ...``);
        every pipeline in it is remembered by name. With one pipeline, or ``-p NAME``, it runs.
        Line form: ``%sibyl_pipeline NAME -i input`` runs a pipeline defined earlier.
        """
        args = self._parse(line)
        name = args.pipeline or args.name
        if args.pipeline and args.name and args.pipeline != args.name:
            raise SibylMagicError(f"two pipeline names given: '{args.name}' and --pipeline '{args.pipeline}'")
        try:
            show = parse_show(args.show if args.show is not None else self.show)
        except ValueError as exc:
            raise SibylMagicError(str(exc)) from None
        if cell is not None:
            pipeline = self._define(cell, name)
            if pipeline is None:
                return None
            where = CELL_SOURCE
        else:
            pipeline = self._lookup(name)
            where = getattr(pipeline, "_sibyl_cell", None)
        if args.dry_run:
            return self._dry_run(pipeline, args.output)
        inputs = self._inputs(args.input)
        run_pipeline = _without_cache(pipeline) if args.no_cache else pipeline
        try:
            return self._execute(
                run_pipeline, pipeline, inputs, session=args.session, show=show, output=args.output
            )
        except SibylError as exc:
            if where and exc.line is not None and exc.source is None:
                raise _in_cell(exc, where) from None
            raise

    # ------------------------------------------------------------------ steps
    def _parse(self, line: str) -> Any:
        try:
            args = parse_argstring(self.sibyl_pipeline, line)
        except UsageError as exc:  # never let a UsageError out: runners count it as a pass
            raise SibylMagicError(f"%%sibyl_pipeline: {exc}") from None
        except ValueError as exc:  # unbalanced quotes in the flags
            raise SibylMagicError(f"%%sibyl_pipeline: cannot parse the flags: {exc}") from None
        # IPython splits magic lines non-POSIX: quotes stay on the values; take them off here.
        for key in ("name", "pipeline", "session", "show", "output"):
            value = getattr(args, key)
            if isinstance(value, str):
                setattr(args, key, _unquote(value)[0])
        return args

    def _define(self, cell: str, name: str | None) -> Any:
        from ..pipeline import Pipeline, load_document
        from ..spec.compile import Document

        if not cell.strip():
            raise SibylMagicError(
                "the cell is empty: write a pipeline (steps: ...) or a document (pipelines: ...)"
            )
        try:
            document: Document = load_document("\n" + cell, trust_code=True)
        except SibylError as exc:
            raise _in_cell(exc) from None
        names = list(document.pipelines)
        anonymous = names == ["pipeline"]
        defined: dict[str, Any] = {}
        try:
            if anonymous:
                defined[name or "pipeline"] = Pipeline.from_document(document, name, trusted=True)
            else:
                for n in names:
                    defined[n] = Pipeline.from_document(document, n, trusted=True)
        except SibylError as exc:
            raise _in_cell(exc) from None
        count = getattr(self.shell, "execution_count", None)
        for p in defined.values():
            p._sibyl_cell = f"cell In[{count}]" if count else None  # where line numbers point later
        self.pipelines.update(defined)
        if name is None:
            if len(defined) == 1:
                name = next(iter(defined))
            else:
                self.last_defined = names[-1]
                self._say(
                    f"defined pipelines {', '.join(names)}; run one with %sibyl_pipeline NAME "
                    "(or -p NAME in this cell)"
                )
                return None
        if name not in defined:
            from ..spec.schema import did_you_mean

            raise SibylMagicError(
                f"the cell defines no pipeline '{name}'{did_you_mean(name, names)} "
                f"(it defines: {', '.join(names)})"
            )
        self.last_defined = name
        return defined[name]

    def _lookup(self, name: str | None) -> Any:
        from ..pipeline import Pipeline

        if name is None:
            if self.last_defined is None:
                raise SibylMagicError(
                    "no pipeline defined yet: define one in a %%sibyl_pipeline cell, "
                    "or name a Pipeline variable"
                )
            name = self.last_defined
        if name in self.pipelines:
            return self.pipelines[name]
        value = (self.shell.user_ns if self.shell is not None else {}).get(name)
        if isinstance(value, Pipeline):
            return value
        from ..spec.schema import did_you_mean

        known = sorted(self.pipelines)
        raise SibylMagicError(
            f"no pipeline named '{name}'{did_you_mean(name, known)} (defined: {', '.join(known) or 'none'})"
        )

    def _inputs(self, spec: str | None) -> Any:
        if spec is None:
            return None
        ns = self.shell.user_ns if self.shell is not None else {}
        text, quoted = _unquote(spec.strip())
        if (
            not quoted
            and text.isidentifier()
            and not keyword.iskeyword(text)
            and text not in ("true", "false", "null")
        ):
            if text in ns:
                return ns[text]
            raise SibylMagicError(
                f"--input '{text}': no variable with that name in the notebook (and it is not JSON)"
            )
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if quoted and not text.lstrip().startswith(("{", "[")):
                return text  # -i "What is Python?": a quoted plain string is the input itself
            raise SibylMagicError(
                f"--input is neither a variable name nor valid JSON: {exc.msg} at column "
                f"{exc.colno} in {text!r}"
            ) from None

    def _dry_run(self, pipeline: Any, output: str | None) -> Any:
        if output:
            self.shell.user_ns[output] = pipeline
        if self.autodisplay:
            from IPython.display import display

            display(pipeline)
            return None
        return pipeline

    def _execute(
        self,
        run_pipeline: Any,
        pipeline: Any,
        inputs: Any,
        *,
        session: str | None,
        show: tuple[str, ...],
        output: str | None,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if session is not None:
            kwargs["session_id"] = session
        result = None
        try:
            if self.autodisplay and self.widget:
                from .widget import LiveRun

                result = LiveRun(
                    run_pipeline,
                    show=show,
                    live=self.live,
                    interval=self.interval,
                    title=f"sibyl · {pipeline.name}",
                ).run(inputs, **kwargs)
            else:
                from ..engine.sync import run_in_thread

                result = run_in_thread(run_pipeline.execute(inputs, **kwargs))
        except SibylError as exc:
            result = getattr(exc, "result", None)
            if result is not None:
                self._store(pipeline, result, output)
                if self.autodisplay and not self.widget:
                    self._show_static(result, show)
            raise
        self._store(pipeline, result, output)
        if self.autodisplay and not self.widget:
            self._show_static(result, show)
            return None
        return None if self.autodisplay else result

    def _store(self, pipeline: Any, result: Any, output: str | None) -> None:
        self.last_result = result
        pipeline.last_result = result
        if output:
            self.shell.user_ns[output] = result

    def _show_static(self, result: Any, show: tuple[str, ...]) -> None:
        from IPython.display import HTML, display

        from .render import result_html

        display(HTML(result_html(result, show=show)))

    def _say(self, text: str) -> None:
        print(text)


def _unquote(text: str) -> tuple[str, bool]:
    """Strip one pair of matching outer quotes; say whether there were any."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in ("'", '"'):
        return text[1:-1], True
    return text, False


def _in_cell(exc: SibylError, where: str = CELL_SOURCE) -> SibylError:
    """Point a YAML error at the cell: ``cell:5: pipelines.x.steps[0]...``."""
    if exc.source in (None, "<yaml>"):
        exc.source = where
        exc.args = (exc._render(),)
    return exc


def _without_cache(pipeline: Any) -> Any:
    """A shallow copy of ``pipeline`` whose document has step caching switched off.

    Contract with the cache extension: it honours ``document.infrastructure['caching']['enabled']``
    and the ``no_cache`` attribute set here.
    """
    clone = copy.copy(pipeline)
    doc = pipeline.document
    infra = dict(getattr(doc, "infrastructure", {}) or {})
    caching = dict(infra.get("caching") or {})
    caching["enabled"] = False
    infra["caching"] = caching
    clone.document = dataclasses.replace(doc, infrastructure=infra)
    clone.no_cache = True
    return clone


# ---------------------------------------------------------------------- extension entry points
_INSTANCES: dict[int, SibylMagic] = {}


def load_ipython_extension(ipython: Any) -> None:
    """Register the magic and make ``%config SibylMagic`` work (done by ``Magics.__init__``)."""
    magic = SibylMagic(shell=ipython)
    ipython.register_magics(magic)
    _INSTANCES[id(ipython)] = magic


def unload_ipython_extension(ipython: Any) -> None:
    magic = _INSTANCES.pop(id(ipython), None)
    if magic is None:
        return
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("sibyl_pipeline", None)
    if magic in getattr(ipython, "configurables", []):
        ipython.configurables.remove(magic)


def get_magic(ipython: Any) -> SibylMagic | None:
    """The loaded :class:`SibylMagic` of ``ipython`` (tests and notebooks use it to inspect state)."""
    return _INSTANCES.get(id(ipython))
