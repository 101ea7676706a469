"""Document -> :class:`PipelineSpec` (a validated :class:`GraphIR` plus settings).

Every mode compiles here to the one IR: a pipeline's ``steps:`` chain; ``workflow_orchestration.graph``
(dag / cyclic / conditional / dynamic) is flattened into the same graph; ``workflow_orchestration.
orchestration`` (sequential / parallel / conditional / error_handling, ``lazy``) becomes nodes,
edges, guards and fallbacks. All checks happen here, before anything runs.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engine.dynamic import set_node_option_checker
from ..engine.ir import CycleFound, Edge, GraphIR, Node, RetryPolicy
from ..engine.scope import BUILTIN_NAMES, SESSION_NAMES
from ..errors import ExpressionError, SibylError, SpecError, TrustError, UnknownTechniqueError
from ..techniques.context import QUERY_KEYS
from ..techniques.registry import TechniqueInfo, get_technique, has_technique
from .expressions import Ref, compile_condition
from .nested import FOR_EACH_KEYS, ITEM, apply_for_each, is_subgraph, link_subgraphs, subgraph_plan
from .schema import (
    INFRA_SCHEMA,
    MAX_CONCURRENT,
    MAX_ITERATIONS,
    OBSERVABILITY_SCHEMA,
    RETRY_SCHEMA,
    STEP_TIMEOUT,
    check_keys,
    check_type,
    did_you_mean,
    expect_list,
    expect_mapping,
    validate_config,
    validate_providers,
    validate_value,
)
from .templates import CONNECTION_KEYS, compile_value, env_name, is_env_name
from .yaml_lines import LineMap
from .yaml_path import Path, format_path

__all__ = ["PipelineSpec", "Document", "compile_document", "GRAPH_TECHNIQUE", "ORCHESTRATION_TECHNIQUE"]

GRAPH_TECHNIQUE = "workflow_orchestration.graph"
ORCHESTRATION_TECHNIQUE = "workflow_orchestration.orchestration"
PASSTHROUGH = "workflow_orchestration.passthrough"

PIPELINE_KEYS = (
    "shop",
    "steps",
    "description",
    "inputs",
    "max_concurrent",
    "executor",
    "name",
    "scheduler_address",
)
STEP_KEYS = (
    "use",
    "technique",
    "config",
    "id",
    "name",
    "retry",
    "on_error",
    "condition",
    "timeout",
    "cache",
    "depends_on",
    "max_iterations",
    "description",
    *FOR_EACH_KEYS,
)
GRAPH_CONFIG_KEYS = (
    "subtechnique",
    "max_iterations",
    "max_concurrent",
    "graph_definition",
    "graph_builder",
    "builder_code",
    "builder",
    "executor",
    "description",
)
GRAPH_NODE_KEYS = (
    "id",
    "technique",
    "use",
    "config",
    "retry",
    "on_error",
    "timeout",
    "cache",
    "condition",
    "max_iterations",
    "description",
    *FOR_EACH_KEYS,
)
EDGE_KEYS = ("from", "to", "condition", "default", "description")
ORCH_CONFIG_KEYS = (
    "subtechnique",
    "steps",
    "max_concurrent",
    "combine_step",
    "lazy",
    "retry",
    "timeout",
    "description",
    "max_iterations",
)
ORCH_STEP_KEYS = (
    "name",
    "id",
    "technique",
    "use",
    "config",
    "depends_on",
    "retry",
    "on_error",
    "condition",
    "always",
    "on_condition_true",
    "timeout",
    "cache",
    "output",
    "description",
    *FOR_EACH_KEYS,
)
# Node settings a graph/orchestration step cannot take as a whole (refuse_compound_settings says where).
COMPOUND_REFUSED = (
    "retry",
    "on_error",
    "condition",
    "timeout",
    "cache",
    "max_iterations",
    "max_concurrent",
    "for_each",
)
# What the steps hung under an orchestration step may say: each is a node run in a fixed place, so
# only the settings that node honours (a fallback runs in place of its owner, with no guard, cache or
# nested fallbacks; an on_condition_true step runs right after its guarded step).
FALLBACK_KEYS = ("name", "id", "technique", "use", "config", "retry", "timeout", "description")
THEN_KEYS = FALLBACK_KEYS + ("on_error", "condition", "cache")
COMBINE_KEYS = FALLBACK_KEYS + ("depends_on", "on_error", "condition", "cache")
GRAPH_DEFINITION_KEYS = ("nodes", "edges")
DYNAMIC_ONLY = ("graph_builder", "builder_code", "builder")
GRAPH_MODES = ("dag", "cyclic", "conditional", "dynamic")
# Settings rendered per step at run time (any name of the scope table), not once at load.
RUN_TEMPLATES = frozenset({"cache_key_template"})
# Input fields so common that a reference to one is never taken for a typo of something else.
COMMON_INPUTS = frozenset(QUERY_KEYS) | {"session_id", "user_id", "workflow_id", "documents", "context"}
ORCH_MODES = ("sequential", "parallel", "conditional", "error_handling")


@dataclass
class PipelineSpec:
    """A compiled pipeline: its graph and what the run needs to know."""

    name: str
    graph: GraphIR
    source: str | None = None
    lines: LineMap | None = None
    required_inputs: dict[str, list[str]] = field(default_factory=dict)
    declared_inputs: tuple[str, ...] = ()
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    env_reads: tuple[tuple[str, str], ...] = ()  # (environment variable, where) the document reads
    pruned: frozenset[str] = frozenset()
    warnings: list[str] = field(default_factory=list)
    description: str = ""
    executor: Any = None
    trusted: bool = False
    subgraphs: list[tuple[str, str, Any]] = field(default_factory=list)  # node id, pipeline, YAML path


@dataclass
class Document:
    """A whole YAML document: pipelines plus the shared ``shops`` / ``observability`` / ``providers``."""

    pipelines: dict[str, PipelineSpec]
    infrastructure: dict[str, Any] = field(default_factory=dict)
    observability: dict[str, Any] = field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None
    lines: LineMap | None = None  # where each value of ``data`` was written
    data: Any = None  # the parsed document the pipelines were compiled from (sweeps re-compile variants)


@dataclass
class _Unit:
    entries: list[str]
    exits: list[str]


class _Compiler:
    """Compiles one pipeline; collects node ids, references and warnings as it goes."""

    def __init__(self, name: str, lines: LineMap, trusted: bool) -> None:
        self.name = name
        self.lines = lines
        self.trusted = trusted
        self.graph = GraphIR()
        self.node_paths: dict[str, Path] = {}
        self.refs: list[tuple[Ref, Path, str | None, str | None]] = []  # ref, path, node id, edge src
        self.techniques: set[str] = set()
        self.warnings: list[str] = []
        self.aliases: dict[tuple[str, str], str] = {}  # (edge source, name) -> node (scope row 12)
        self.env_reads: list[tuple[str, str]] = []  # (variable, where)
        self.embedded_env: set[Path] = set()  # env references inside a longer string
        self.pruned: set[str] = set()
        self.loose_names: set[str] = set()
        self.executor: Any = None
        self.map_nodes: set[str] = set()  # for_each nodes (their config may read ${item})
        self.subgraphs: list[tuple[str, str, Path]] = []  # pipeline.<name> nodes, linked per document

    # -- helpers ----------------------------------------------------------------------------
    def err(self, path: Path, message: str, cls: type[SibylError] = SpecError, **kw: Any) -> SibylError:
        return self.lines.error(path, message, cls, **kw)

    def new_id(self, wanted: Any, path: Path, explicit: bool) -> str:
        if not isinstance(wanted, str) or not wanted.strip():
            raise self.err(path, f"node id must be a non-empty string, got {wanted!r}")
        name = wanted.strip()
        if name == "start":
            raise self.err(path, "'start' is reserved for the implicit entry of a dynamic graph")
        if name not in self.node_paths and name not in self.loose_names:
            return name
        if explicit:
            first = self.node_paths.get(name)
            where = (
                f" (first defined at {format_path(first)}, line {self.lines.line(first)})" if first else ""
            )
            raise self.err(path, f"duplicate node id '{name}'{where}")
        n = 2
        while f"{name}_{n}" in self.node_paths:
            n += 1
        return f"{name}_{n}"

    def technique_info(self, name: Any, path: Path) -> TechniqueInfo:
        if not isinstance(name, str) or not name:
            raise self.err(path, f"technique must be a string like 'shop.technique', got {name!r}")
        try:
            return get_technique(name)
        except UnknownTechniqueError as exc:
            raise self.err(path, exc.message, UnknownTechniqueError, technique=name) from None

    def check_config(self, info: TechniqueInfo, config: dict[str, Any], path: Path) -> None:
        sub = config.get("subtechnique")
        templated = isinstance(sub, str) and "${" in sub
        if (
            info.subtechniques is not None
            and sub is not None
            and not templated
            and sub not in info.subtechniques
        ):
            raise self.err(
                path + ("subtechnique",),
                f"unknown subtechnique '{sub}' for {info.name}{did_you_mean(str(sub), info.subtechniques)}"
                f" (known: {', '.join(info.subtechniques)})",
                UnknownTechniqueError,
                technique=info.name,
            )
        validate_config(
            config,
            info.config_schema,
            path,
            self.lines,
            info.name,
            skip=("subtechnique",),
            trusted=self.trusted,
        )

    def retry(self, value: Any, path: Path) -> RetryPolicy | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"max_attempts": value}
        expect_mapping(value, path, self.lines, "retry")
        validate_config(value, RETRY_SCHEMA, path, self.lines, "retry")
        policy = RetryPolicy()
        if "max_attempts" in value:
            check_type(value["max_attempts"], int, path + ("max_attempts",), self.lines, "retry.max_attempts")
            if value["max_attempts"] < 1:
                raise self.err(path + ("max_attempts",), "retry.max_attempts must be at least 1")
            policy.max_attempts = value["max_attempts"]
        if "backoff" in value:
            check_type(
                value["backoff"],
                ["exponential", "linear", "fixed"],
                path + ("backoff",),
                self.lines,
                "retry.backoff",
            )
            policy.backoff = value["backoff"]
        for key, attr in (
            ("initial_delay", "initial_delay"),
            ("initial", "initial_delay"),
            ("delay", "initial_delay"),
            ("max_delay", "max_delay"),
            ("multiplier", "multiplier"),
        ):
            if key in value:
                check_type(value[key], float, path + (key,), self.lines, f"retry.{key}")
                setattr(policy, attr, float(value[key]))
        if "jitter" in value:
            j = value["jitter"]
            if isinstance(j, bool):
                policy.jitter = 0.1 if j else 0.0
            else:
                check_type(j, float, path + ("jitter",), self.lines, "retry.jitter")
                policy.jitter = float(j)
        return policy

    def condition(self, text: Any, path: Path, node_id: str | None, edge_src: str | None = None) -> Any:
        try:
            cond = compile_condition(text)
        except ExpressionError as exc:
            raise self.err(path, exc.message, ExpressionError) from None
        cond.path, cond.line = format_path(path), self.lines.line(path)
        for ref in cond.refs:
            self.refs.append((ref, path, node_id, edge_src))
        return cond

    def mappings(
        self, items: list[Any], path: Path, keys: Iterable[str], what: str
    ) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Each item of a YAML list with its path, refused unless it is a mapping of ``keys``."""
        for i, item in enumerate(items):
            ipath = path + (i,)
            expect_mapping(item, ipath, self.lines, what)
            check_keys(item, keys, ipath, self.lines, what)
            yield ipath, item

    def make_node(
        self,
        node_id: str,
        technique: str,
        step: dict[str, Any],
        path: Path,
        *,
        group: str,
        info_path: Path,
        retry: Any = None,
        timeout: Any = None,
        config: Any = None,
        max_iterations: int = 10,
        register: bool = True,
    ) -> Node:
        """The node of a step mapping, with the mapping's own settings (config, retry, on_error,
        condition, timeout, cache): one reading of them for plain steps, graph nodes, orchestration
        steps, their on_condition_true and combine steps, and on_error fallbacks. ``retry`` and
        ``timeout`` are what the enclosing orchestration gives when the step says nothing."""
        config = step.get("config") if config is None else config
        config = {} if config is None else config
        retry = step.get("retry", retry)
        timeout = step.get("timeout", timeout)
        on_error, guard, cache = step.get("on_error"), step.get("condition"), step.get("cache")
        cpath = path + ("config",)
        validate_value(
            max_iterations, MAX_ITERATIONS, path + ("max_iterations",), self.lines, "max_iterations"
        )
        expect_mapping(config, cpath, self.lines, f"config of node '{node_id}'")
        inner = None
        if is_subgraph(technique):
            inner = subgraph_plan(self, node_id, technique, config, cpath, info_path)
            render = None
        else:
            info = self.technique_info(technique, info_path)
            if info.compiles:
                raise self.err(
                    info_path,
                    f"{technique} is a graph/orchestration step; it cannot be a node inside a graph here",
                )
            self.check_config(info, config, cpath)
            self.techniques.add(technique)
            render = self.templates(config, cpath, node_id)
        node = Node(
            node_id,
            technique,
            config,
            render=render,
            retry=self.retry(retry, path + ("retry",)),
            guard=self.condition(guard, path + ("condition",), node_id) if guard is not None else None,
            max_iterations=max_iterations,
            group=group,
            path=format_path(path),
            line=self.lines.line(path),
        )
        if inner is not None:
            node.kind = "subgraph"
            node.inner = inner
        if timeout is not None:
            validate_value(timeout, STEP_TIMEOUT, path + ("timeout",), self.lines, "timeout")
            node.timeout = float(timeout)
        if cache is not None:
            check_type(cache, bool, path + ("cache",), self.lines, "cache")
            node.cache = cache
        if on_error is not None:
            node.fallbacks = self.fallbacks(on_error, path + ("on_error",), node_id, group)
        if register:
            self.node_paths[node_id] = path
            self.graph.add_node(node)
        return node

    def templates(self, config: dict[str, Any], cpath: Path, node_id: str) -> Any:
        """Compile a node's config templates; a malformed ``${`` is an error at its own line."""
        try:
            render, refs = compile_value(config, cpath)
        except ExpressionError as exc:
            raise self.err(getattr(exc, "yaml_path", cpath), exc.message, ExpressionError) from None
        for ref, rpath in refs:
            self.refs.append((ref, rpath, node_id, None))
            if env_name(ref) is not None and not self.trusted:
                value = _value_at(config, rpath[len(cpath) :])
                if value != "${" + ref.text + "}":
                    # a connection setting reads the variable only as the whole value: inside a longer
                    # string it would travel to a server the document chose ("redis://evil/${TOKEN}")
                    self.embedded_env.add(rpath)
        return render

    def fallbacks(self, value: Any, path: Path, owner: str, group: str) -> list[Node]:
        if isinstance(value, dict):
            value = [value]
        items = expect_list(value, path, self.lines, "on_error")
        out = []
        for ipath, item in self.mappings(items, path, FALLBACK_KEYS, "an on_error step"):
            technique = item.get("technique") or item.get("use")
            if technique is None:
                raise self.err(ipath, "an on_error step needs 'technique'")
            fid = self.new_id(
                item.get("name") or item.get("id") or f"{owner}_fallback",
                ipath,
                explicit=bool(item.get("name") or item.get("id")),
            )
            fb = self.make_node(  # FALLBACK_KEYS: no on_error, condition or cache of its own
                fid,
                technique,
                item,
                ipath,
                group=group,
                register=False,
                info_path=ipath + ("technique" if "technique" in item else "use",),
            )
            self.loose_names.add(fid)
            out.append(fb)
        return out

    def edge(
        self,
        src: str,
        dst: str,
        path: Path,
        *,
        condition: Any = None,
        when: str | None = None,
        default: bool = False,
    ) -> Edge:
        e = Edge(src, dst, when=when, path=format_path(path), line=self.lines.line(path), default=default)
        if condition is not None:
            e.condition = self.condition(condition, path + ("condition",), None, edge_src=src)
        return self.graph.add_edge(e)

    # -- pipeline steps ---------------------------------------------------------------------
    def pipeline(self, steps: Any, path: Path) -> list[str]:
        steps = expect_list(steps, path, self.lines, "steps")
        if not steps:
            raise self.err(path, "a pipeline needs at least one step")
        prev: _Unit | None = None
        units: dict[str, _Unit] = {}
        for i, (spath, step) in enumerate(self.mappings(steps, path, STEP_KEYS, "a step")):
            unit = self.step(step, spath, i)
            deps = step.get("depends_on")
            if deps is not None:
                for dep, dpath in self.dep_list(deps, spath + ("depends_on",)):
                    if dep not in units:
                        raise self.err(
                            dpath, f"depends_on '{dep}' is not an earlier step{did_you_mean(dep, units)}"
                        )
                    self.link(units[dep], unit, spath)
            elif prev is not None:
                self.link(prev, unit, spath)
            key = step.get("id") or step.get("name")
            if key:
                units[str(key)] = unit
            for nid in unit.exits:
                units.setdefault(nid, unit)
            prev = unit
        assert prev is not None
        return prev.exits

    def link(self, a: _Unit, b: _Unit, path: Path) -> None:
        for x in a.exits:
            for y in b.entries:
                self.edge(x, y, path)

    def dep_list(self, deps: Any, path: Path) -> list[tuple[str, Path]]:
        if isinstance(deps, str):
            return [(deps, path)]
        expect_list(deps, path, self.lines, "depends_on")
        out = []
        for j, d in enumerate(deps):
            if not isinstance(d, str):
                raise self.err(path + (j,), f"depends_on entries must be step names, got {d!r}")
            out.append((d, path + (j,)))
        return out

    def step(self, step: dict[str, Any], path: Path, index: int) -> _Unit:
        technique = step.get("use", step.get("technique"))
        tpath = path + ("use" if "use" in step else "technique",)
        if technique is None:
            raise self.err(path, "a step needs 'use: shop.technique'")
        config = step.get("config") or {}
        expect_mapping(config, path + ("config",), self.lines, "config")
        if technique in (GRAPH_TECHNIQUE, ORCHESTRATION_TECHNIQUE):
            self.technique_info(technique, tpath)
            self.refuse_compound_settings(step, path, technique)
            if technique == GRAPH_TECHNIQUE:
                return self.graph_step(config, path + ("config",), step, index)
            return self.orchestration_step(config, path + ("config",), step, index)
        if "max_iterations" in step:
            mpath = path + ("max_iterations",)
            check_type(step["max_iterations"], int, mpath, self.lines, "max_iterations")
            validate_value(step["max_iterations"], MAX_ITERATIONS, mpath, self.lines, "max_iterations")
            raise self.err(
                path + ("max_iterations",),
                "max_iterations applies to a node inside a cyclic graph (a pipeline's steps never loop); "
                "set it in workflow_orchestration.graph's config or on one of its nodes",
            )
        explicit = step.get("id") or step.get("name")
        base = explicit or str(technique).rsplit(".", 1)[-1]
        nid = self.new_id(
            base, path + (("id" if "id" in step else "name"),) if explicit else path, explicit=bool(explicit)
        )
        self.make_node(nid, technique, step, path, group=nid, info_path=tpath, config=config)
        apply_for_each(self, self.graph.nodes[nid], step, path)
        return _Unit([nid], [nid])

    def refuse_compound_settings(self, step: dict[str, Any], path: Path, technique: str) -> None:
        """A graph or orchestration step is many nodes: a node setting on the step as a whole would be
        ambiguous (retry each node, or the whole graph?), so it is refused, pointing where it goes."""
        inner = "graph_definition.nodes[i]" if technique == GRAPH_TECHNIQUE else "steps[i]"
        defaults = {"retry", "timeout", "max_concurrent"} if technique == ORCHESTRATION_TECHNIQUE else set()
        defaults |= {"max_iterations", "max_concurrent"} if technique == GRAPH_TECHNIQUE else set()
        for key in COMPOUND_REFUSED:
            if key not in step:
                continue
            hint = f"set it on the nodes that need it (config.{inner}.{key})"
            if key in defaults:
                hint = f"put it under config: (config.{key} applies to every node of this step)"
            if key == "for_each":
                hint = f"put for_each on a node inside (config.{inner}.for_each)"
            raise self.err(
                path + (key,),
                f"'{key}' on a {technique} step is not applied to anything: {hint}",
            )

    # -- workflow_orchestration.graph -----------------------------------------------------------
    def graph_step(self, config: dict[str, Any], path: Path, step: dict[str, Any], index: int) -> _Unit:
        with _gc_paused():  # a 40k-node graph is ~10^6 new objects: no cyclic-GC passes over them meanwhile
            return self._graph_step(config, path, step, index)

    def graph_nodes(
        self, nodes: list[Any], gpath: Path, group: str, max_it: int, limit_key: str | None
    ) -> tuple[list[str], set[str]]:
        """A graph's nodes, in order, and their ids as a set (the edge checks' membership test: a
        list there made compile quadratic)."""
        ids: list[str] = []
        known: set[str] = set()
        for npath, nd in self.mappings(nodes, gpath + ("nodes",), GRAPH_NODE_KEYS, "a graph node"):
            if "id" not in nd:
                raise self.err(npath, "a graph node needs 'id'")
            technique = nd.get("technique", nd.get("use"))
            if technique is None:
                raise self.err(npath, f"graph node '{nd['id']}' needs 'technique'")
            nid = self.new_id(nd["id"], npath + ("id",), explicit=True)
            node = self.make_node(
                nid,
                technique,
                nd,
                npath,
                group=group,
                max_iterations=nd.get("max_iterations", max_it),
                info_path=npath + ("technique" if "technique" in nd else "use",),
            )
            apply_for_each(self, node, nd, npath)
            node.limit_key = limit_key
            ids.append(nid)
            known.add(nid)
        return ids, known

    def graph_edges(self, gdef: dict[str, Any], gpath: Path, ids: list[str], known: set[str]) -> list[Edge]:
        """A graph's edges, each end a node of this graph; at most one ``default`` (else) edge per node."""
        edges = gdef.get("edges") or []
        expect_list(edges, gpath + ("edges",), self.lines, "graph_definition.edges")
        sub_edges: list[Edge] = []
        defaults: set[str] = set()
        for epath, ed in self.mappings(edges, gpath + ("edges",), EDGE_KEYS, "an edge"):
            for end in ("from", "to"):
                if end not in ed:
                    raise self.err(epath, f"an edge needs '{end}'")
            targets = ed["to"] if isinstance(ed["to"], list) else [ed["to"]]
            for end, names in (("from", [ed["from"]]), ("to", targets)):
                for nm in names:
                    if not isinstance(nm, str) or nm not in known:
                        raise self.err(
                            epath + (end,),
                            f"edge {end} '{nm}': no node with that id in this graph"
                            f"{did_you_mean(str(nm), ids)}",
                        )
            default = ed.get("default", False)
            check_type(default, bool, epath + ("default",), self.lines, "default")
            if default:  # the else branch: fires when no other edge leaving the node fired
                if ed.get("condition") is not None:
                    raise self.err(
                        epath + ("default",), "an edge with 'default: true' cannot have a condition"
                    )
                if ed["from"] in defaults:
                    raise self.err(epath + ("default",), f"node '{ed['from']}' already has a default edge")
                defaults.add(ed["from"])
            for t in targets:
                sub_edges.append(
                    self.edge(ed["from"], t, epath, condition=ed.get("condition"), default=default)
                )
        return sub_edges

    def _graph_step(self, config: dict[str, Any], path: Path, step: dict[str, Any], index: int) -> _Unit:
        check_keys(config, GRAPH_CONFIG_KEYS, path, self.lines, "workflow_orchestration.graph config")
        mode = config.get("subtechnique", "dag")
        check_type(mode, list(GRAPH_MODES), path + ("subtechnique",), self.lines, "graph subtechnique")
        max_it = config.get("max_iterations", 10)
        check_type(max_it, int, path + ("max_iterations",), self.lines, "max_iterations")
        validate_value(max_it, MAX_ITERATIONS, path + ("max_iterations",), self.lines, "max_iterations")
        group = str(step.get("id") or step.get("name") or f"graph_{index}")
        limit_key = self.limit(config, path, group)
        if config.get("executor") is not None:
            self.executor_choice(config["executor"], path + ("executor",))
        only = DYNAMIC_ONLY if mode != "dynamic" else ("graph_definition",)
        for key in only:
            if key in config:
                raise self.err(
                    path + (key,),
                    f"'{key}' has no effect in a {mode} graph"
                    + (
                        " (it builds the graph of subtechnique: dynamic)"
                        if mode != "dynamic"
                        else ": a dynamic graph is whatever build_graph returns"
                    ),
                )
        if mode == "dynamic":
            return self.dynamic_step(config, path, step, group, max_it)
        gdef = config.get("graph_definition")
        if gdef is None:
            raise self.err(path, f"a {mode} graph needs 'graph_definition' with nodes and edges")
        gpath = path + ("graph_definition",)
        expect_mapping(gdef, gpath, self.lines, "graph_definition")
        check_keys(gdef, GRAPH_DEFINITION_KEYS, gpath, self.lines, "graph_definition")
        nodes = expect_list(gdef.get("nodes"), gpath + ("nodes",), self.lines, "graph_definition.nodes")
        if not nodes:
            raise self.err(gpath + ("nodes",), "graph_definition.nodes is empty")
        ids, known = self.graph_nodes(nodes, gpath, group, max_it, limit_key)
        sub_edges = self.graph_edges(gdef, gpath, ids, known)
        # the subgraph alone decides its back edges, entries and exits
        sub = GraphIR([self.graph.nodes[i] for i in ids], sub_edges)
        try:
            sub.finalize(allow_cycles=(mode == "cyclic"))
        except CycleFound as cyc:
            raise self.err(
                self._edge_path(cyc.edge),
                f"a {mode} graph cannot have cycles: {' -> '.join(cyc.cycle)} "
                f"(use subtechnique: cyclic for feedback loops)",
            ) from None
        heads = {e.dst for e in sub.back_edges}
        for i, nd in enumerate(nodes):
            if "max_iterations" in nd and nd["id"] not in heads:
                raise self.err(
                    gpath + ("nodes", i, "max_iterations"),
                    f"max_iterations on node '{nd['id']}' caps nothing: a loop counts the runs of the node "
                    f"its back edge re-enters ({', '.join(sorted(heads)) or 'this graph has no loop'})",
                )
        if mode == "cyclic" and not sub.back_edges:
            self.warnings.append(f"{format_path(path)}: cyclic graph has no cycle")
        entries = [n.id for n in sub.entries]
        if not entries:
            raise self.err(gpath + ("edges",), "graph has no entry node (every node has an incoming edge)")
        return _Unit(entries, sub.sinks())

    def _edge_path(self, edge: Edge) -> Path:
        # Edge.path is formatted; find the raw path back via the line map's keys is overkill: re-parse
        parts: list[Any] = []
        for token in edge.path.replace("]", "").replace("[", ".").split("."):
            parts.append(int(token) if token.isdigit() else token)
        return tuple(parts)

    def executor_choice(self, value: Any, path: Path) -> None:
        """One run has one scheduler and one executor: a graph's ``executor:`` chooses it for the pipeline."""
        from ..engine.executor_factory import document_address

        address = None if self.trusted else document_address(value)
        if address is not None:
            at = path
            if isinstance(value, dict):
                key = "scheduler_address" if "scheduler_address" in value else "address"
                at = path + (key,) if path + (key,) in self.lines._lines else path
            raise self.err(
                at,
                f"executor at scheduler address '{address}' comes from the document: a Dask client "
                f"unpickles what the scheduler sends, so this is code execution; pass trust_code=True, "
                f"or give the address from Python (execute(executor=...))",
                TrustError,
            )
        if self.executor is not None and self.executor != value:
            raise self.err(
                path,
                f"executor {value!r} conflicts with {self.executor!r} chosen earlier: "
                f"a pipeline runs on one executor",
            )
        self.executor = value

    def limit(self, config: dict[str, Any], path: Path, group: str) -> str | None:
        mc = config.get("max_concurrent")
        if mc is None:
            return None
        check_type(mc, int, path + ("max_concurrent",), self.lines, "max_concurrent")
        validate_value(mc, MAX_CONCURRENT, path + ("max_concurrent",), self.lines, "max_concurrent")
        self.graph.limits[group] = mc
        return group

    def dynamic_step(
        self, config: dict[str, Any], path: Path, step: dict[str, Any], group: str, max_it: int
    ) -> _Unit:
        builder = config.get("builder")
        code = config.get("builder_code")
        lang = config.get("graph_builder", "python")
        if lang != "python":
            raise self.err(
                path + ("graph_builder",),
                f"graph_builder '{lang}' is not supported: only python builders run in sibyl_nb",
            )
        if builder is None and code is None:
            raise self.err(
                path, "a dynamic graph needs 'builder_code' (Python defining build_graph) or 'builder'"
            )
        if code is not None:
            check_type(code, str, path + ("builder_code",), self.lines, "builder_code")
            import ast

            try:
                tree = ast.parse(code)
            except SyntaxError as exc:
                line = (self.lines.line(path + ("builder_code",)) or 0) + (exc.lineno or 0)
                raise SpecError(
                    f"builder_code does not parse: {exc.msg}",
                    path=format_path(path + ("builder_code",)),
                    line=line,
                    source=self.lines.source,
                ) from None
            if not any(isinstance(n, ast.FunctionDef) and n.name == "build_graph" for n in tree.body):
                raise self.err(path + ("builder_code",), "builder_code must define build_graph(input_data)")
        nid = self.new_id(step.get("id") or step.get("name") or "dynamic_graph", path, explicit=False)
        node = Node(
            nid,
            "workflow_orchestration.graph",
            {k: v for k, v in config.items()},
            kind="dynamic",
            max_iterations=max_it,
            group=group,
            path=format_path(path),
            line=self.lines.line(path),
        )
        node.limit_key = group if group in self.graph.limits else None
        self.node_paths[nid] = path
        self.graph.add_node(node)
        return _Unit([nid], [nid])

    # -- workflow_orchestration.orchestration -----------------------------------------------------
    def refuse_step_misreadings(self, st: dict[str, Any], spath: Path, nid: str) -> None:
        """An orchestration step's keys that would be read as something they are not."""
        if st.get("always") is not None:
            check_type(st["always"], bool, spath + ("always",), self.lines, "always")
            if "condition" in st:
                raise self.err(
                    spath + ("always",),
                    f"step '{nid}' says both 'always: {str(st['always']).lower()}' and 'condition': "
                    f"keep one (always: true runs it unconditionally; a condition decides)",
                )
        if "output" in st:
            raise self.err(
                spath + ("output",),
                f"'output' on step '{nid}' is not a setting: a step's output is its technique's return "
                f"value, read by later steps as ${{{nid}}} / ${{{nid}.field}}",
            )

    def combine_step(
        self, config: dict[str, Any], path: Path, names: list[str], own_node: Callable[..., Node]
    ) -> tuple[str, list[tuple[str, Path]]]:
        """The ``combine_step`` node (not one of the parallel workers) and what it waits for: its
        ``depends_on``, else every step."""
        combine = config["combine_step"]
        cpath = path + ("combine_step",)
        expect_mapping(combine, cpath, self.lines, "combine_step")
        check_keys(combine, COMBINE_KEYS, cpath, self.lines, "combine_step")
        cname = combine.get("name") or "combine"
        combine_id = self.new_id(cname, cpath + ("name",) if "name" in combine else cpath, explicit=True)
        ctech, ctpath = self.step_technique(combine, cpath, combine_id)
        own_node(combine_id, ctech, ctpath, combine, cpath).limit_key = None
        deps = (
            self.dep_list(combine["depends_on"], cpath + ("depends_on",))
            if "depends_on" in combine
            else [(n, cpath) for n in names]
        )
        for dep, dpath in deps:
            if dep not in names:
                raise self.err(dpath, f"depends_on '{dep}': no step with that name{did_you_mean(dep, names)}")
        return combine_id, deps

    def data_edges(
        self,
        order: list[str],
        data_deps: dict[str, list[tuple[str, Path]]],
        heads: dict[str, str],
        tails: dict[str, str],
        bypass: dict[str, str],
    ) -> dict[str, set[str]]:
        """Every ``${step...}`` reader waits for that step (a reference is an edge); a reader placed
        before the step it reads is an error. Returns each node's predecessors."""
        preds: dict[str, set[str]] = {}
        for e in self.graph.edges:
            preds.setdefault(e.dst, set()).add(e.src)
        for nid in order:
            for dep, dpath in data_deps.get(nid, ()):
                if _reaches(preds, tails[dep], heads[nid]):
                    continue
                if _reaches(preds, heads[nid], tails[dep]):
                    raise self.err(
                        dpath,
                        f"step '{nid}' reads ${{{dep}...}} but '{dep}' runs after '{nid}' "
                        f"(move '{dep}' earlier or use depends_on)",
                    )
                self.join(dep, nid, tails, bypass, dpath)
                preds.setdefault(heads[nid], set()).add(tails[dep])
                if dep in bypass and tails[dep] != dep:
                    preds[heads[nid]].add(dep)
        return preds

    def then_chain(self, nid: str, st: dict[str, Any], spath: Path, own_node: Callable[..., Node]) -> str:
        """Step ``nid``'s ``on_condition_true`` steps, chained after it (the first only when it ran);
        returns the last, which ends the step."""
        if st.get("condition") is None:
            self.warnings.append(f"{format_path(spath)}: on_condition_true without a condition always runs")
        chain_prev = nid
        then = st["on_condition_true"]
        tpath = spath + ("on_condition_true",)
        then_steps = expect_list(then, tpath, self.lines, "on_condition_true")
        for subpath, sub in self.mappings(then_steps, tpath, THEN_KEYS, "an on_condition_true step"):
            sid = self.new_id(
                sub.get("name") or sub.get("id") or f"{nid}_then",
                subpath,
                explicit=bool(sub.get("name") or sub.get("id")),
            )
            stech, stpath = self.step_technique(sub, subpath, sid)
            own_node(sid, stech, stpath, sub, subpath)
            self.edge(chain_prev, sid, subpath, when="ran" if chain_prev == nid else None)
            chain_prev = sid
        return chain_prev

    def orchestration_settings(self, config: dict[str, Any], path: Path) -> tuple[str, bool]:
        """An orchestration's config keys checked; its mode and whether it is lazy."""
        check_keys(config, ORCH_CONFIG_KEYS, path, self.lines, "workflow_orchestration.orchestration config")
        if "max_iterations" in config:
            raise self.err(
                path + ("max_iterations",),
                "an orchestration never loops, so max_iterations would limit nothing: "
                "loops are workflow_orchestration.graph with subtechnique: cyclic",
            )
        mode = config.get("subtechnique", "sequential")
        check_type(mode, list(ORCH_MODES), path + ("subtechnique",), self.lines, "orchestration subtechnique")
        lazy = config.get("lazy", False)
        check_type(lazy, bool, path + ("lazy",), self.lines, "lazy")
        return mode, lazy

    def refuse_unknown_deps(self, explicit_deps: dict[str, list[tuple[str, Path]]], names: list[str]) -> None:
        """Every ``depends_on`` names a step of this orchestration."""
        known = set(names)
        for deps in explicit_deps.values():
            for dep, dpath in deps:
                if dep not in known:
                    raise self.err(
                        dpath,
                        f"depends_on '{dep}': no step with that name in this orchestration"
                        f"{did_you_mean(dep, names)}",
                    )

    def orchestration_step(
        self, config: dict[str, Any], path: Path, step: dict[str, Any], index: int
    ) -> _Unit:
        mode, lazy = self.orchestration_settings(config, path)
        group = str(step.get("id") or step.get("name") or f"{mode}_{index}")
        limit_key = self.limit(config, path, group)
        steps = expect_list(config.get("steps"), path + ("steps",), self.lines, "orchestration steps")
        if not steps:
            raise self.err(path + ("steps",), "orchestration needs at least one step")
        default_retry = config.get("retry")
        ref_start = len(self.refs)
        names: list[str] = []
        heads: dict[str, str] = {}  # step name -> node that starts it
        tails: dict[str, str] = {}  # step name -> node that ends it (after on_condition_true)
        bypass: dict[str, str] = {}  # step name -> node whose bypass edge skips its on_condition_true chain
        explicit_deps: dict[str, list[tuple[str, Path]]] = {}

        def own_node(nid: str, technique: str, tpath: Path, st: dict[str, Any], spath: Path) -> Node:
            """A node from one step mapping (a step, an on_condition_true step, the combine_step): its own
            retry, on_error, condition, timeout and cache, else the orchestration's retry and timeout."""
            node = self.make_node(
                nid,
                technique,
                st,
                spath,
                group=group,
                info_path=tpath,
                retry=default_retry,
                timeout=config.get("timeout"),
            )
            node.limit_key = limit_key
            return node

        for spath, st in self.mappings(steps, path + ("steps",), ORCH_STEP_KEYS, "an orchestration step"):
            name = st.get("name") or st.get("id")
            if name is None:
                raise self.err(spath, "an orchestration step needs 'name'")
            nid = self.new_id(name, spath + ("name" if "name" in st else "id",), explicit=True)
            technique, tpath = self.step_technique(st, spath, nid)
            self.refuse_step_misreadings(st, spath, nid)
            node = own_node(nid, technique, tpath, st, spath)
            apply_for_each(self, node, st, spath)
            names.append(nid)
            heads[nid] = tails[nid] = nid
            if st.get("depends_on") is not None:
                explicit_deps[nid] = self.dep_list(st["depends_on"], spath + ("depends_on",))
            if st.get("on_condition_true") is not None:
                tails[nid] = self.then_chain(nid, st, spath, own_node)
                bypass[nid] = nid
        self.refuse_unknown_deps(explicit_deps, names)
        combine_id = None
        if config.get("combine_step") is not None:
            combine_id, explicit_deps[combine_id] = self.combine_step(config, path, names, own_node)
            heads[combine_id] = tails[combine_id] = combine_id

        data_deps = self.data_deps(self.refs[ref_start:], names, combine_id, tails)
        # Sequential/conditional steps follow the list (a step may read ctx.upstream, its predecessor).
        # Lazy: a step's inputs are its depends_on and the steps it references; only a step that
        # declares neither reads its predecessor. Parallel: no order but the data's.
        implicit_chain = mode != "parallel"
        prev: str | None = None
        for nid in names:
            if nid in explicit_deps:
                for dep, dpath in explicit_deps[nid]:
                    self.join(dep, nid, tails, bypass, dpath)
            elif implicit_chain and prev is not None and not (lazy and data_deps.get(nid)):
                self.join(prev, nid, tails, bypass, self.node_paths[nid])
            prev = nid
        if combine_id is not None:
            for dep, dpath in explicit_deps[combine_id]:
                self.join(dep, combine_id, tails, bypass, dpath)
        order = names + ([combine_id] if combine_id else [])
        preds = self.data_edges(order, data_deps, heads, tails, bypass)
        if combine_id:
            outputs = [combine_id]
        elif mode == "parallel":
            outputs = self.open_ends(order, tails)
        else:
            outputs = [names[-1]]
        if lazy:
            self.prune(order, outputs, preds, heads, tails, bypass)
        entries = [heads[n] for n in order if not any(e.dst == heads[n] for e in self.graph.edges)]
        exits = sorted(
            {x for o in outputs for x in self.exit_nodes(o, bypass, tails)},
            key=lambda x: list(self.graph.nodes).index(x),
        )
        return _Unit(entries, exits)

    def step_technique(self, st: dict[str, Any], spath: Path, nid: str) -> tuple[str, Path]:
        technique = st.get("technique", st.get("use"))
        if technique is not None:
            return technique, spath + ("technique" if "technique" in st else "use",)
        # The seed writes placeholder steps (``- name: task1``): use a technique registered under that
        # name if there is one, else a pass-through, and say so.
        if has_technique(nid):
            return nid, spath
        self.warnings.append(
            f"{format_path(spath)}: step '{nid}' has no technique; it passes its input "
            f"through (register one with @sibyl_nb.technique('{nid}'))"
        )
        return PASSTHROUGH, spath

    def join(self, dep: str, nid: str, tails: dict[str, str], bypass: dict[str, str], path: Path) -> None:
        self.edge(tails[dep], nid, path)
        if dep in bypass and tails[dep] != dep:
            # when the guarded step is skipped its on_condition_true chain is skipped too; go around it
            self.edge(dep, nid, path, when="bypassed")

    def exit_nodes(self, name: str, bypass: dict[str, str], tails: dict[str, str]) -> list[str]:
        return [tails[name], name] if name in bypass and tails[name] != name else [tails[name]]

    def open_ends(self, order: list[str], tails: dict[str, str]) -> list[str]:
        has_out = {e.src for e in self.graph.edges}
        return [n for n in order if tails[n] not in has_out]

    def prune(
        self,
        order: list[str],
        outputs: list[str],
        preds: dict[str, set[str]],
        heads: dict[str, str],
        tails: dict[str, str],
        bypass: dict[str, str],
    ) -> None:
        """Lazy mode: only steps an output needs (by depends_on, a ``${step}`` reference or the list
        order of a step that declares neither) ever run; the others are skipped."""
        needed: set[str] = set()
        todo = [x for o in outputs for x in self.exit_nodes(o, bypass, tails)]
        while todo:
            n = todo.pop()
            if n in needed:
                continue
            needed.add(n)
            todo.extend(preds.get(n, ()))
        for n in order:
            if heads[n] not in needed:
                self.pruned.add(n)

    def data_deps(
        self,
        refs: list[tuple[Ref, Path, str | None, str | None]],
        names: list[str],
        combine_id: str | None,
        tails: dict[str, str],
    ) -> dict[str, list[tuple[str, Path]]]:
        """Step -> the steps of this orchestration its templates and condition reference (its own
        on_condition_true chain and fallbacks count as the step)."""
        owner_step: dict[str, str] = {}
        for nid in names + ([combine_id] if combine_id else []):
            owner_step[nid] = nid
            for fb in self.graph.nodes[nid].fallbacks:
                owner_step[fb.id] = nid
        for nid in names:
            tail = tails[nid]
            if tail != nid:
                # the chain after a guarded step: walk it back to the step
                chain = [tail]
                while chain[-1] != nid:
                    src = next(e.src for e in self.graph.edges if e.dst == chain[-1])
                    chain.append(src)
                for sid in chain:
                    owner_step[sid] = nid
                    for fb in self.graph.nodes[sid].fallbacks:
                        owner_step[fb.id] = nid
        deps: dict[str, list[tuple[str, Path]]] = {}
        for ref, path, owner, _src in refs:
            step = owner_step.get(owner or "")
            if step is None or ref.root not in tails or ref.root == step:
                continue
            if ref.root not in (d for d, _ in deps.get(step, ())):
                deps.setdefault(step, []).append((ref.root, path))
        return deps

    # -- references -----------------------------------------------------------------------------
    def known_outputs(self, node_id: str) -> tuple[str, ...] | None:
        """The fields node ``node_id``'s output can have (None: not declared, anything goes).

        A node whose fallbacks may answer for it can have any of their fields too."""
        node = self.graph.nodes.get(node_id)
        if node is None or node.kind != "task":
            return None
        fields: list[str] = []
        for n in (node, *node.fallbacks):
            outs = _declared_outputs(n.technique, n.config)
            if outs is None:
                return None
            fields.extend(outs)
        return tuple(dict.fromkeys(fields))

    def check_refs(self, declared_inputs: tuple[str, ...]) -> dict[str, list[str]]:
        """Place every ``${name}`` by the table in :mod:`sibyl_nb.engine.scope`, at load time.

        Unknown names are typos (an error with a suggestion), required input fields, or, on an edge,
        ``${X.field}`` read from the edge's source (row 12, with a warning). A field of a node whose
        technique declares its outputs must be one of them."""
        node_ids = set(self.node_paths) | self.loose_names
        fields: set[str] = set()
        open_world = False
        for t in self.techniques:
            outs = get_technique(t).outputs
            if outs is None:
                open_world = True
            else:
                fields.update(outs)
        for nid in self.graph.nodes:
            outs = self.known_outputs(nid)
            if outs is not None:
                fields.update(outs)
        known = node_ids | fields | BUILTIN_NAMES | SESSION_NAMES | set(declared_inputs)
        required: dict[str, list[str]] = {}
        for ref, path, _owner, edge_src in self.refs:
            root = ref.root
            if root == ITEM and ITEM not in node_ids:
                if _owner in self.map_nodes:
                    continue
                raise self.err(
                    path,
                    f"${{{ITEM}}} is defined only in the config of a node with for_each"
                    + (f" (node '{_owner}' has none)" if _owner else ""),
                    ExpressionError,
                )
            line = self.lines.line(path)
            where = f"{format_path(path)} (line {line})" if line else format_path(path)
            var = env_name(ref)
            if var is not None:
                self.env_reads.append((var, where))
                continue
            if root in node_ids:
                self.check_field(ref, path)
                continue
            if root in known or ref.default is not None:
                continue
            if root in COMMON_INPUTS:
                required.setdefault(root, []).append(where)
                continue
            if root.startswith("previous_") and (root[9:] in fields or open_world or root[9:] in node_ids):
                continue
            close = [
                k
                for k in sorted(known, key=lambda k: _edit_distance(root, k))[:1]
                if _looks_like_typo(root, k)
            ]
            if close:
                raise self.err(
                    path,
                    f"unknown name '{root}' in {ref}; did you mean '{close[0]}'? "
                    f"(if it is an input field, list it under the pipeline's 'inputs:')",
                    ExpressionError,
                )
            if edge_src is not None and ref.fields:
                # row 12: the seed writes ${evaluation.score} on the edge leaving node 'evaluate'
                self.aliases[(edge_src, root)] = edge_src
                self.warnings.append(
                    f"{where}: no node, input or output field is called '{root}', so {ref} reads the "
                    f"output of '{edge_src}' (the edge's source); an input field '{root}' would win"
                )
                continue
            if is_env_name(root):
                raise self.err(
                    path,
                    f"{ref} is not read from the environment here: environment variables reach a document "
                    f"only in connection settings ({', '.join(sorted(CONNECTION_KEYS))}) or as an explicit "
                    f"${{env:{root}}}; if '{root}' is an input field, list it under 'inputs:'",
                    ExpressionError,
                )
            if declared_inputs:
                raise self.err(
                    path,
                    f"unknown name '{root}' in {ref}: not a node, a declared input "
                    f"({', '.join(declared_inputs)}) or a session field",
                    ExpressionError,
                )
            required.setdefault(root, []).append(where)
        return required

    def check_field(self, ref: Ref, path: Path) -> None:
        """``${src.cout}``: a field typo is caught here when ``src``'s technique declares its outputs."""
        if not ref.fields or not isinstance(ref.fields[0], str):
            return
        outs = self.known_outputs(ref.root)
        if outs is None or ref.fields[0] in outs:
            return
        name = ref.fields[0]
        raise self.err(
            path,
            f"{ref}: node '{ref.root}' has no output field '{name}'{did_you_mean(name, outs)}; "
            f"its technique {self.graph.nodes[ref.root].technique} returns: {', '.join(outs)}",
            ExpressionError,
        )

    def check_env_policy(self) -> None:
        """Where an environment variable may be read (the policy in :mod:`sibyl_nb.document.templates`)."""
        for ref, path, _owner, _src in self.refs:
            var = env_name(ref)
            if var is None:
                continue
            line = self.lines.line(path)
            where = f"{format_path(path)} (line {line})" if line else format_path(path)
            self.warnings.append(f"{where}: reads environment variable {var}")
            if self.trusted:
                continue
            key = path[-1] if path else None
            if key not in CONNECTION_KEYS or path in self.embedded_env:
                raise self.err(
                    path,
                    f"{ref} would read environment variable {var} into '{key}': an untrusted document "
                    f"reads the environment only in connection settings ({', '.join(sorted(CONNECTION_KEYS))}); "
                    f"pass trust_code=True to allow it",
                    TrustError,
                )


