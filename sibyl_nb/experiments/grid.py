"""Grid expansion: ``{"node_id.config.key": [values]}`` -> one compiled pipeline per combination.

Why re-compile the document instead of patching compiled nodes: a grid value is then checked exactly
like the same value written in the YAML (types, subtechniques, ``${...}`` names), and the variant is
what a document with that value would run — nothing accepted and then ignored. A key that names no
node, or no config key of that node's technique, is refused before anything runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SibylError, SpecError

__all__ = ["GridError", "GridKey", "Setting", "parse_grid", "expand_grid", "canonical", "digest"]

MAX_VARIANTS = 512  # compiled settings kept per pipeline object (least recently used go first)


class GridError(SibylError):
    """A grid key or value the pipeline cannot take (names the key)."""


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): equal data, equal text, in any process."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def digest(value: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()[:n]


@dataclass(frozen=True)
class GridKey:
    """``node_id.config.a.b`` split into the node and the path inside its config."""

    text: str
    node_id: str
    config_path: tuple[str | int, ...]


@dataclass
class Setting:
    """One combination of grid values and the pipeline compiled with it."""

    index: int
    params: dict[str, Any]
    pipeline: Any
    hash: str  # of the pipeline definition and providers: what decides the outputs
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> technique, config, after


def _node_ids(pipeline: Any) -> list[str]:
    return [n.id for n in pipeline.spec.graph.nodes.values() if n.kind == "task"]


def parse_key(pipeline: Any, text: Any) -> GridKey:
    """Check one grid key against the pipeline; errors name the key and what was expected."""
    from ..document.schema import did_you_mean
    from ..techniques.registry import get_technique

    if not isinstance(text, str) or not text:
        raise GridError(f"grid key {text!r}: write keys as 'node_id.config.key'")
    nodes = pipeline.spec.graph.nodes
    parts = text.split(".")
    node_id = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest prefix that is a node id (ids may hold dots)
        candidate = ".".join(parts[:cut])
        if candidate in nodes and nodes[candidate].kind == "task":
            node_id, rest = candidate, parts[cut:]
            break
    ids = _node_ids(pipeline)
    if node_id is None:
        head = parts[0]
        raise GridError(
            f"grid key '{text}': pipeline '{pipeline.name}' has no node '{head}'{did_you_mean(head, ids)} "
            f"(nodes: {', '.join(ids)})"
        )
    if len(rest) < 2 or rest[0] != "config":
        raise GridError(
            f"grid key '{text}': write it as '{node_id}.config.<key>' (a key of the node's config)"
        )
    path: list[str | int] = [int(p) if p.isdigit() else p for p in rest[1:]]
    node = nodes[node_id]
    info = get_technique(node.technique)
    top = path[0]
    from ..document.schema import as_schema

    # any key of the technique's schema (whether the setting's subtechnique reads it is checked when
    # the variant compiles, at the key's line), or one the node already sets
    known = set(node.config) | set(as_schema(info.config_schema).fields)
    if info.subtechniques is not None:
        known.add("subtechnique")
    if top not in known:
        raise GridError(
            f"grid key '{text}': node '{node_id}' ({node.technique}) has no config key '{top}'"
            f"{did_you_mean(str(top), sorted(map(str, known)))}"
            f" (known: {', '.join(sorted(map(str, known))) or 'none'})"
        )
    if len(path) > 1:  # a nested key must exist: there is no schema below the top level to check it against
        cur: Any = node.config.get(top)
        for i, p in enumerate(path[1:], 1):
            ok = (isinstance(cur, Mapping) and p in cur) or (
                isinstance(cur, list) and isinstance(p, int) and p < len(cur)
            )
            if not ok:
                where = ".".join(map(str, path[:i]))
                raise GridError(f"grid key '{text}': '{node_id}.config.{where}' has no key '{p}'")
            cur = cur[p]
    return GridKey(text, node_id, tuple(path))


def parse_grid(pipeline: Any, grid: Mapping[str, Sequence[Any]] | None) -> list[tuple[GridKey, list[Any]]]:
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise GridError(f"grid must be a mapping of 'node_id.config.key' to a list of values, got {grid!r}")
    out = []
    for key, values in grid.items():
        gk = parse_key(pipeline, key)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise GridError(
                f"grid key '{key}': values must be a list, got {type(values).__name__} {values!r}"
            )
        if not values:
            raise GridError(f"grid key '{key}': the list of values is empty")
        out.append((gk, list(values)))
    return out


def _path_tuple(formatted: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for token in formatted.replace("]", "").replace("[", ".").split("."):
        if token:
            parts.append(int(token) if token.isdigit() else token)
    return tuple(parts)


def _set(data: Any, node: Any, key: GridKey, value: Any) -> None:
    target = data
    for p in _path_tuple(node.path):
        target = target[p]
    cfg = target.get("config")
    if cfg is None:
        cfg = target["config"] = {}
    for p in key.config_path[:-1]:
        cfg = cfg[p]
    cfg[key.config_path[-1]] = copy.deepcopy(value)


def definition_of(pipeline: Any) -> dict[str, Any]:
    """What decides a pipeline's outputs: its own definition and the providers it may call."""
    doc = pipeline.document
    if not isinstance(doc.data, Mapping):  # built without a document: the compiled nodes are the definition
        return {"pipeline": pipeline.name, "nodes": node_table(pipeline), "providers": doc.providers}
    data = doc.data
    if "pipelines" in data:
        body = (data.get("pipelines") or {}).get(pipeline.name)
    else:
        body = {k: v for k, v in data.items() if k not in ("shops", "observability", "providers")}
    return {"pipeline": pipeline.name, "definition": body, "providers": doc.providers}


