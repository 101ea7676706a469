"""Importing this registers every built-in technique (done lazily by the registry on first lookup)."""

from __future__ import annotations

from ...context import technique as _context  # noqa: F401
from ...sessions import technique as _sessions  # noqa: F401
from ...state import technique as _state  # noqa: F401
from . import ai_generation, data, external, rag, workflow  # noqa: F401
