"""The one graph IR every mode compiles to, and the analysis the scheduler needs (back edges, loops).

Nodes and edges are plain slotted objects; :meth:`GraphIR.finalize` computes, once, everything the
scheduler would otherwise recompute per step (forward in-degree, out-edge lists, loops and their
bodies), so per-node work never scans the whole graph.

**Loops.** A back edge is an edge that closes a cycle in a depth-first walk from the entries (in
declaration order). A *loop* is a strongly connected component that contains a back edge: its
*header* is the loop node the walk reached first (every back edge into the loop's first node comes
from inside it); its *feeders* are the header's predecessors (the node(s) before the loop and the
back edges' sources). Edges from a loop node to a node outside the loop are the loop's *exit edges*:
the scheduler resolves them once, when the loop has ended, so what follows a loop runs once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..document.expressions import Condition

if TYPE_CHECKING:  # pragma: no cover
    import random

__all__ = ["RetryPolicy", "Node", "Edge", "GraphIR", "CycleFound", "Loop", "SUBGRAPH_PREFIX"]

SUBGRAPH_PREFIX = "pipeline."  # a node whose technique is ``pipeline.<name>`` runs that pipeline


@dataclass(slots=True)
class RetryPolicy:
    """``retry: {max_attempts, backoff: exponential|linear|fixed, initial_delay, max_delay, jitter}``.

    ``jitter`` is a fraction (0.1 = ±10%); the default 0 keeps notebook re-runs reproducible.
    """

    max_attempts: int = 3
    backoff: str = "exponential"
    initial_delay: float = 0.1
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempt + 1`` (``attempt`` is the one that just failed, 1-based)."""
        if self.backoff == "fixed":
            d = self.initial_delay
        elif self.backoff == "linear":
            d = self.initial_delay * attempt
        else:
            d = self.initial_delay * (self.multiplier ** (attempt - 1))
        d = min(d, self.max_delay)
        if self.jitter:
            if rng is None:
                import random  # only for jittered retries

                rng = random.Random()
            d *= 1.0 + rng.uniform(-self.jitter, self.jitter)
        return max(d, 0.0)


@dataclass(slots=True, eq=False)
class Node:
    """One technique call. ``kind`` is ``task`` (call a technique), ``dynamic`` (build and run a
    subgraph at run time) or ``entry`` (the implicit ``start`` of a dynamic graph: yields the input)."""

    id: str
    technique: str
    config: dict[str, Any] = field(default_factory=dict)
    render: Callable[..., dict[str, Any]] | None = None  # compiled templates; None = config is static
    retry: RetryPolicy | None = None
    fallbacks: list[Node] = field(default_factory=list)
    guard: Condition | None = None  # node condition: false -> skipped, its out-edges still fire
    max_iterations: int = 10
    timeout: float | None = None
    cache: bool | None = None
    group: str = ""  # the step / subgraph this node came from (display, limits)
    limit_key: str | None = None  # concurrency group with its own max_concurrent
    kind: str = "task"  # also "map" (for_each) and "subgraph" (pipeline.<name>)
    inner: Any = None  # map: engine.fanout.ForEach; subgraph: engine.subgraph.SubgraphPlan
    path: str = ""
    line: int | None = None
    # set by GraphIR.finalize()
    index: int = -1
    out_edges: list[Edge] = field(default_factory=list)  # default edges last
    n_fwd_in: int = 0
    loop: int = -1  # index into GraphIR.loops of the loop this node belongs to, -1 = none
    plain_out: bool = True  # every out-edge is forward, unconditional, not an exit (a scheduler fast path)
    feeds: tuple[int, ...] = ()  # loops whose header this node feeds (its output is their loop value)

    def __repr__(self) -> str:
        return f"Node({self.id!r}, {self.technique!r})"


