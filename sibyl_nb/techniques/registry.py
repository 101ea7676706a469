"""The technique registry: ``shop.name`` -> a plain callable, sync or async.

Techniques declare what the loader can check before a run (subtechniques, config types, output
fields) and how the scheduler may call them (``blocking``: a sync technique that may block is sent
to a thread when it has siblings to overlap with; a non-blocking one always runs inline).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..document.schema import ConfigSchema, as_schema
from ..errors import ConfigError, UnknownTechniqueError

__all__ = [
    "TechniqueInfo",
    "technique",
    "register_technique",
    "get_technique",
    "has_technique",
    "registered_techniques",
    "unregister_technique",
    "registry_version",
]


@dataclass(slots=True)
class TechniqueInfo:
    """What the registry knows about one technique."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    blocking: bool
    subtechniques: tuple[str, ...] | None = None
    config_schema: ConfigSchema = field(default_factory=lambda: as_schema(None))
    outputs: tuple[str, ...] | None = None
    # The exact output fields for one config (``ai_generation.generation``'s label field is named by
    # its prompt); the loader checks ``${node.field}`` against it. None: ``outputs`` is the answer.
    outputs_for: Callable[[dict[str, Any]], Iterable[str] | None] | None = None
    doc: str = ""
    # Engine-level techniques (graph, orchestration) compile into the graph instead of being called.
    compiles: bool = False


_REGISTRY: dict[str, TechniqueInfo] = {}
_VERSION = [0]  # bumped on every change, so a caller may cache what it derived from the registry


def registry_version() -> int:
    """A number that changes whenever a technique is registered, replaced or removed."""
    return _VERSION[0]


_BUILTINS = "sibyl_nb.techniques.builtins."
# Where each built-in technique is registered. A module is imported on the first lookup of one of its
# names, so a pipeline of user techniques (or one RAG step) loads none (or one) of the others: loading
# them all cost ~57 ms of a 184 ms cold start. tests/test_registry_lazy.py checks this table against
# what the modules register.
BUILTIN_MODULES: dict[str, str] = {
    "ai_generation.consensus": _BUILTINS + "ai_generation",
    "ai_generation.generation": _BUILTINS + "ai_generation",
    "ai_generation.validation": _BUILTINS + "ai_generation",
    "data.load_documents": _BUILTINS + "data",
    "data.store_vectors": _BUILTINS + "data",
    "external.web_search": _BUILTINS + "external",
    "rag.chunking": _BUILTINS + "rag",
    "rag.embedding": _BUILTINS + "rag",
    "rag.query_processing": _BUILTINS + "rag",
    "rag.ranking": _BUILTINS + "rag",
    "rag.reranking": _BUILTINS + "rag",
    "rag.retrieval": _BUILTINS + "rag",
    "rag.search": _BUILTINS + "rag",
    "workflow_orchestration.context_management": "sibyl_nb.context.technique",
    "workflow_orchestration.graph": _BUILTINS + "workflow",
    "workflow_orchestration.human_input": _BUILTINS + "workflow",
    "workflow_orchestration.orchestration": _BUILTINS + "workflow",
    "workflow_orchestration.passthrough": _BUILTINS + "workflow",
    "workflow_orchestration.session_management": "sibyl_nb.sessions.technique",
    "workflow_orchestration.state_management": "sibyl_nb.state.technique",
}
_LOADED: set[str] = set()  # built-in modules imported so far


def _load_builtin(module: str) -> None:
    """Import one built-in module; a user's registration of one of its names (made first) stays."""
    if module in _LOADED:
        return
    _LOADED.add(module)
    mine = {n: _REGISTRY[n] for n, m in BUILTIN_MODULES.items() if m == module and n in _REGISTRY}
    importlib.import_module(module)
    _REGISTRY.update(mine)
    _VERSION[0] += 1


def _load_all_builtins() -> None:
    for module in dict.fromkeys(BUILTIN_MODULES.values()):
        _load_builtin(module)


def _lookup(name: str) -> TechniqueInfo | None:
    info = _REGISTRY.get(name)
    if info is None and name in BUILTIN_MODULES:
        _load_builtin(BUILTIN_MODULES[name])
        info = _REGISTRY.get(name)
    return info


def register_technique(
    name: str,
    fn: Callable[..., Any],
    *,
    blocking: bool | None = None,
    subtechniques: Iterable[str] | None = None,
    config_schema: ConfigSchema | dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    outputs_for: Callable[[dict[str, Any]], Iterable[str] | None] | None = None,
    compiles: bool = False,
) -> TechniqueInfo:
    """Register ``fn`` under ``name`` (``shop.technique``); re-registering replaces (notebook cells re-run)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"technique name must be a non-empty string, got {name!r}")
    # an instance with ``async def __call__`` is async too
    call = type(fn).__call__ if not inspect.isfunction(fn) and not inspect.ismethod(fn) else None
    is_async = inspect.iscoroutinefunction(fn) or (call is not None and inspect.iscoroutinefunction(call))
    schema = as_schema(config_schema)
    if subtechniques is None and schema.subtechniques is not None:
        subtechniques = tuple(schema.subtechniques)  # a schema's modes are the names the loader accepts
    info = TechniqueInfo(
        name=name,
        fn=fn,
        is_async=is_async,
        # Unknown sync user code may block (HTTP, sleep): default to "blocking" so siblings overlap.
        blocking=(not is_async) if blocking is None else bool(blocking),
        subtechniques=tuple(subtechniques) if subtechniques is not None else None,
        config_schema=schema,
        outputs=tuple(outputs) if outputs is not None else None,
        outputs_for=outputs_for,
        doc=(inspect.getdoc(fn) or "").split("\n\n")[0],
        compiles=compiles,
    )
    _REGISTRY[name] = info
    _VERSION[0] += 1
    return info


def technique(
    name: str,
    *,
    blocking: bool | None = None,
    subtechniques: Iterable[str] | None = None,
    config_schema: ConfigSchema | dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    outputs_for: Callable[[dict[str, Any]], Iterable[str] | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@sibyl_nb.technique("my_shop.shout")`` registers a function taking ``ctx``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        register_technique(
            name,
            fn,
            blocking=blocking,
            subtechniques=subtechniques,
            config_schema=config_schema,
            outputs=outputs,
            outputs_for=outputs_for,
        )
        return fn

    return decorate


def unregister_technique(name: str) -> None:
    if name in BUILTIN_MODULES:  # load it first, or a later lookup would bring it back
        _load_builtin(BUILTIN_MODULES[name])
    _REGISTRY.pop(name, None)
    _VERSION[0] += 1


def has_technique(name: str) -> bool:
    return name in _REGISTRY or name in BUILTIN_MODULES


def get_technique(name: str) -> TechniqueInfo:
    """Look a technique up; an unknown name raises with a "did you mean" suggestion."""
    info = _lookup(name)
    if info is not None:
        return info
    import difflib

    known = sorted(set(_REGISTRY) | set(BUILTIN_MODULES))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UnknownTechniqueError(f"unknown technique '{name}'{hint}", technique=name)


def registered_techniques() -> dict[str, TechniqueInfo]:
    """Every technique, built-ins included (this one imports them all)."""
    _load_all_builtins()
    return dict(_REGISTRY)
