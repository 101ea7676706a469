"""Named providers. ``primary`` and ``fallback`` are names, not kinds: both default to the local provider.

A run may carry its own mapping (from a document's ``providers:`` section) that shadows the global one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .base import Provider

__all__ = [
    "register_provider",
    "get_provider",
    "registered_providers",
    "unregister_provider",
    "register_provider_kind",
    "make_provider",
]

_PROVIDERS: dict[str, Provider] = {}
# kind name -> factory(name, config) for YAML ``providers: {primary: {kind: openai, ...}}``
_KINDS: dict[str, Callable[[str, dict[str, Any]], Provider]] = {}


def _default(name: str) -> Provider | None:
    if name in ("local", "primary", "fallback"):
        from .local import LocalProvider

        provider = LocalProvider(name=name)
        _PROVIDERS[name] = provider
        return provider
    return None


def register_provider(name: str, provider: Provider) -> Provider:
    """Make ``provider`` available as ``provider: name`` in any step config."""
    if not hasattr(provider, "complete"):
        raise ConfigError(f"provider '{name}' has no async complete(messages, **params) method")
    _PROVIDERS[name] = provider
    return provider


def unregister_provider(name: str) -> None:
    _PROVIDERS.pop(name, None)


def register_provider_kind(kind: str, factory: Callable[[str, dict[str, Any]], Provider]) -> None:
    """Register a provider *kind* usable from YAML: ``providers: {primary: {kind: <kind>, ...}}``."""
    _KINDS[kind] = factory


def registered_provider_kinds() -> tuple[str, ...]:
    """Kinds registered from Python (the built-in HTTP kinds once their module is imported)."""
    return tuple(_KINDS)


def make_provider(name: str, config: dict[str, Any]) -> Provider:
    kind = str(config.get("kind") or config.get("type") or "local")
    if kind == "local":
        from .local import LocalProvider

        return LocalProvider(name=name, **{k: v for k, v in config.items() if k not in ("kind", "type")})
    if kind not in _KINDS:
        _load_known_kind(kind)
    try:
        factory = _KINDS[kind]
    except KeyError:
        raise ConfigError(
            f"provider '{name}': unknown kind '{kind}' (known: local, {', '.join(sorted(_KINDS)) or '-'})"
        ) from None
    return factory(name, config)


def _load_known_kind(kind: str) -> None:
    if kind in ("openai", "openai_compatible", "vllm", "ollama", "lmstudio", "llamacpp"):
        from . import openai_compat  # noqa: F401  (registers its kinds)


def get_provider(name: str, run: Any = None) -> Provider:
    """The provider called ``name``: the run's own first, then the global registry, then defaults."""
    if run is not None:
        own = getattr(run, "providers", None)
        if own and name in own:
            return own[name]
    provider = _PROVIDERS.get(name) or _default(name)
    if provider is None:
        known = sorted(set(_PROVIDERS) | {"local", "primary", "fallback"})
        raise ConfigError(f"unknown provider '{name}' (known: {', '.join(known)})")
    return provider


def registered_providers() -> dict[str, Provider]:
    return dict(_PROVIDERS)