@dataclass(slots=True, eq=False)
class Edge:
    """``src -> dst``. ``condition`` false = skipped. ``when``: fire only if src ``ran`` / was ``bypassed``.

    ``default``: the *else* edge: fires only when no other forward out-edge of ``src`` fired.
    ``exit`` (set by finalize): the edge leaves a loop and is resolved once, when the loop ends.
    """

    src: str
    dst: str
    condition: Condition | None = None
    when: str | None = None
    back: bool = False
    path: str = ""
    line: int | None = None
    default: bool = False
    exit: bool = False

    def __repr__(self) -> str:
        cond = f" if {self.condition.text}" if self.condition else ""
        flags = (" back" if self.back else "") + (" default" if self.default else "")
        return f"Edge({self.src}->{self.dst}{cond}{flags})"


@dataclass(slots=True, eq=False)
class Loop:
    """A strongly connected component with a back edge (see the module docstring)."""

    index: int
    header: str
    nodes: frozenset[str]
    feeders: tuple[str, ...]
    exit_edges: list[Edge]


class CycleFound(Exception):
    def __init__(self, cycle: list[str], edge: Edge) -> None:
        self.cycle = cycle
        self.edge = edge
        super().__init__(" -> ".join(cycle))


class GraphIR:
    """Nodes in declaration order plus edges; ``finalize`` classifies back edges and indexes."""

    def __init__(
        self,
        nodes: list[Node] | None = None,
        edges: list[Edge] | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self.max_concurrent = max_concurrent
        self.limits: dict[str, int] = {}  # limit_key -> max_concurrent
        self.exits: list[str] = []  # nodes whose outputs make the final output
        self.entries: list[Node] = []
        self.loops: list[Loop] = []
        self.order: list[Node] = []  # set by finalize: nodes by index, and their forward in-degrees
        self.fwd_in: list[int] = []
        self._regions: dict[str, tuple[frozenset[str], dict[str, int]]] = {}
        self.finalized = False
        for n in nodes or ():
            self.add_node(n)
        for e in edges or ():
            self.edges.append(e)

    def add_node(self, node: Node) -> Node:
        self.nodes[node.id] = node
        self.finalized = False
        return node

    def add_edge(self, edge: Edge) -> Edge:
        self.edges.append(edge)
        self.finalized = False
        return edge

    # -- analysis -----------------------------------------------------------------------------
    def finalize(self, *, allow_cycles: bool = True) -> GraphIR:
        """Classify back edges by a DFS from the entry nodes in declaration order; index everything.

        With ``allow_cycles=False`` the first back edge raises :class:`CycleFound` naming the cycle.
        """
        nodes = self.nodes
        for i, n in enumerate(nodes.values()):
            n.index = i
            n.out_edges = []
            n.n_fwd_in = 0
            n.loop = -1
            n.feeds = ()
        for e in self.edges:
            e.back = False
            e.exit = False
            nodes[e.src].out_edges.append(e)
        for n in nodes.values():
            if any(e.default for e in n.out_edges):  # else-edges are decided after their siblings
                n.out_edges.sort(key=lambda e: e.default)
        has_in = {e.dst for e in self.edges}
        roots = [n.id for n in nodes.values() if n.id not in has_in]
        color: dict[str, int] = {}  # 1 on stack, 2 done
        stack_order: list[str] = []

        discovered: dict[str, int] = {}

        def dfs(start: str) -> None:
            # iterative DFS so a 10k-node chain does not hit the recursion limit
            color[start] = 1
            discovered[start] = len(discovered)
            stack_order.append(start)
            work: list[tuple[str, int]] = [(start, 0)]
            while work:
                nid, i = work[-1]
                out = nodes[nid].out_edges
                if i < len(out):
                    work[-1] = (nid, i + 1)
                    e = out[i]
                    c = color.get(e.dst)
                    if c == 1:
                        if not allow_cycles:
                            at = stack_order.index(e.dst)
                            raise CycleFound(stack_order[at:] + [e.dst], e)
                        e.back = True
                    elif c is None:
                        color[e.dst] = 1
                        discovered[e.dst] = len(discovered)
                        stack_order.append(e.dst)
                        work.append((e.dst, 0))
                else:
                    color[nid] = 2
                    stack_order.pop()
                    work.pop()

        for r in roots:
            if r not in color:
                dfs(r)
        for n in nodes.values():  # pure cycles with no root: start at the first declared node
            if n.id not in color:
                dfs(n.id)
        for e in self.edges:
            if not e.back:
                nodes[e.dst].n_fwd_in += 1
        self.order = list(nodes.values())
        self.fwd_in = [n.n_fwd_in for n in self.order]
        self.entries = [n for n in self.order if n.n_fwd_in == 0]
        self.loops = self._find_loops(discovered) if any(e.back for e in self.edges) else []
        for n in nodes.values():
            n.plain_out = all(
                e.condition is None and e.when is None and not (e.back or e.exit or e.default)
                for e in n.out_edges
            )
        if not self.exits:
            self.exits = self.sinks()
        self._regions.clear()
        self.finalized = True
        return self

    def _find_loops(self, discovered: dict[str, int]) -> list[Loop]:
        """Strongly connected components holding a back edge (iterative Tarjan), with header,
        feeders and exit edges; marks ``Node.loop``, ``Node.feeds`` and ``Edge.exit``."""
        nodes = self.nodes
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        comps: list[list[str]] = []
        for root in nodes:
            if root in index:
                continue
            work: list[tuple[str, int]] = [(root, 0)]
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            while work:
                nid, i = work[-1]
                out = nodes[nid].out_edges
                if i < len(out):
                    work[-1] = (nid, i + 1)
                    dst = out[i].dst
                    if dst not in index:
                        index[dst] = low[dst] = len(index)
                        stack.append(dst)
                        on_stack.add(dst)
                        work.append((dst, 0))
                    elif dst in on_stack:
                        low[nid] = min(low[nid], index[dst])
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[nid])
                if low[nid] == index[nid]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on_stack.discard(x)
                        comp.append(x)
                        if x == nid:
                            break
                    comps.append(comp)
        loops: list[Loop] = []
        for comp in comps:
            members = frozenset(comp)
            backs = [e for x in comp for e in nodes[x].out_edges if e.back and e.dst in members]
            if not backs:
                continue
            header = min(comp, key=lambda x: discovered.get(x, 1 << 30))
            li = len(loops)
            feeders = [e.src for e in self.edges if e.dst == header and (e.back or e.src not in members)]
            exits = [e for x in comp for e in nodes[x].out_edges if e.dst not in members]
            for x in comp:
                nodes[x].loop = li
            for e in exits:
                e.exit = True
            for f in dict.fromkeys(feeders):
                nodes[f].feeds = (*nodes[f].feeds, li)
            order = sorted(comp, key=lambda x: nodes[x].index)
            loops.append(Loop(li, header, frozenset(order), tuple(dict.fromkeys(feeders)), exits))
        return loops

    def sinks(self) -> list[str]:
        """Nodes with no forward out-edge (their outputs are the graph's result). A loop with exit
        edges hands its result on through them, so its nodes are never sinks."""
        loops = self.loops
        return [
            n.id
            for n in self.nodes.values()
            if not any(not e.back for e in n.out_edges) and (n.loop < 0 or not loops[n.loop].exit_edges)
        ]

    @property
    def back_edges(self) -> list[Edge]:
        return [e for e in self.edges if e.back]

    def region(self, target: str) -> tuple[frozenset[str], dict[str, int]]:
        """The loop body a back edge into ``target`` re-runs: loop nodes forward-reachable from
        ``target`` (never what follows the loop), and for each the number of forward in-edges coming
        from inside that set. Cached: loops re-enter often."""
        cached = self._regions.get(target)
        if cached is not None:
            return cached
        nodes = self.nodes
        loop = nodes[target].loop
        seen = {target}
        todo = [target]
        while todo:
            for e in nodes[todo.pop()].out_edges:
                if not e.back and e.dst not in seen and nodes[e.dst].loop == loop:
                    seen.add(e.dst)
                    todo.append(e.dst)
        inner: dict[str, int] = dict.fromkeys(seen, 0)
        for nid in seen:
            for e in nodes[nid].out_edges:
                if not e.back and e.dst in seen:
                    inner[e.dst] += 1
        result = (frozenset(seen), inner)
        self._regions[target] = result
        return result
