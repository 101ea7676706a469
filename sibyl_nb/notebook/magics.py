"""``%%sibyl_pipeline`` / ``%sibyl_pipeline``: define, run, save and complete pipelines from cells.

Why these choices (JupySQL's and Hamilton's magics are the baseline):

* The cell body is the user's own code, so it is loaded with ``trust_code=True``; a ``--file`` is
  trusted only with ``--trust``. Techniques registered in earlier cells are found (global registry).
* Errors fail the cell with one line: every problem is a :class:`SibylError` (it has
  ``_render_traceback_``), never ``UsageError`` — nbclient and papermill count a ``UsageError`` as a
  pass. An error inside a technique keeps its own traceback: ``%tb`` shows it (the technique's
  frames first, engine frames hidden), and ``%config SibylMagic.short_errors = False`` shows it
  at once, like JupySQL's ``short_errors``.
* ``$var`` and ``{var}`` are expanded by the magic itself, not by IPython: IPython's expansion gives
  up on a whole line as soon as it meets JSON braces. Names are looked up in the notebook
  namespace only (never evaluated); inside a JSON string the value's text is inserted, elsewhere
  its JSON.
* The magic returns the :class:`RunResult` (``r = %sibyl_pipeline ...``); the run view it displayed is
  not displayed a second time as the cell's value.
* Options live on a traitlets ``Configurable`` (``%config SibylMagic.show = "graph,steps"``),
  validated when set; pipelines defined by cells survive ``%reload_ext`` (kept on the shell).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import keyword
import re
import types
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Float, Int, TraitError, Unicode, validate

from ..errors import SibylError
from .render import parse_show
from .shell import KEEP, get_magic, instance, pipelines

__all__ = [
    "SibylMagic",
    "SibylMagicError",
    "get_magic",
    "pipelines",
    "get_pipeline",
    "expand_vars",
    "load_ipython_extension",
    "unload_ipython_extension",
]

CELL_SOURCE = "cell"
_MISSING = object()
_PKG = str(Path(__file__).resolve().parent.parent)


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
        help="Display the run view in the cell (False: show nothing; the magic still returns the result).",
    ).tag(config=True)
    live = Bool(True, help="Repaint the run view while the run goes on (False: one view when it ends).").tag(
        config=True
    )
    interval = Float(0.15, min=0.02, help="Minimum seconds between two live repaints.").tag(config=True)
    preview_width = Int(120, min=8, help="Characters of each step output shown in the step table.").tag(
        config=True
    )
    short_errors = Bool(
        True,
        help="An error inside a technique shows one line (%tb shows its traceback). "
        "False: show the technique's traceback (its own frames first) at once.",
    ).tag(config=True)

    @validate("show")
    def _check_show(self, proposal: Any) -> str:
        try:
            parse_show(proposal["value"])
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        _drop_invalid_config(shell)
        super().__init__(shell=shell, **kwargs)
        kept = getattr(shell, KEEP, None) if shell is not None else None
        if kept is None:
            kept = {"pipelines": {}, "last_defined": None}
            if shell is not None:
                setattr(shell, KEEP, kept)
        self._kept = kept
        self.last_result: Any = None
        # id of a result/pipeline whose view this magic displayed -> the execution count it did so in
        self._shown: dict[int, Any] = {}

    @property
    def pipelines(self) -> dict[str, Any]:
        """Pipelines defined by cells, by name (kept across ``%reload_ext``)."""
        return self._kept["pipelines"]

    @property
    def last_defined(self) -> str | None:
        return self._kept["last_defined"]

    @last_defined.setter
    def last_defined(self, value: str | None) -> None:
        self._kept["last_defined"] = value

    # ------------------------------------------------------------------ the magic
    @magic_arguments()
    @argument("name", nargs="?", default=None, help="Pipeline to run (same as --pipeline).")
    @argument(
        "-p",
        "--pipeline",
        default=None,
        help="Pipeline name: one of the cell's (or the file's) pipelines, or (line form) one defined in an "
        "earlier cell or a Pipeline variable. Line form without a name: the last one defined.",
    )
    @argument(
        "-i",
        "--input",
        default=None,
        help="The run's input: a variable in the notebook namespace, or inline JSON "
        '(quote it: -i \'{"query": "$question"}\'; $var and {var} are expanded).',
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
    @argument(
        "-f", "--file", default=None, help="Load the pipelines from this YAML file instead of the cell."
    )
    @argument("--trust", action="store_true", help="With --file: allow the file's builder_code to run.")
    @argument("--save", default=None, help="Write the cell's YAML document to this file (and still run it).")
    @argument("--dry-run", action="store_true", help="Validate and draw the graph; do not execute.")
    @argument("--no-cache", action="store_true", help="Run without the step cache.")
    @argument("-h", "--help", action="store_true", help="Show this help.")
    @no_var_expand
    @line_cell_magic
    def sibyl_pipeline(self, line: str = "", cell: str | None = None) -> Any:
        """Define (cell form: the body is YAML) and run a sibyl_nb pipeline; returns the RunResult.

        Cell form: the body is a whole document (``pipelines: ...``) or one pipeline (``steps: ...``);
        every pipeline in it is remembered by name. With one pipeline, or ``-p NAME``, it runs.
        Line form: ``%sibyl_pipeline NAME -i input`` runs a pipeline defined earlier;
        ``%sibyl_pipeline --file pipelines.yaml -p NAME -i input`` runs one from a file.
        """
        args = self._parse(line)
        if args.help:
            doc = self.sibyl_pipeline.__doc__ or ""
            print("\n".join(line for line in doc.splitlines() if line.strip() != "::").strip())
            return None
        name = args.pipeline or args.name
        if args.pipeline and args.name and args.pipeline != args.name:
            raise SibylMagicError(f"two pipeline names given: '{args.name}' and --pipeline '{args.pipeline}'")
        try:
            show = parse_show(args.show if args.show is not None else self.show)
        except ValueError as exc:
            raise SibylMagicError(str(exc)) from None
        if not self.autodisplay:
            show = ()
        if args.file is not None and cell is not None and cell.strip():
            raise SibylMagicError("--file and a cell body both give a document: use one of them")
        if args.save is not None and cell is None:
            raise SibylMagicError("--save writes the cell's document: use it on a %%sibyl_pipeline cell")
        if args.file is not None:
            pipeline = self._define_file(args.file, name, trusted=args.trust)
            where = args.file
        elif cell is not None:
            if args.save is not None:
                self._save(cell, args.save)
            pipeline = self._define(cell, name)
            where = CELL_SOURCE
        else:
            pipeline = self._lookup(name)
            where = getattr(pipeline, "_sibyl_cell", None)
        if pipeline is None:
            return None
        if args.dry_run:
            return self._dry_run(pipeline, args.output, show)
        inputs = self._inputs(args.input)
        run_pipeline = _without_cache(pipeline) if args.no_cache else pipeline
        try:
            return self._execute(
                run_pipeline, pipeline, inputs, session=args.session, show=show, output=args.output
            )
        except SibylError as exc:
            if where and exc.line is not None and exc.source is None:
                exc = _in_cell(exc, where)
            self._decorate(exc)
            raise exc from None

    # ------------------------------------------------------------------ steps
    def _parse(self, line: str) -> Any:
        try:
            args = parse_argstring(self.sibyl_pipeline, line)
        except UsageError as exc:  # never let a UsageError out: runners count it as a pass
            raise SibylMagicError(f"%%sibyl_pipeline: {exc}") from None
        except ValueError as exc:  # unbalanced quotes in the flags
            raise SibylMagicError(f"%%sibyl_pipeline: cannot parse the flags: {exc}") from None
        # IPython splits magic lines non-POSIX: quotes stay on the values; take them off here.
        ns = self.shell.user_ns if self.shell is not None else {}
        for key in ("name", "pipeline", "session", "show", "output", "file", "save"):
            value = getattr(args, key)
            if isinstance(value, str):
                setattr(args, key, expand_vars(_unquote(value)[0], ns))
        return args

    def _define(self, cell: str, name: str | None) -> Any:
        from ..pipeline import load_document

        if not cell.strip():
            raise SibylMagicError(
                "the cell is empty: write a pipeline (steps: ...) or a document (pipelines: ...)"
            )
        try:
            document = load_document("\n" + cell, trust_code=True)
        except SibylError as exc:
            raise _in_cell(exc) from None
        count = getattr(self.shell, "execution_count", None)
        return self._remember(document, name, f"cell In[{count}]" if count else None, trusted=True)

    def _define_file(self, path: str, name: str | None, *, trusted: bool) -> Any:
        from ..pipeline import load_document

        file = Path(path).expanduser()
        if not file.is_file():
            raise SibylMagicError(f"--file {path}: no such file")
        document = load_document(file, trust_code=trusted)
        return self._remember(document, name, None, trusted=trusted)

    def _remember(self, document: Any, name: str | None, where: str | None, *, trusted: bool) -> Any:
        from ..pipeline import Pipeline

        names = list(document.pipelines)
        defined: dict[str, Any] = {}
        try:
            if names == ["pipeline"]:  # a bare ``steps:`` document: one anonymous pipeline
                defined[name or "pipeline"] = Pipeline.from_document(document, None, trusted=trusted)
            else:
                for n in names:
                    defined[n] = Pipeline.from_document(document, n, trusted=trusted)
        except SibylError as exc:
            raise _in_cell(exc) from None
        for p in defined.values():
            p._sibyl_cell = where  # where line numbers point later
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
            from ..document.schema import did_you_mean

            raise SibylMagicError(
                f"the document defines no pipeline '{name}'{did_you_mean(name, list(defined))} "
                f"(it defines: {', '.join(defined)})"
            )
        self.last_defined = name
        return defined[name]

    def _save(self, cell: str, path: str) -> None:
        target = Path(path).expanduser()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cell if cell.endswith("\n") else cell + "\n", encoding="utf-8")
        except OSError as exc:
            raise SibylMagicError(f"--save {path}: {exc.strerror or exc}") from None

    def _lookup(self, name: str | None) -> Any:
        from ..pipeline import Pipeline

        if name is None:
            if self.last_defined is None:
                raise SibylMagicError(
                    "no pipeline defined yet: define one in a %%sibyl_pipeline cell, or name a Pipeline variable"
                )
            name = self.last_defined
        if name in self.pipelines:
            return self.pipelines[name]
        value = (self.shell.user_ns if self.shell is not None else {}).get(name)
        if isinstance(value, Pipeline):
            return value
        from ..document.schema import did_you_mean

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
        text = expand_vars(text, ns, json_context=text.lstrip().startswith(("{", "[")))
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if quoted and not text.lstrip().startswith(("{", "[")):
                return text  # -i "What is Python?": a quoted plain string is the input itself
            raise SibylMagicError(
                f"--input is neither a variable name nor valid JSON: {exc.msg} at column {exc.colno} in {text!r}"
            ) from None

    def _dry_run(self, pipeline: Any, output: str | None, show: tuple[str, ...]) -> Any:
        if output:
            assert self.shell is not None  # a cell magic runs inside an IPython shell
            self.shell.user_ns[output] = pipeline
        if show:
            from IPython.display import HTML, display

            from .render import pipeline_html

            display(HTML(pipeline_html(pipeline)))
        self._mark_shown(pipeline)
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
        from .live import LiveRun

        kwargs: dict[str, Any] = {}
        if session is not None:
            kwargs["session_id"] = session
        live = LiveRun(
            run_pipeline,
            show=show,
            live=self.live,
            interval=self.interval,
            display=bool(show),
            title=f"sibyl · {pipeline.name}",
            preview_width=self.preview_width,
        )
        try:
            result = live.run(inputs, **kwargs)
        except SibylError as exc:
            partial = getattr(exc, "result", None)
            if partial is not None:
                self._store(pipeline, partial, output)
            raise
        self._store(pipeline, result, output)
        if getattr(result, "interrupt", None) is not None and show:
            from .interrupt_form import show_interrupt_form

            show_interrupt_form(
                run_pipeline, result, live, on_result=lambda r: self._store(pipeline, r, output)
            )
        return result

    def _store(self, pipeline: Any, result: Any, output: str | None) -> None:
        self.last_result = result
        pipeline.last_result = result
        self._mark_shown(result)
        if output:
            assert self.shell is not None  # a cell magic runs inside an IPython shell
            self.shell.user_ns[output] = result

    def _decorate(self, exc: SibylError) -> None:
        """Give ``exc`` the technique's traceback: shown at once, or by ``%tb`` (see the module doc)."""
        cause = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(cause, BaseException) or cause.__traceback__ is None:
            return
        short = self.short_errors
        shell = self.shell
        calls = {"n": 0}

        def render() -> list[str]:
            calls["n"] += 1
            head = exc._render() if hasattr(exc, "_render") else str(exc)
            if short and calls["n"] == 1:
                return [head]
            return [head, *technique_traceback(cause, shell)]

        exc._render_traceback_ = render  # type: ignore[method-assign]

    def _say(self, text: str) -> None:
        print(text)

    # ------------------------------------------------------------------ display of returned values
    def _mark_shown(self, obj: Any) -> None:
        self._shown = {id(obj): getattr(self.shell, "execution_count", None)}

    def already_shown(self, obj: Any) -> bool:
        """True once, in the cell that ran the magic, for the object whose view it displayed: the
        cell's value (``r = %sibyl_pipeline ...`` as the last line) is then not shown a second time."""
        count = self._shown.pop(id(obj), _MISSING)
        return count is not _MISSING and count == getattr(self.shell, "execution_count", None)


