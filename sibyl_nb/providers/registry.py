"""Named providers. ``primary`` and ``fallback`` are names, not kinds: both default to the local provider.

A run may carry its own mapping (from a document's ``providers:`` section) that shadows the global one.
The registry sits on top of the provider modules (it imports them, they never import it): the built-in
HTTP kinds are built by ``openai_compat`` and wrapped for replay here, and :func:`enable_replay` wraps
the registered providers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..document.schema import HTTP_PROVIDER_KINDS
from ..errors import ConfigError
from .base import Provider

if TYPE_CHECKING:
    import os

    from .replay import ReplayMode, ReplayProvider

__all__ = [
    "register_provider",
    "get_provider",
    "registered_providers",
    "unregister_provider",
    "register_provider_kind",
    "make_provider",
    "enable_replay",
    "disable_replay",
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
    """Kinds registered from Python with :func:`register_provider_kind`."""
    return tuple(_KINDS)


def make_provider(name: str, config: dict[str, Any]) -> Provider:
    kind = str(config.get("kind") or config.get("type") or "local")
    if kind == "local":
        from .local import LocalProvider

        return LocalProvider(name=name, **{k: v for k, v in config.items() if k not in ("kind", "type")})
    factory = _KINDS.get(kind)
    if factory is not None:
        return factory(name, config)
    if kind in HTTP_PROVIDER_KINDS:  # openai_compat's, imported on first use
        return _http_provider(name, {**config, "kind": kind})
    known = sorted({*_KINDS, *HTTP_PROVIDER_KINDS})
    raise ConfigError(f"provider '{name}': unknown kind '{kind}' (known: local, {', '.join(known)})")


def _http_provider(name: str, config: dict[str, Any]) -> Provider:
    """A built-in HTTP kind; ``replay: auto|record|replay`` (and ``replay_dir``), or the active
    replay setting, wraps it in a :class:`ReplayProvider`."""
    from .openai_compat import provider_from_config
    from .replay import replay_wrap

    return replay_wrap(provider_from_config(name, config), config.get("replay"), config.get("replay_dir"))


def enable_replay(
    mode: ReplayMode = "auto", directory: str | os.PathLike[str] | None = None, names: list[str] | None = None
) -> dict[str, ReplayProvider]:
    """Wrap the registered providers (or just ``names``) in :class:`ReplayProvider`; providers
    built later from YAML kinds are wrapped too. Calling it again changes mode/directory in place."""
    from .replay import ReplayProvider, logger, set_active_replay

    set_active_replay(mode, directory)
    chosen = names if names is not None else list(_PROVIDERS)
    wrapped: dict[str, ReplayProvider] = {}
    for name in chosen:
        current = get_provider(name)
        inner = current.inner if isinstance(current, ReplayProvider) else current
        if isinstance(current, ReplayProvider):
            current.close()
        replay = ReplayProvider(inner, mode, directory, name=name)
        register_provider(name, replay)
        wrapped[name] = replay
    logger.info("replay %s enabled for %s", mode, ", ".join(wrapped) or "(no registered providers)")
    return wrapped


def disable_replay() -> list[str]:
    """Unwrap every registered :class:`ReplayProvider`; returns the names unwrapped."""
    from .replay import ReplayProvider, set_active_replay

    set_active_replay(None)
    unwrapped = []
    for name, provider in registered_providers().items():
        if isinstance(provider, ReplayProvider):
            provider.close()
            register_provider(name, provider.inner)
            unwrapped.append(name)
    return unwrapped


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
