"""The seed's dynamic-graph API: ``Graph()``, ``add_node``, ``add_edge``, ``"id" in graph.nodes``."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["Graph"]


class Graph:
    """Built by a ``build_graph(input_data)`` function; compiled to the IR when the step runs.

    ``"start"`` is the implicit entry: ``add_edge("start", "search")`` makes ``search`` an entry node
    that receives the pipeline input. ``cyclic=True`` declares that the graph may loop (back edges run
    again up to the dynamic step's ``max_iterations``); without it a cycle is refused.
    """

    def __init__(self, cyclic: bool = False) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: list[dict[str, Any]] = []
        self.cyclic = bool(cyclic)

    def add_node(
        self, node_id: str, technique: str, config: dict[str, Any] | None = None, **options: Any
    ) -> Graph:
        if not isinstance(node_id, str) or not node_id:
            raise ConfigError(f"Graph.add_node: node id must be a non-empty string, got {node_id!r}")
        if node_id == "start":
            raise ConfigError("Graph.add_node: 'start' is the implicit entry and cannot be added")
        if node_id in self.nodes:
            raise ConfigError(f"Graph.add_node: duplicate node id '{node_id}'")
        self.nodes[node_id] = {"technique": technique, "config": dict(config or {}), **options}
        return self

    def add_edge(self, src: str, dst: str, condition: str | None = None) -> Graph:
        self.edges.append({"from": src, "to": dst, "condition": condition})
        return self

    def __repr__(self) -> str:
        return f"Graph(nodes={list(self.nodes)}, edges={len(self.edges)})"