def _drop_invalid_config(shell: Any) -> None:
    """Forget ``SibylMagic`` settings that failed validation: ``%config`` keeps a refused value in the
    shell's config, and a later ``%reload_ext`` would fail on it."""
    config = getattr(shell, "config", None)
    if config is None or "SibylMagic" not in config:
        return
    section = config["SibylMagic"]
    probe = SibylMagic.__new__(SibylMagic)
    for key in list(section):
        trait = SibylMagic.class_traits().get(key)
        if trait is None:
            continue
        try:
            trait._validate(probe, section[key]) if key != "show" else parse_show(section[key])
        except (TraitError, ValueError, TypeError):
            del section[key]


def technique_traceback(cause: BaseException, shell: Any = None) -> list[str]:
    """The traceback of ``cause`` with sibyl_nb's own frames taken out: the user's code is what is left."""
    tb = cause.__traceback__
    frames = []
    hidden = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_PKG):
            hidden += 1
        else:
            frames.append(tb)
        tb = tb.tb_next
    new_tb = None
    for t in reversed(frames):
        new_tb = types.TracebackType(new_tb, t.tb_frame, t.tb_lasti, t.tb_lineno)
    note = f"({hidden} sibyl_nb engine frame{'s' if hidden != 1 else ''} hidden)"
    if shell is not None and getattr(shell, "InteractiveTB", None) is not None:
        lines = shell.InteractiveTB.structured_traceback(type(cause), cause, new_tb)
        return ["The technique's traceback " + note + ":", *lines]
    import traceback

    text = "".join(traceback.format_exception(type(cause), cause, new_tb))
    return ["The technique's traceback " + note + ":", *text.rstrip("\n").split("\n")]


