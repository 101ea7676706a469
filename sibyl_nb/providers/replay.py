"""Record provider calls to disk and replay them, so a notebook re-runs identically without the model.

Storage is a diskcache directory (default ``$SIBYL_HOME/replay``) holding **JSON only**: diskcache's
default serialiser is pickle, and unpickling a planted cache file runs code (CVE-2025-69872). The
disk class here writes JSON and refuses to read a pickled row even if one was put there.

A recording is keyed by a SHA-256 of the canonical JSON of (provider name, model, messages,
parameters) — parameters include the provider's defaults such as its temperature, so changing
them is a different recording, not a stale hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import diskcache

from ..errors import ConfigError, ProviderError, StoreError
from ..paths import sibyl_home
from .base import Completion, Message, Provider
from .streaming import TokenCallback, complete_with_tokens, emit_token, stream_via_complete

__all__ = [
    "ReplayProvider",
    "ReplayMode",
    "replay_key",
    "set_active_replay",
    "clear_replay",
    "replay_wrap",
    "active_replay",
    "JSONOnlyDisk",
    "open_replay_store",
]

logger = logging.getLogger("sibyl_nb.providers.replay")

ReplayMode = Literal["record", "replay", "auto"]
_MODES = ("record", "replay", "auto")
_KEY_VERSION = 1

# Set by registry.enable_replay(); read by the registry's factories so YAML-configured providers are
# wrapped too.
_ACTIVE: tuple[str, Path | None] | None = None


class JSONOnlyDisk(diskcache.JSONDisk):
    """``JSONDisk`` that also refuses to *read* a pickled key or value (a planted row)."""

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise StoreError(f"replay store {self._directory}: refusing a pickled key (only JSON is read)")
        return super().get(key, raw)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise StoreError(f"replay store {self._directory}: refusing a pickled value (only JSON is read)")
        return super().fetch(mode, filename, value, read)


def open_replay_store(directory: str | os.PathLike[str] | None = None) -> diskcache.Cache:
    """The JSON-only diskcache at ``directory`` (default ``$SIBYL_HOME/replay``)."""
    path = Path(directory) if directory is not None else sibyl_home("replay")
    path.mkdir(parents=True, exist_ok=True)
    return diskcache.Cache(str(path), disk=JSONOnlyDisk)


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ConfigError(f"replay mode must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


def _canonical(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)


def replay_key(provider: str, model: str, messages: list[Message], params: dict[str, Any]) -> str:
    """Stable SHA-256 hex of (provider, model, messages, params): same call, same key, any process."""
    payload = {
        "v": _KEY_VERSION,
        "provider": provider,
        "model": model,
        "messages": messages,
        "params": params,
    }
    try:
        text = _canonical(payload)
    except TypeError as exc:
        raise ProviderError(f"cannot key a replay recording: {exc}", provider=provider) from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReplayProvider:
    """Wraps any provider. ``record``: always call ``inner`` and store the answer; ``replay``: answer
    from the store only (a miss is a :class:`ProviderError`); ``auto``: replay if recorded, else record.
    """

    def __init__(
        self,
        inner: Provider,
        mode: ReplayMode = "auto",
        directory: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.inner = inner
        self.mode: str = _check_mode(mode)
        self.name = name or getattr(inner, "name", "") or "provider"
        self.directory = Path(directory) if directory is not None else sibyl_home("replay")
        self._store: diskcache.Cache | None = None
        self.hits = 0
        self.recorded = 0

    def __repr__(self) -> str:
        return f"ReplayProvider({self.inner!r}, mode={self.mode!r}, directory={str(self.directory)!r})"

    @property
    def model(self) -> str:
        return str(getattr(self.inner, "model", "") or "")

    @property
    def default_params(self) -> dict[str, Any]:
        return dict(getattr(self.inner, "default_params", {}) or {})

    @property
    def store(self) -> diskcache.Cache:
        if self._store is None:
            self._store = open_replay_store(self.directory)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def key(self, messages: list[Message], params: dict[str, Any]) -> str:
        """The recording key for this call (``on_token`` and ``timeout`` do not change the answer)."""
        effective = {
            **self.default_params,
            **{k: v for k, v in params.items() if k not in ("on_token", "timeout")},
        }
        model = str(effective.pop("model", None) or self.model)
        return replay_key(self.name, model, messages, effective)

    def lookup(self, messages: list[Message], params: dict[str, Any]) -> Completion | None:
        """The recorded answer for this call, or ``None``."""
        return self._recorded(self.key(messages, params))

    def _recorded(self, key: str) -> Completion | None:
        record = self.store.get(key)
        if not isinstance(record, dict) or not isinstance(record.get("completion"), dict):
            return None
        known = {f.name for f in dataclasses.fields(Completion)}  # tolerate records from other versions
        return Completion(**{k: v for k, v in record["completion"].items() if k in known})

    async def complete(
        self, messages: list[Message], *, on_token: TokenCallback | None = None, **params: Any
    ) -> Completion:
        key = self.key(messages, params)
        if self.mode != "record":
            recorded = self._recorded(key)
            if recorded is not None:
                self.hits += 1
                await emit_token(on_token, recorded.text)
                return recorded
            if self.mode == "replay":
                raise ProviderError(
                    f"replay miss: no recording of this call to model '{self.model}' (key {key[:12]}) in "
                    f"{self.directory}; run once with mode='record' or 'auto' to record it",
                    provider=self.name,
                    retryable=False,
                )
        completion = await complete_with_tokens(self.inner, messages, on_token, params)
        self._save(key, messages, params, completion)
        return completion

    def stream(self, messages: list[Message], **params: Any) -> AsyncIterator[str]:
        """Deltas: the recorded text in one piece on a hit, the inner provider's deltas otherwise."""
        return stream_via_complete(self, messages, **params)

    def _save(
        self, key: str, messages: list[Message], params: dict[str, Any], completion: Completion
    ) -> None:
        request = {
            "provider": self.name,
            "model": self.model,
            "messages": messages,
            "params": {k: v for k, v in params.items() if k not in ("on_token", "timeout")},
        }
        record = {
            "v": _KEY_VERSION,
            "recorded_at": time.time(),
            "request": request,
            "completion": dataclasses.asdict(completion),
        }
        try:
            json.dumps(record)
        except TypeError as exc:  # e.g. a non-JSON value in Completion.fields
            raise ProviderError(f"cannot record answer as JSON: {exc}", provider=self.name) from exc
        self.store.set(key, record)
        self.recorded += 1


