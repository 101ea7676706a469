"""What the magic keeps on the IPython shell, read by the display hooks and the completer too.

The loaded magic is ``shell._sibyl_nb_magic``; the pipelines cells defined are ``shell.`` :data:`KEEP`
so they survive ``%reload_ext``. A module of its own so that display.py and completion.py read them
without importing the magic, which installs them (imports point one way).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .magics import SibylMagic

__all__ = ["KEEP", "instance", "get_magic", "pipelines"]

KEEP = "_sibyl_nb_pipelines"  # attribute on the shell: pipelines survive %reload_ext


def instance(ipython: Any) -> SibylMagic | None:
    """The magic loaded on ``ipython``, or None."""
    return getattr(ipython, "_sibyl_nb_magic", None)


def get_magic(ipython: Any = None) -> SibylMagic | None:
    """The loaded :class:`SibylMagic` of ``ipython`` (default: the running shell)."""
    if ipython is None:
        ipython = _shell()
    return instance(ipython) if ipython is not None else None


def _shell() -> Any:
    ip_mod = sys.modules.get("IPython")
    return ip_mod.get_ipython() if ip_mod is not None else None


def pipelines(ipython: Any = None) -> dict[str, Any]:
    """Every pipeline ``%%sibyl_pipeline`` cells defined in this notebook, by name (a copy)."""
    shell = ipython if ipython is not None else _shell()
    kept = getattr(shell, KEEP, None) if shell is not None else None
    return dict(kept["pipelines"]) if kept else {}