_VAR = re.compile(r"\$\$|\$([A-Za-z_]\w*)|\{([A-Za-z_]\w*)\}")


def expand_vars(text: str, ns: dict[str, Any], *, json_context: bool = False) -> str:
    """Replace ``$name`` and ``{name}`` by notebook variables (looked up, never evaluated); ``$$`` is ``$``.

    With ``json_context``: inside a JSON string the value's text is inserted escaped; outside a
    string the value's JSON. An unknown name is an error naming it.
    """
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(text):
        ch = text[i]
        if json_context and ch == "\\" and in_string:
            out.append(text[i : i + 2])
            i += 2
            continue
        if json_context and ch == '"':
            in_string = not in_string
            out.append(ch)
            i += 1
            continue
        m = _VAR.match(text, i)
        if m is None:
            out.append(ch)
            i += 1
            continue
        if m.group(0) == "$$":
            out.append("$")
        else:
            name = m.group(1) or m.group(2)
            if name not in ns:
                raise SibylMagicError(f"'{m.group(0)}': no variable '{name}' in the notebook")
            value = ns[name]
            if not json_context:
                out.append(str(value))
            elif in_string:
                out.append(json.dumps(str(value))[1:-1])
            else:
                out.append(json.dumps(value, default=str))
        i = m.end()
    return "".join(out)


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
def load_ipython_extension(ipython: Any) -> None:
    """Register the magic (``%config SibylMagic`` works through ``Magics.__init__``), displays, completion."""
    from .completion import install_completer
    from .display import register_formatters

    old = instance(ipython)
    if old is not None:
        unload_ipython_extension(ipython)
    magic = SibylMagic(shell=ipython)
    ipython.register_magics(magic)
    ipython._sibyl_nb_magic = magic  # shell.py: get_magic reads it
    register_formatters(ipython)
    install_completer(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magic; the pipelines cells defined stay on the shell for the next load."""
    from .completion import remove_completer

    magic = instance(ipython)
    if magic is None:
        return
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("sibyl_pipeline", None)
    if magic in getattr(ipython, "configurables", []):
        ipython.configurables.remove(magic)
    ipython._sibyl_nb_magic = None
    remove_completer(ipython)


def get_pipeline(name: str, ipython: Any = None) -> Any:
    """The :class:`Pipeline` a ``%%sibyl_pipeline`` cell defined under ``name``."""
    known = pipelines(ipython)
    if name in known:
        return known[name]
    from ..document.schema import did_you_mean

    raise SibylMagicError(
        f"no pipeline named '{name}'{did_you_mean(name, sorted(known))} "
        f"(defined: {', '.join(sorted(known)) or 'none'})"
    )
