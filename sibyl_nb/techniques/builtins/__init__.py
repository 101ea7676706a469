"""Importing this registers every built-in technique (done lazily by the registry on first lookup)."""

from __future__ import annotations

import importlib

_MODULES = (
    "sibyl_nb.techniques.builtins.workflow",
    "sibyl_nb.techniques.builtins.rag",
    "sibyl_nb.techniques.builtins.ai_generation",
    "sibyl_nb.techniques.builtins.data",
    "sibyl_nb.techniques.builtins.external",
    "sibyl_nb.sessions.technique",
    "sibyl_nb.context.technique",
    "sibyl_nb.state.technique",
)

for _name in _MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # TODO(dev): make strict once every module exists
        if _exc.name != _name:
            raise
