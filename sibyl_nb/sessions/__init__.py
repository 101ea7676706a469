"""Session modes (memory, stateless, persistent, sliding_window) over the shared stores.

The technique lives in :mod:`.technique` (imported by the registry's builtins loader);
:class:`SessionManager` is the same logic for direct use from a notebook.
"""

from __future__ import annotations

from .manager import SessionManager, SessionView, make_message
from .policy import MODES, SessionPolicy, policy_from_config

__all__ = [
    "SessionManager",
    "SessionView",
    "SessionPolicy",
    "policy_from_config",
    "make_message",
    "MODES",
    "open_session",
]


def open_session(subtechnique: str = "memory", **config: object) -> SessionManager:
    """A :class:`SessionManager` from seed-style config: ``open_session("memory", storage="redis")``."""
    return SessionManager(policy_from_config({"subtechnique": subtechnique, **config}))