def node_table(pipeline: Any) -> dict[str, dict[str, Any]]:
    """Per node: technique, declared config and forward predecessors (stored with a sweep, for diffs)."""
    return graph_node_table(pipeline.spec.graph)


def graph_node_table(graph: Any) -> dict[str, dict[str, Any]]:
    after: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for e in graph.edges:
        if not e.back:
            after[e.dst].append(e.src)
    return {
        n.id: {"technique": n.technique, "config": copy.deepcopy(n.config), "after": after[n.id]}
        for n in graph.nodes.values()
        if n.kind == "task"
    }


def _memo_key(pipeline: Any, keys: list[tuple[GridKey, Any]]) -> str | None:
    """The exact values as JSON, key order kept (a mapping's order may matter to what runs); None when
    a value is not plain JSON (two objects may share a repr: those are compiled every time)."""
    try:
        return json.dumps([pipeline.trusted, [[k.text, v] for k, v in keys]], ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def variant(pipeline: Any, keys: list[tuple[GridKey, Any]]) -> Any:
    """``pipeline`` re-compiled from its document with each grid value written in place.

    Each distinct setting is compiled once per pipeline object and kept on it, so re-running a sweep
    (the notebook's edit-and-re-run loop, where the cells themselves come from the store) compiles
    nothing: compiling was most of a stored re-run's time. The pipeline's document does not change
    after loading, so the same values always compile to the same variant."""
    from ..document.compile import compile_document
    from ..pipeline import Pipeline

    doc = pipeline.document
    if doc.data is None or doc.lines is None:
        raise GridError(
            f"pipeline '{pipeline.name}' was not loaded from a document: build it with "
            f"Pipeline.from_yaml or Pipeline.from_dict to sweep a grid over it"
        )
    memo: dict[str, Any] = pipeline.__dict__.setdefault("_sibyl_variants", {})
    memo_key = _memo_key(pipeline, keys)
    out = memo.pop(memo_key, None) if memo_key is not None else None
    if memo_key is not None and out is not None:
        memo[memo_key] = out  # the most recently used last
    else:
        data = copy.deepcopy(doc.data)
        nodes = pipeline.spec.graph.nodes
        for key, value in keys:
            _set(data, nodes[key.node_id], key, value)
        try:
            new_doc = compile_document(data, doc.lines, trusted=pipeline.trusted, default_name=pipeline.name)
        except SpecError as exc:
            shown = ", ".join(f"{k.text}={v!r}" for k, v in keys)
            raise GridError(f"grid setting {shown}: {exc}") from None
        out = Pipeline.from_document(new_doc, pipeline.name, trusted=pipeline.trusted)
        if memo_key is not None:
            memo[memo_key] = out
            while len(memo) > MAX_VARIANTS:  # a long notebook session: forget the least recently used
                del memo[next(iter(memo))]
    # what the user may have changed on the pipeline since: taken afresh on every sweep
    out._provider_cache = pipeline._providers()  # same providers section: share clients and replay
    settings = getattr(pipeline, "_sibyl_settings", None)
    if settings:
        out._sibyl_settings = dict(settings)
    else:
        out.__dict__.pop("_sibyl_settings", None)
    out.hooks = list(pipeline.hooks)
    out.executor = pipeline.executor
    return out


def expand_grid(pipeline: Any, grid: Mapping[str, Sequence[Any]] | None) -> list[Setting]:
    """Every combination, in the grid's key order (the last key varies fastest)."""
    keys = parse_grid(pipeline, grid)
    if not keys:
        return [Setting(0, {}, pipeline, digest(definition_of(pipeline)), node_table(pipeline))]
    settings = []
    for i, combo in enumerate(itertools.product(*(values for _, values in keys))):
        pairs = [(k, v) for (k, _), v in zip(keys, combo, strict=True)]
        pipe = variant(pipeline, pairs)
        params = {k.text: v for k, v in pairs}
        settings.append(Setting(i, params, pipe, digest(definition_of(pipe)), node_table(pipe)))
    return settings