BUILT_NODE_OPTIONS = ("retry", "timeout", "cache", "condition", "max_iterations")


def built_node_options(options: dict[str, Any], path: Path, source: str) -> dict[str, Any]:
    """``Graph.add_node(id, technique, config, retry=..., timeout=..., cache=..., condition=...,
    max_iterations=...)`` checked exactly as the same keys on a YAML node; returns :class:`Node` fields.
    Anything else is refused (a built graph has no YAML line: errors name the builder and the node)."""
    unknown = [k for k in options if k not in BUILT_NODE_OPTIONS]
    if unknown:
        raise SpecError(
            f"add_node option '{unknown[0]}' is not a node setting{did_you_mean(unknown[0], BUILT_NODE_OPTIONS)} "
            f"(known: {', '.join(BUILT_NODE_OPTIONS)})",
            path=format_path(path),
            source=source,
        )
    comp = _Compiler(str(path[0]) if path else "built", LineMap(source=source), trusted=False)
    out: dict[str, Any] = {}
    if options.get("retry") is not None:
        out["retry"] = comp.retry(options["retry"], path + ("retry",))
    if options.get("timeout") is not None:
        validate_value(options["timeout"], STEP_TIMEOUT, path + ("timeout",), comp.lines, "timeout")
        out["timeout"] = float(options["timeout"])
    if options.get("cache") is not None:
        check_type(options["cache"], bool, path + ("cache",), comp.lines, "cache")
        out["cache"] = options["cache"]
    if options.get("condition") is not None:
        out["guard"] = comp.condition(options["condition"], path + ("condition",), None)
    if options.get("max_iterations") is not None:
        mi = options["max_iterations"]
        check_type(mi, int, path + ("max_iterations",), comp.lines, "max_iterations")
        validate_value(mi, MAX_ITERATIONS, path + ("max_iterations",), comp.lines, "max_iterations")
        out["max_iterations"] = mi
    return out