# -- registry helpers ------------------------------------------------------------------------------


def active_replay() -> tuple[str, Path | None] | None:
    """The replay setting new providers get: ``registry.enable_replay``'s, else ``$SIBYL_REPLAY``."""
    if _ACTIVE is not None:
        return _ACTIVE
    env = os.environ.get("SIBYL_REPLAY", "").strip().lower()
    if env in _MODES:
        directory = os.environ.get("SIBYL_REPLAY_DIR")
        return env, Path(directory) if directory else None
    return None


def replay_wrap(
    provider: Provider, mode: str | bool | None = None, directory: str | os.PathLike[str] | None = None
) -> Provider:
    """``provider`` wrapped for replay when ``mode`` (or, when ``None``, the active setting) asks
    for it; ``False``/``"off"`` (YAML ``replay: off``) opts out even when replay is enabled."""
    if mode is False or mode == "off":
        return provider
    if mode is None:
        active = active_replay()
        if active is None:
            return provider
        mode, default_dir = active
        directory = directory if directory is not None else default_dir
    if isinstance(provider, ReplayProvider):
        provider = provider.inner
    return ReplayProvider(provider, _check_mode(str(mode)), directory)  # type: ignore[arg-type]


def set_active_replay(mode: str | None, directory: str | os.PathLike[str] | None = None) -> None:
    """Set (``mode`` ``None``: clear) the replay setting providers built from now on get."""
    global _ACTIVE
    if mode is None:
        _ACTIVE = None
        return
    _check_mode(mode)
    _ACTIVE = (mode, Path(directory) if directory is not None else None)


def clear_replay(directory: str | os.PathLike[str] | None = None) -> int:
    """Delete every recording in ``directory`` (default ``$SIBYL_HOME/replay``); returns how many."""
    if directory is None and _ACTIVE is not None and _ACTIVE[1] is not None:
        directory = _ACTIVE[1]
    store = open_replay_store(directory)
    try:
        return int(store.clear())
    finally:
        store.close()
