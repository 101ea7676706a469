"""Every error sibyl_nb raises: one hierarchy, each naming *where* (YAML path and line, node, technique, attempt).

Each class also subclasses the built-in exception a user would already catch for that kind of problem, so
``except ValueError`` around a load, or ``except LookupError`` around a resume, does what it says::

    SibylError                                  anything sibyl_nb raises on purpose
    ├── SpecError (ValueError)                  the document is malformed; raised at load, never mid-run
    │   ├── ExpressionError                     a condition / ``${...}`` cannot be parsed or names nothing
    │   ├── YAMLSyntaxError                     the text is not YAML (said as a person would, with the line)
    │   │   └── YAMLEncodingError               not UTF-8, UTF-16, NUL or control characters
    │   ├── YAMLLimitError                      valid YAML refused for size: alias bomb, depth, huge integer
    │   └── UnknownTechniqueError               a technique or subtechnique is not registered
    ├── ConfigError (ValueError)                a setting given from Python is out of range or unknown
    ├── TrustError (PermissionError)            a document asked for code, a server or a file it was not allowed
    ├── TemplateError (LookupError)             a ``${...}`` reference had no value at run time
    ├── CheckpointNotFoundError (LookupError)   no checkpoint to resume for that workflow
    ├── SweepNotFoundError (LookupError)        no stored sweep (or sweep manifest) of that name
    ├── NodeExecutionError (RuntimeError)       a node failed after retries and fallbacks; the run stopped
    ├── TechniqueError (RuntimeError)           a technique refused its input at run time
    ├── ExecutorError (RuntimeError)            the executor (Dask) is missing or unreachable
    ├── ProviderError (RuntimeError)            a model provider failed (HTTP status, bad body, deadline)
    └── StoreError (RuntimeError)               a session / state / cache store failed or is misconfigured
        └── StoreUnavailableError (ConnectionError)   the store's server cannot be reached
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SibylError",
    "SpecError",
    "ExpressionError",
    "YAMLSyntaxError",
    "YAMLEncodingError",
    "YAMLLimitError",
    "TemplateError",
    "UnknownTechniqueError",
    "NodeExecutionError",
    "ProviderError",
    "StoreError",
    "TrustError",
    "ConfigError",
    "CheckpointNotFoundError",
    "SweepNotFoundError",
    "TechniqueError",
    "ExecutorError",
    "StoreUnavailableError",
    "format_location",
]


def short_repr(value: Any, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters, for showing a value inside an error message."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_location(path: str | None, line: int | None, source: str | None = None) -> str:
    """Render ``source:line: path`` with whatever parts are known."""
    parts = []
    if source:
        parts.append(f"{source}:{line}" if line else source)
    elif line:
        parts.append(f"line {line}")
    if path:
        parts.append(path)
    return ": ".join(parts)


class SibylError(Exception):
    """Base class: catch this to catch anything sibyl_nb raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        source: str | None = None,
        node_id: str | None = None,
        technique: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.source = source
        self.node_id = node_id
        self.technique = technique
        super().__init__(self._render())

    def _render(self) -> str:
        where = format_location(self.path, self.line, self.source)
        who = []
        if self.node_id:
            who.append(f"node '{self.node_id}'")
        if self.technique:
            who.append(f"technique {self.technique}")
        head = ", ".join(who)
        prefix = ": ".join(p for p in (where, head) if p)
        return f"{prefix}: {self.message}" if prefix else self.message

    def one_line(self) -> str:
        """The single line a notebook cell shows."""
        return f"{type(self).__name__}: {self._render()}".splitlines()[0]

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a long traceback; the cell still fails.
        return [self.one_line()]


class SpecError(SibylError, ValueError):
    """The pipeline document is malformed: raised at load time, never half-way through a run."""


class ExpressionError(SpecError):
    """A condition or ``${...}`` template cannot be parsed, or refers to something that does not exist."""


class YAMLSyntaxError(SpecError):
    """The document is not valid YAML: the message says what is wrong, at the line of the mistake."""


class YAMLEncodingError(YAMLSyntaxError):
    """The document's bytes or characters cannot be YAML text (not UTF-8, UTF-16, NUL, control characters)."""


class YAMLLimitError(SpecError):
    """Valid YAML refused before it is built: aliases expanding past the limit, recursive aliases,
    nesting too deep, an integer with too many digits, a document too large. Bounds time and memory."""


class TemplateError(SibylError, LookupError):
    """A ``${...}`` reference had no value at run time (missing input, node not run yet...)."""


class UnknownTechniqueError(SpecError):
    """A step names a technique or subtechnique that is not registered."""


class TrustError(SibylError, PermissionError):
    """Code from a document (``builder_code``) was about to run without the caller trusting it."""


class NodeExecutionError(SibylError, RuntimeError):
    """A node failed after its retries and had no fallback; the run stopped.

    ``result`` holds the partial :class:`RunResult` so nothing that already ran is lost.
    """

    def __init__(
        self,
        message: str,
        *,
        node_id: str,
        technique: str,
        attempts: int,
        cause: BaseException | None = None,
        iteration: int = 1,
        result: Any = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.attempts = attempts
        self.cause = cause
        self.iteration = iteration
        self.result = result
        super().__init__(message, node_id=node_id, technique=technique, path=path, line=line)

    def _render(self) -> str:
        base = super()._render()
        return f"{base} (attempt {self.attempts}, iteration {self.iteration})"


class ProviderError(SibylError, RuntimeError):
    """A model provider failed (HTTP error, timeout, bad response)."""

    def __init__(
        self, message: str, *, provider: str | None = None, status: int | None = None, retryable: bool = False
    ) -> None:
        self.provider = provider
        self.status = status
        self.retryable = retryable
        super().__init__(f"provider '{provider}': {message}" if provider else message)


class StoreError(SibylError, RuntimeError):
    """A session/state/cache store failed or was misconfigured (names the backend and URL)."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The store's server (Redis, PostgreSQL) cannot be reached: nothing was read or written."""


class ConfigError(SibylError, ValueError):
    """A setting given from Python (``configure()``, a provider, a replay mode, ``Graph.add_node``) is wrong."""


class CheckpointNotFoundError(SibylError, LookupError):
    """``resume`` found no checkpoint for the workflow id (or it belongs to another pipeline)."""


class TechniqueError(SibylError, RuntimeError):
    """A technique refused its input at run time (an unknown collection, mismatched embeddings...)."""


class ExecutorError(SibylError, RuntimeError):
    """The executor cannot run the graph: Dask is not installed, or its scheduler is unreachable."""


class SweepNotFoundError(SibylError, LookupError):
    """``sb.load_sweep`` / ``df.sibyl`` found no stored sweep (or manifest) under that name."""