def _reaches(preds: dict[str, set[str]], src: str, dst: str) -> bool:
    """Is ``src`` an ancestor of (or the same node as) ``dst``, walking ``preds`` back from ``dst``?"""
    seen = {dst}
    todo = [dst]
    while todo:
        n = todo.pop()
        if n == src:
            return True
        for p in preds.get(n, ()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return False


def _value_at(value: Any, rel: Path) -> Any:
    for key in rel:
        value = value[key]
    return value


def _declared_outputs(technique: str, config: dict[str, Any]) -> tuple[str, ...] | None:
    if not has_technique(technique):
        return None
    info = get_technique(technique)
    if info.outputs_for is not None:
        try:
            outs = info.outputs_for(config)
        except Exception:  # a config the technique itself will refuse at run time
            return info.outputs
        return None if outs is None else tuple(outs)
    return info.outputs


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Collect cycles after, not during, building a large graph: each pass walks every object made so
    far, which turned a linear compile into a growing cost per node (40k vs 4k nodes: 1.4x per node)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def compile_pipeline(
    name: str, spec: dict[str, Any], path: Path, lines: LineMap, *, trusted: bool = False
) -> PipelineSpec:
    expect_mapping(spec, path, lines, f"pipeline '{name}'")
    check_keys(spec, PIPELINE_KEYS, path, lines, f"pipeline '{name}'")
    if "steps" not in spec:
        raise lines.error(path, f"pipeline '{name}' has no 'steps'")
    comp = _Compiler(name, lines, trusted)
    inputs = spec.get("inputs") or []
    if isinstance(inputs, dict):
        inputs = tuple(inputs)
    elif isinstance(inputs, list):
        inputs = tuple(str(x) for x in inputs)
    else:
        check_type(inputs, list, path + ("inputs",), lines, "inputs")
    mc = spec.get("max_concurrent")
    if mc is not None:
        check_type(mc, int, path + ("max_concurrent",), lines, "max_concurrent")
        validate_value(mc, MAX_CONCURRENT, path + ("max_concurrent",), lines, "max_concurrent")
        comp.graph.max_concurrent = mc
    executor = spec.get("executor")
    if spec.get("scheduler_address") is not None:
        address = spec["scheduler_address"]
        check_type(address, str, path + ("scheduler_address",), lines, "scheduler_address")
        if executor not in (None, "dask") and not isinstance(executor, dict):
            raise lines.error(
                path + ("scheduler_address",), f"scheduler_address needs executor: dask, not {executor!r}"
            )
        executor = {
            **(executor if isinstance(executor, dict) else {}),
            "kind": "dask",
            "scheduler_address": address,
        }
    if executor is not None:
        where = "scheduler_address" if spec.get("scheduler_address") is not None else "executor"
        comp.executor_choice(executor, path + (where,))
    exits = comp.pipeline(spec["steps"], path + ("steps",))
    comp.graph.exits = exits
    comp.graph.finalize()
    required = comp.check_refs(tuple(inputs))
    comp.check_env_policy()
    return PipelineSpec(
        name=name,
        graph=comp.graph,
        source=lines.source,
        lines=lines,
        required_inputs=required,
        declared_inputs=tuple(inputs),
        aliases=comp.aliases,
        env_reads=tuple(comp.env_reads),
        pruned=frozenset(comp.pruned),
        warnings=comp.warnings,
        description=str(spec.get("description") or ""),
        executor=comp.executor,
        trusted=trusted,
        subgraphs=comp.subgraphs,
    )


def compile_document(
    data: Any, lines: LineMap, *, trusted: bool = False, default_name: str = "pipeline"
) -> Document:
    """A whole document (``pipelines:``/``shops:``/``observability:``/``providers:``) or bare steps."""
    if isinstance(data, list):
        data = {"steps": data}
        lines = _shifted(lines)
    if not isinstance(data, dict):
        raise lines.error((), "a pipeline document must be a mapping with 'pipelines:' or 'steps:'")
    pipelines: dict[str, PipelineSpec] = {}
    if "steps" in data and "pipelines" not in data:
        extra = {k: v for k, v in data.items() if k not in ("shops", "observability", "providers")}
        pipelines[default_name] = compile_pipeline(default_name, extra, (), lines, trusted=trusted)
    else:
        check_keys(
            data,
            ("pipelines", "shops", "observability", "providers", "version", "description"),
            (),
            lines,
            "the document",
        )
        pdefs = expect_mapping(data.get("pipelines") or {}, ("pipelines",), lines, "pipelines")
        for name, spec in pdefs.items():
            pipelines[str(name)] = compile_pipeline(
                str(name), spec, ("pipelines", name), lines, trusted=trusted
            )
    link_subgraphs(pipelines, lines)
    infra = _section(data.get("shops"), lines, trusted)
    obs = data.get("observability") or {}
    expect_mapping(obs, ("observability",), lines, "observability")
    validate_config(obs, OBSERVABILITY_SCHEMA, ("observability",), lines, "observability", trusted=trusted)
    providers = data.get("providers") or {}
    expect_mapping(providers, ("providers",), lines, "providers")
    if providers:  # the provider registry is imported only for a document that declares providers
        from ..providers.registry import registered_provider_kinds

        validate_providers(providers, lines, trusted=trusted, registered_kinds=registered_provider_kinds())
    rendered: dict[str, dict[str, Any]] = {}
    for pname, pconf in providers.items():
        expect_mapping(pconf, ("providers", pname), lines, f"provider '{pname}'")
        rendered[str(pname)] = _provider_config(str(pname), pconf, lines, trusted)
    if not pipelines and not infra and not obs and not providers:
        raise lines.error((), "the document defines no pipeline (expected 'pipelines:' or 'steps:')")
    return Document(
        pipelines=pipelines,
        infrastructure=infra,
        observability=dict(obs),
        providers=rendered,
        source=lines.source,
        lines=lines,
        data=data,
    )


def _provider_config(name: str, conf: dict[str, Any], lines: LineMap, trusted: bool) -> dict[str, Any]:
    """A provider entry with its ``base_url`` read from the environment where it names a variable.

    Only ``base_url`` may hold a reference (a connection setting, the whole value: ``"${VLLM_URL}"``).
    An untrusted document may not make a provider send a key from the environment anywhere but the
    kind's own endpoint: ``api_key_env: AWS_SECRET_ACCESS_KEY`` with ``base_url: https://attacker/``
    would hand the secret to whoever runs that server."""
    path: Path = ("providers", name)
    out = dict(conf)
    try:
        render, refs = compile_value(conf, path)
    except ExpressionError as exc:
        raise lines.error(getattr(exc, "yaml_path", path), exc.message, ExpressionError) from None
    for ref, rpath in refs:
        key = rpath[2] if len(rpath) > 2 else None
        if key != "base_url" or env_name(ref) is None or len(rpath) != 3:
            raise lines.error(
                rpath,
                f"provider '{name}': {ref} is not allowed here: only base_url may read an environment "
                f"variable (the key comes from api_key_env, which names the variable)",
                ExpressionError,
            )
        if not trusted and conf["base_url"].strip() != "${" + ref.text + "}":
            raise lines.error(
                rpath,
                f"provider '{name}': base_url reads {env_name(ref)} inside a longer URL; an untrusted "
                f"document may only use a variable as the whole URL (or pass trust_code=True)",
                TrustError,
            )
    if render is not None:
        from ..engine.scope import env_value

        out = render(env_value)
    if trusted:
        return out
    kind = str(conf.get("kind") or conf.get("type") or "local")
    if kind == "local":
        return out
    key_var = conf.get("api_key_env", "OPENAI_API_KEY" if kind == "openai" else None)
    if not key_var:
        return out
    from ..providers.openai_compat import KIND_DEFAULT_BASE_URLS

    own = KIND_DEFAULT_BASE_URLS.get(kind)
    url = out.get("base_url") or own
    if own is None or str(url).rstrip("/") != own.rstrip("/"):
        where = ("api_key_env",) if "api_key_env" in conf else ("base_url",) if "base_url" in conf else ()
        raise lines.error(
            path + where,
            f"provider '{name}': an untrusted document may not send the key in ${key_var} to {url!r}: "
            f"a key from the environment goes only to the kind's own endpoint ({own or 'none for ' + kind}); "
            f"pass trust_code=True or register the provider from Python",
            TrustError,
        )
    return out


def _check_setting_refs(config: Any, path: Path, lines: LineMap, trusted: bool) -> None:
    """Settings are read before any node runs: their references can only be environment variables,
    under the same policy as node configs (connection settings, or ``${env:NAME}`` when trusted)."""
    try:
        _, refs = compile_value(config, path)
    except ExpressionError as exc:
        raise lines.error(getattr(exc, "yaml_path", path), exc.message, ExpressionError) from None
    for ref, rpath in refs:
        key = rpath[-1] if rpath else None
        if key in RUN_TEMPLATES and env_name(ref) is None:
            continue  # rendered per step at run time, in the scope table's terms
        if env_name(ref) is None:
            raise lines.error(
                rpath,
                f"{ref}: a setting can only read an environment variable (${{NAME}} in "
                f"{', '.join(sorted(CONNECTION_KEYS))}, or ${{env:NAME}})",
                ExpressionError,
            )
        if trusted:
            continue
        whole = _value_at(config, rpath[len(path) :]) == "${" + ref.text + "}"
        if key not in CONNECTION_KEYS or not whole:
            raise lines.error(
                rpath,
                f"{ref} would read environment variable {env_name(ref)} into '{key}': an untrusted "
                f"document reads the environment only as the whole value of a connection setting; "
                f"pass trust_code=True to allow it",
                TrustError,
            )


def _section(shops: Any, lines: LineMap, trusted: bool = False) -> dict[str, Any]:
    if shops is None:
        return {}
    expect_mapping(shops, ("shops",), lines, "shops")
    check_keys(shops, ("infrastructure",), ("shops",), lines, "shops")
    infra = shops.get("infrastructure")
    if infra is None:
        return {}
    ipath = ("shops", "infrastructure")
    expect_mapping(infra, ipath, lines, "shops.infrastructure")
    check_keys(infra, ("config",), ipath, lines, "shops.infrastructure")
    config = expect_mapping(
        infra.get("config") or {}, ipath + ("config",), lines, "shops.infrastructure.config"
    )
    validate_config(
        config, INFRA_SCHEMA, ipath + ("config",), lines, "shops.infrastructure.config", trusted=trusted
    )
    _check_setting_refs(config, ipath + ("config",), lines, trusted)
    return dict(config)


def _shifted(lines: LineMap) -> LineMap:
    """A bare list document: paths gain a leading 'steps'."""
    shifted = LineMap(source=lines.source)
    for path, line in lines._lines.items():
        shifted.set(("steps",) + tuple(path), line)
    return shifted


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (small strings only: names in templates)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _looks_like_typo(name: str, known: str) -> bool:
    """A slip of the keyboard, not a different word: ``clasify``/``classify`` yes,
    ``needs_expensive_step``/``expensive_step`` no."""
    return _edit_distance(name, known) <= max(1, min(len(name), len(known)) // 4)


set_node_option_checker(built_node_options)
