"""Load-time side of ``for_each`` (map nodes) and ``pipeline.<name>`` (subgraph nodes).

Kept apart from :mod:`.compile` so the loader only calls three functions: :func:`apply_for_each`
after it made a node, :func:`subgraph_plan` when a node's technique names a pipeline, and
:func:`link_subgraphs` once the whole document is compiled. Every key is checked here, with the
YAML path and line of the offending key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engine.ir import SUBGRAPH_PREFIX
from .schema import check_type, did_you_mean
from .templates import compile_value

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.subgraph import SubgraphPlan

__all__ = ["FOR_EACH_KEYS", "ITEM", "apply_for_each", "subgraph_plan", "link_subgraphs", "is_subgraph"]

FOR_EACH_KEYS = ("for_each", "max_concurrent")
ITEM = "item"  # ``${item}``: the current item of a for_each node
SUBGRAPH_CONFIG_KEYS = ("input",)


def is_subgraph(technique: Any) -> bool:
    return isinstance(technique, str) and technique.startswith(SUBGRAPH_PREFIX)


def apply_for_each(compiler: Any, node: Any, step: dict[str, Any], path: tuple[Any, ...]) -> None:
    """Turn ``node`` into a map node when its YAML ``step`` has ``for_each`` (else check that it has
    no ``max_concurrent`` either: on a node that key only means "items at once")."""
    expr = step.get("for_each")
    limit = step.get("max_concurrent")
    lines = compiler.lines
    if expr is None:
        if limit is not None:
            raise compiler.err(
                path + ("max_concurrent",),
                f"max_concurrent on node '{node.id}' limits a for_each node's items: add for_each, or set "
                f"max_concurrent on the graph / orchestration config",
            )
        if "for_each" in step:
            raise compiler.err(path + ("for_each",), f"for_each of node '{node.id}' is empty")
        return
    fpath = path + ("for_each",)
    if not isinstance(expr, (str, list)):
        raise compiler.err(
            fpath, f"for_each must be a ${{...}} reference to a list, got {type(expr).__name__}"
        )
    if node.kind == "subgraph":
        raise compiler.err(
            fpath, "for_each on a pipeline.<name> node is not supported; map inside the subgraph"
        )
    render, refs = compile_value(expr, fpath)
    if render is None:
        if not isinstance(expr, list):
            raise compiler.err(
                fpath, f"for_each must reference a list at run time (${{node.field}}), got {expr!r}"
            )
        literal = list(expr)

        def render(_resolve: Any, _v: list[Any] = literal) -> list[Any]:
            return _v

    for ref, rpath in refs:
        if ref.root == ITEM:
            raise compiler.err(rpath, "for_each cannot read ${item}: the items are what it produces")
        compiler.refs.append((ref, rpath, node.id, None))
    if limit is not None:
        check_type(limit, int, path + ("max_concurrent",), lines, "max_concurrent")
        if limit < 1:
            raise compiler.err(path + ("max_concurrent",), "max_concurrent must be at least 1")
    from ..engine.fanout import ForEach  # imported by documents that use for_each only

    node.inner = ForEach(
        text=expr if isinstance(expr, str) else repr(expr),
        render=render,
        config_render=node.render,
        retry=node.retry,
        timeout=node.timeout,
        max_concurrent=limit,
    )
    node.render = None  # the items render the config, each with its own ${item}
    node.retry = None  # retries are per item
    node.timeout = None
    node.kind = "map"
    compiler.map_nodes.add(node.id)


def subgraph_plan(
    compiler: Any, node_id: str, technique: str, config: dict[str, Any], cpath: tuple[Any, ...], tpath: Any
) -> SubgraphPlan:
    """The plan of a ``pipeline.<name>`` node (the pipeline itself is linked by :func:`link_subgraphs`)."""
    name = technique[len(SUBGRAPH_PREFIX) :]
    if not name:
        raise compiler.err(tpath, "pipeline.<name> needs the name of a pipeline of this document")
    for key in config:
        if key not in SUBGRAPH_CONFIG_KEYS:
            raise compiler.err(
                cpath + (key,),
                f"unknown key '{key}' in the config of subgraph node '{node_id}' (a pipeline.<name> node "
                f"takes only: {', '.join(SUBGRAPH_CONFIG_KEYS)}){did_you_mean(str(key), SUBGRAPH_CONFIG_KEYS)}",
            )
    from ..engine.subgraph import SubgraphPlan  # imported by documents with subgraphs only

    plan = SubgraphPlan(pipeline=name)
    if "input" in config:
        render, refs = compile_value(config["input"], cpath + ("input",))
        value = config["input"]
        plan.input_render = render if render is not None else (lambda _r, _v=value: _v)
        plan.has_input = True
        for ref, rpath in refs:
            compiler.refs.append((ref, rpath, node_id, None))
    compiler.subgraphs.append((node_id, name, tpath))
    return plan


def link_subgraphs(pipelines: dict[str, Any], lines: Any) -> None:
    """Point every subgraph node at its pipeline; refuse unknown names and pipelines that use
    themselves (directly or through others), naming the chain and the line."""
    uses: dict[str, list[tuple[str, str, Any]]] = {p: spec.subgraphs for p, spec in pipelines.items()}
    for _pname, spec in pipelines.items():
        for node_id, target, tpath in spec.subgraphs:
            if target not in pipelines:
                raise lines.error(
                    tpath,
                    f"node '{node_id}' uses pipeline '{target}', which this document does not define"
                    f"{did_you_mean(target, list(pipelines))} (defined: {', '.join(pipelines)})",
                )
            spec.graph.nodes[node_id].inner.spec = pipelines[target]
    # a pipeline may not reach itself (reported at its own first use on the way)
    for start in pipelines:
        stack: list[tuple[str, list[str], Any, str]] = [
            (t, [start, t], tp, nid) for nid, t, tp in uses.get(start, ())
        ]
        while stack:
            current, chain, first_path, first_node = stack.pop()
            if current == start:
                raise lines.error(
                    first_path,
                    f"pipeline '{start}' uses itself: {' -> '.join(chain)} (through node '{first_node}')",
                )
            for _nid, target, _tp in uses.get(current, ()):
                if target == start or target not in chain:
                    stack.append((target, [*chain, target], first_path, first_node))
