"""The technique registry: ``shop.name`` -> a plain callable, sync or async.

Techniques declare what the loader can check before a run (subtechniques, config types, output
fields) and how the scheduler may call them (``blocking``: a sync technique that may block is sent
to a thread when it has siblings to overlap with; a non-blocking one always runs inline).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SibylError, UnknownTechniqueError
from ..spec.schema import ConfigSchema, as_schema

__all__ = [
    "TechniqueInfo",
    "technique",
    "register_technique",
    "get_technique",
    "has_technique",
    "registered_techniques",
    "unregister_technique",
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
    outputs_for: Callable[[dict[str, Any]], Iterable[str]] | None = None
    doc: str = ""
    # Engine-level techniques (graph, orchestration) compile into the graph instead of being called.
    compiles: bool = False


_REGISTRY: dict[str, TechniqueInfo] = {}
_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from . import builtins  # noqa: F401  (registers on import)


def register_technique(
    name: str,
    fn: Callable[..., Any],
    *,
    blocking: bool | None = None,
    subtechniques: Iterable[str] | None = None,
    config_schema: ConfigSchema | dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    outputs_for: Callable[[dict[str, Any]], Iterable[str]] | None = None,
    compiles: bool = False,
) -> TechniqueInfo:
    """Register ``fn`` under ``name`` (``shop.technique``); re-registering replaces (notebook cells re-run)."""
    if not isinstance(name, str) or not name:
        raise SibylError(f"technique name must be a non-empty string, got {name!r}")
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
    return info


def technique(
    name: str,
    *,
    blocking: bool | None = None,
    subtechniques: Iterable[str] | None = None,
    config_schema: ConfigSchema | dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    outputs_for: Callable[[dict[str, Any]], Iterable[str]] | None = None,
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
    _REGISTRY.pop(name, None)


def has_technique(name: str) -> bool:
    _ensure_builtins()
    return name in _REGISTRY


def get_technique(name: str) -> TechniqueInfo:
    """Look a technique up; an unknown name raises with a "did you mean" suggestion."""
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownTechniqueError(f"unknown technique '{name}'{hint}", technique=name) from None


def registered_techniques() -> dict[str, TechniqueInfo]:
    _ensure_builtins()
    return dict(_REGISTRY)
