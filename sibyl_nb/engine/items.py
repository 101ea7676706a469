"""What a ``for_each`` item's activation reads as its item (``ctx.item``, ``${item}``).

Kept apart from ``fanout.py`` (which runs the items) so the scope table and ``StepContext`` can read
an item without importing the code that schedules them: nothing here imports the rest of the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .run import ContextRun

__all__ = ["ITEMS_KEY", "NO_ITEM", "item_id", "item_of"]

ITEMS_KEY = "for_each_items"  # run.extras key: item node id -> its item
NO_ITEM = object()


def item_id(node_id: str, index: int) -> str:
    return f"{node_id}[{index}]"


def item_of(run: ContextRun, node_id: str | None) -> Any:
    """The item of ``node_id`` when it is a for_each item's activation, else ``NO_ITEM``."""
    extras = getattr(run, "extras", None)
    table = extras.get(ITEMS_KEY) if extras else None
    if not table or node_id is None:
        return NO_ITEM
    return table.get(node_id, NO_ITEM)
