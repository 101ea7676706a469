"""What each session mode means, as data: which store, how long sessions live, what is kept.

The rules, per mode (``subtechnique``):

* ``memory`` — ``timeout`` (seconds, refreshed on use), ``max_messages`` bounds what is *stored*
  (the oldest are trimmed after each turn), ``max_tokens`` bounds the history handed to the
  pipeline. ``compression: true`` compresses the older messages of that history (extractively, to
  ``compression_ratio``) before any is left out; ``summarization: true`` folds every message that
  is trimmed or left out into the session summary, which is stored beside the raw messages. Default
  storage: diskcache.
* ``stateless`` — nothing loaded, nothing stored.
* ``persistent`` — ``storage: database`` (SQLite under ``sibyl_home`` unless ``database_url``),
  ``table`` (default ``conversations``); no expiry unless ``timeout``.
* ``sliding_window`` — keeps the last ``window_size`` messages (default 10), stored and shown;
  ``include_summary: true`` folds older ones into the summary, which is sent to the model with the
  window even when no context step runs.

What a turn reads: ``max_messages`` / ``window_size`` bound the load directly, and ``max_tokens``
reads one page of the newest messages sized from what the previous turn needed, so a turn costs
the same at 1,000 and 100,000 stored messages. With ``summarization`` and ``max_tokens`` but no
``max_messages``, the summary of the messages left out is folded forward in the store's key-value
facet (``sibyl:session-fold:<session>``, see :mod:`.fold`): the first turn of a session reads the
whole log once, later turns only the messages that left the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["SessionPolicy", "policy_from_config", "MODES", "STORE_KEYS"]

MODES = ("memory", "stateless", "persistent", "sliding_window")
# Config keys passed through to the store factory.
STORE_KEYS = ("redis_url", "key_prefix", "kv_prefix", "database_url", "table", "kv_table", "directory")
_DEFAULT_STORAGE = {
    "memory": "diskcache",
    "persistent": "database",
    "sliding_window": "diskcache",
    "stateless": None,
}


@dataclass(slots=True)
class SessionPolicy:
    mode: str = "memory"
    storage: str | None = "diskcache"
    store_config: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    max_messages: int | None = None  # stored bound (memory, persistent)
    max_tokens: int | None = None  # history bound (memory)
    compression: bool = False
    compression_ratio: float = 0.5
    keep_recent: int = 4  # never compressed
    summarization: bool = False  # fold trimmed / left-out messages into the summary
    summary_length: int = 200
    window_size: int | None = None  # sliding_window

    @property
    def stateful(self) -> bool:
        return self.mode != "stateless"

    @property
    def store_limit(self) -> int | None:
        """How many messages the store keeps after a turn (None: all)."""
        return self.window_size if self.mode == "sliding_window" else self.max_messages


def _pos_int(cfg: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = cfg.get(key, default)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"session config '{key}' must be a whole number, got {value!r}") from None
    if n <= 0:
        raise ConfigError(f"session config '{key}' must be positive, got {n}")
    return n


def _flag(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def policy_from_config(cfg: Mapping[str, Any]) -> SessionPolicy:
    """A :class:`SessionPolicy` from a session step's (rendered) config."""
    mode = str(cfg.get("subtechnique") or "memory")
    if mode not in MODES:
        raise ConfigError(f"unknown session mode {mode!r}: choose {', '.join(MODES)}")
    storage = cfg.get("storage") or _DEFAULT_STORAGE[mode]
    timeout = cfg.get("timeout")
    timeout = None if timeout in (None, "", 0) else float(timeout)
    if timeout is not None and timeout < 0:
        raise ConfigError(f"session config 'timeout' must be positive seconds, got {timeout}")
    store_config = {k: cfg[k] for k in STORE_KEYS if cfg.get(k) not in (None, "")}
    pol = SessionPolicy(
        mode=mode,
        storage=None if mode == "stateless" else str(storage),
        store_config=store_config,
        timeout=timeout,
    )
    if mode in ("memory", "persistent"):
        pol.max_messages = _pos_int(cfg, "max_messages", None)
    if mode == "memory":
        pol.max_tokens = _pos_int(cfg, "max_tokens", None)
        pol.compression = _flag(cfg, "compression", False)
        pol.summarization = _flag(cfg, "summarization", False)
        ratio = float(cfg.get("compression_ratio", 0.5))
        if not 0 < ratio <= 1:
            raise ConfigError(f"session config 'compression_ratio' must be in (0, 1], got {ratio}")
        pol.compression_ratio = ratio
        pol.keep_recent = _pos_int(cfg, "keep_recent", 4) or 4
    if mode == "persistent":
        pol.summarization = _flag(cfg, "summarization", False)
    if mode == "sliding_window":
        pol.window_size = _pos_int(cfg, "window_size", 10)
        pol.summarization = _flag(cfg, "include_summary", False)
    pol.summary_length = _pos_int(cfg, "summary_length", 200) or 200
    return pol
