"""The one lazy-export helper for the package ``__init__`` files (PEP 562 ``__getattr__``).

A name listed here is imported from its module on first access and then cached in the package, so
``import sibyl_nb`` (and each subpackage) loads no backend, widget or plotting library until used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str], public: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps an exported name to the module that
    defines it (``".widget"`` relative to the package, or absolute). A name mapped to a submodule of
    that same name (``"metrics": ".metrics"``) exports the submodule itself."""
    listed = sorted(set(public) | set(names))

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        mod = importlib.import_module(module, package)
        if module.rpartition(".")[2] == name and not hasattr(mod, name):
            value: Any = mod
        else:
            value = getattr(mod, name)
        setattr(sys.modules[package], name, value)  # later lookups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__
