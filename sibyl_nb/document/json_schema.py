"""The document format as JSON Schema (draft 2020-12), generated from the objects the loader validates with.

Technique configs, retry, ``shops.infrastructure.config``, ``observability`` and ``providers`` come from
their :class:`~sibyl_nb.document.schema.ConfigSchema` (types, ranges, enums, defaults, descriptions, which keys
each subtechnique uses). The document's structure (pipeline, step, graph and orchestration keys) comes from
the key lists ``document/compile.py`` checks with; only the one-line description and JSON type of each
structural key live here, and a test fails when a key list and this table disagree.

Nothing is written by hand beside the loader: ``sibyl schema`` prints this, ``sibyl.schema.json`` in the
repository is its output, and a test fails when the file is stale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .schema import (
    INFRA_SCHEMA,
    MAX_CONCURRENT,
    MAX_ITERATIONS,
    OBSERVABILITY_SCHEMA,
    PROVIDER_SCHEMA,
    RETRY_SCHEMA,
    STEP_TIMEOUT,
    ConfigSchema,
    Field,
)

__all__ = [
    "json_schema",
    "builtin_techniques",
    "field_json",
    "config_json",
    "SCHEMA_ID",
    "NOT_EXPRESSED",
    "STRUCTURE",
]

SCHEMA_ID = "https://sibyl-nb.dev/sibyl.schema.json"
TEMPLATED = {"type": "string", "pattern": r"\$\{", "description": "a ${...} value, rendered at run time"}

# What JSON Schema cannot say, so the loader alone checks it (said in the schema's description too).
NOT_EXPRESSED = (
    "relations between keys of one config (Rule: reserve_tokens < max_tokens, chunk overlap < size)",
    "references: ${node.field} must name an earlier node's output, depends_on an earlier step, "
    "an edge's from/to a node, a subgraph an existing pipeline",
    "conditions and templates must parse (expression syntax and its bounds)",
    "node ids are unique; list items are unique by a key (hierarchical levels' name)",
    "trust: paths, URLs, builder_code and Dask addresses an untrusted document may not reach",
    "finite numbers: JSON has no NaN or Infinity; YAML's .nan / .inf are refused by the loader",
    "the environment-variable policy (${NAME} only in connection settings)",
    "an open (user) technique schema's typo check: unknown keys close to a declared one",
)

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _types(t: Any) -> list[str]:
    types = t if isinstance(t, tuple) else (t,)
    out: list[str] = []
    for x in types:
        name = _JSON_TYPES.get(x)
        if name is None:
            return []  # an arbitrary Python type: any value
        if name == "integer" and "number" in out:
            continue
        if name == "number" and "integer" in out:
            out.remove("integer")
        out.append(name)
    return out


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def field_json(spec: Field) -> dict[str, Any]:
    """One :class:`Field` as a JSON Schema; null is accepted (the loader treats a null value as unset)."""
    t = spec.type
    out: dict[str, Any] = {}
    if spec.description:
        out["description"] = spec.description
    if spec.default is not None and not (isinstance(spec.default, float) and not math.isfinite(spec.default)):
        out["default"] = spec.default
    if spec.enum is not None:
        choices: list[dict[str, Any]] = [{"enum": list(spec.enum)}]
    elif isinstance(t, (list, tuple)) and t and any(isinstance(x, str) for x in t):
        extra = _types(tuple(x for x in t if isinstance(x, type)))
        choices = [{"enum": [x for x in t if isinstance(x, str)]}] + [{"type": x} for x in extra]
    else:
        body: dict[str, Any] = {}
        types = _types(t)
        if types:
            body["type"] = types[0] if len(types) == 1 else types
        for key, attr in (
            ("minimum", "minimum"),
            ("maximum", "maximum"),
            ("exclusiveMinimum", "exclusive_minimum"),
            ("exclusiveMaximum", "exclusive_maximum"),
        ):
            value = getattr(spec, attr)
            if value is not None:
                body[key] = _num(value)
        if spec.max_items is not None:
            body["maxItems"] = spec.max_items
        if spec.items is not None:
            body["items"] = _nested(spec.items)
        if spec.values is not None:
            if isinstance(spec.values, ConfigSchema):
                body.update(config_json(spec.values))  # object keywords: an array ignores them
            else:
                body["additionalProperties"] = _nested(spec.values)
        if spec.unique_key is not None:
            body["description"] = f"no two items share the same '{spec.unique_key}' (checked by the loader)"
        choices = [body]
    choices += [TEMPLATED, {"type": "null"}]
    out["anyOf"] = choices
    return out


def _nested(spec: Any) -> dict[str, Any]:
    if isinstance(spec, ConfigSchema):
        return {"type": "object", **config_json(spec)}
    return field_json(spec)


def config_json(schema: ConfigSchema, subtechniques: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A :class:`ConfigSchema` as an object schema; each subtechnique's keys through ``if``/``then``.

    ``subtechniques``: the names the selector accepts when the schema has no per-mode key table
    (a user technique registered with ``subtechniques=`` only)."""
    props: dict[str, Any] = {k: field_json(f) for k, f in schema.fields.items()}
    out: dict[str, Any] = {}
    if schema.description:
        out["description"] = schema.description
    modes = tuple(schema.subtechniques) if schema.subtechniques is not None else subtechniques
    if modes is not None and schema.selector not in props:
        sel: dict[str, Any] = {"anyOf": [{"enum": list(modes)}, TEMPLATED]}
        if schema.default_subtechnique is not None:
            sel["default"] = schema.default_subtechnique
        sel["description"] = f"which {schema.selector} runs"
        props = {schema.selector: sel, **props}
    out["properties"] = props
    if schema.required:
        out["required"] = list(schema.required)
    conds: list[dict[str, Any]] = []
    if schema.closed:
        if schema.subtechniques is None:
            out["additionalProperties"] = False
            if modes is not None and schema.selector not in schema.fields:
                pass  # the selector is in props already
        else:
            out["propertyNames"] = {"enum": list(props)}
            for mode, _keys in schema.subtechniques.items():
                allowed = list(schema.keys_for(mode))
                conds.append(
                    {
                        "if": {
                            "properties": {schema.selector: {"const": mode}},
                            "required": [schema.selector],
                        },
                        "then": {"propertyNames": {"enum": allowed}},
                    }
                )
            if schema.default_subtechnique is not None:
                conds.append(
                    {
                        "if": {"not": {"required": [schema.selector]}},
                        "then": {"propertyNames": {"enum": list(schema.keys_for(None))}},
                    }
                )
    for key, (other, wanted) in (schema.requires or {}).items():
        conds.append(
            {
                "if": {"properties": {key: {"not": {"type": "null"}}}, "required": [key]},
                "then": {"properties": {other: {"const": wanted}}, "required": [other]},
            }
        )
    if schema.rules:
        rules = ", ".join(f"{r.left} {r.op} {r.right}" for r in schema.rules)
        out["description"] = (out.get("description", "") + f" (checked by the loader: {rules})").strip()
    if conds:
        out["allOf"] = conds
    return out


# ---------------------------------------------------------------------------------------------------
# The document's structure: the key lists of document/compile.py, each key's JSON type and description here.

_STR = {"type": "string"}
_STR_OR_LIST = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_ANY_MAP = {"type": ["object", "null"]}
_REF = "#/$defs/"
_FOR_EACH = {"description": "run this node once per item (a list or a ${...} naming one)"}

STRUCTURE: dict[str, dict[str, dict[str, Any]]] = {
    "pipeline": {
        "shop": {**_STR, "description": "the shop (namespace) the pipeline belongs to"},
        "steps": {"$ref": _REF + "steps", "description": "the steps, run in order unless depends_on says"},
        "description": {**_STR, "description": "what the pipeline does"},
        "inputs": {
            "type": ["array", "object", "null"],
            "description": "input fields the pipeline expects (a list of names, or a mapping)",
        },
        "max_concurrent": field_json(MAX_CONCURRENT),
        "executor": {"description": "where nodes run: local, threads, processes, dask or a mapping"},
        "name": {**_STR, "description": "display name"},
        "scheduler_address": {**_STR, "description": "Dask scheduler address (needs trust)"},
    },
    "step": {
        "use": {**_STR, "description": "the technique: shop.technique"},
        "technique": {**_STR, "description": "same as use"},
        "config": {**_ANY_MAP, "description": "the technique's settings"},
        "id": {**_STR, "description": "node id (defaults to the technique's last part)"},
        "name": {**_STR, "description": "same as id"},
        "retry": {"$ref": _REF + "retry", "description": "retry policy (a mapping, or max_attempts)"},
        "on_error": {"$ref": _REF + "fallbacks", "description": "fallback step(s) run when this one fails"},
        "condition": {**_STR, "description": "run only when this expression is true"},
        "timeout": field_json(STEP_TIMEOUT),
        "cache": {"type": ["boolean", "null"], "description": "cache this step's output"},
        "depends_on": {**_STR_OR_LIST, "description": "earlier steps this one waits for"},
        "max_iterations": field_json(MAX_ITERATIONS),
        "description": {**_STR, "description": "what the step does"},
        "for_each": _FOR_EACH,
    },
    "graph_config": {
        "subtechnique": {"enum": ["dag", "cyclic", "conditional", "dynamic"], "default": "dag"},
        "max_iterations": field_json(MAX_ITERATIONS),
        "max_concurrent": field_json(MAX_CONCURRENT),
        "graph_definition": {"$ref": _REF + "graph_definition", "description": "nodes and edges"},
        "graph_builder": {**_STR, "description": "a registered graph builder (dynamic)"},
        "builder_code": {**_STR, "description": "Python building the graph (needs trust_code)"},
        "builder": {**_STR, "description": "same as graph_builder"},
        "executor": {"description": "where the graph's nodes run"},
        "description": {**_STR, "description": "what the graph does"},
    },
    "graph_node": {
        "id": {**_STR, "description": "node id, unique in the pipeline"},
        "technique": {**_STR, "description": "the technique: shop.technique"},
        "use": {**_STR, "description": "same as technique"},
        "config": {**_ANY_MAP, "description": "the technique's settings"},
        "retry": {"$ref": _REF + "retry", "description": "retry policy (a mapping, or max_attempts)"},
        "on_error": {"$ref": _REF + "fallbacks", "description": "fallback step(s) run when this one fails"},
        "timeout": field_json(STEP_TIMEOUT),
        "cache": {"type": ["boolean", "null"], "description": "cache this node's output"},
        "condition": {**_STR, "description": "run only when this expression is true"},
        "max_iterations": field_json(MAX_ITERATIONS),
        "description": {**_STR, "description": "what the node does"},
        "for_each": _FOR_EACH,
    },
    "edge": {
        "from": {**_STR, "description": "source node id"},
        "to": {**_STR_OR_LIST, "description": "target node id(s)"},
        "condition": {**_STR, "description": "follow this edge only when the expression is true"},
        "default": {"type": ["boolean", "null"], "description": "taken when no conditional edge is"},
        "description": {**_STR, "description": "what the edge means"},
    },
    "orchestration_config": {
        "subtechnique": {
            "enum": ["sequential", "parallel", "conditional", "error_handling"],
            "default": "sequential",
        },
        "steps": {
            "type": "array",
            "items": {"$ref": _REF + "orchestration_step"},
            "description": "the orchestrated steps",
        },
        "max_concurrent": field_json(MAX_CONCURRENT),
        "combine_step": {"$ref": _REF + "orchestration_step", "description": "step merging the results"},
        "lazy": {"type": ["boolean", "null"], "description": "start a step only when it is needed"},
        "retry": {"$ref": _REF + "retry", "description": "retry policy (a mapping, or max_attempts)"},
        "timeout": field_json(STEP_TIMEOUT),
        "description": {**_STR, "description": "what the orchestration does"},
        "max_iterations": field_json(MAX_ITERATIONS),
    },
    "orchestration_step": {
        "name": {**_STR, "description": "step name (its node id)"},
        "id": {**_STR, "description": "same as name"},
        "technique": {**_STR, "description": "the technique: shop.technique"},
        "use": {**_STR, "description": "same as technique"},
        "config": {**_ANY_MAP, "description": "the technique's settings"},
        "depends_on": {**_STR_OR_LIST, "description": "steps this one waits for"},
        "retry": {"$ref": _REF + "retry", "description": "retry policy (a mapping, or max_attempts)"},
        "on_error": {"$ref": _REF + "fallbacks", "description": "fallback step(s) run when this one fails"},
        "condition": {**_STR, "description": "run only when this expression is true"},
        "always": {"type": ["boolean", "null"], "description": "run even after an earlier failure"},
        "on_condition_true": {"$ref": _REF + "fallbacks", "description": "step(s) run when condition holds"},
        "timeout": field_json(STEP_TIMEOUT),
        "cache": {"type": ["boolean", "null"], "description": "cache this step's output"},
        "output": {**_STR, "description": "name of the step's output"},
        "description": {**_STR, "description": "what the step does"},
        "for_each": _FOR_EACH,
    },
}
STRUCTURE["step"]["max_concurrent"] = field_json(MAX_CONCURRENT)
STRUCTURE["graph_node"]["max_concurrent"] = field_json(MAX_CONCURRENT)
STRUCTURE["orchestration_step"]["max_concurrent"] = field_json(MAX_CONCURRENT)


def _closed(props: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": dict(props), "additionalProperties": False, **extra}


def _technique_cases(key: str, techniques: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``if {key: T} then config: T's schema`` for every technique (graph/orchestration excluded)."""
    cases = []
    for name, info in sorted(techniques.items()):
        if info.compiles:
            continue
        cases.append(
            {
                "if": {"properties": {key: {"const": name}}, "required": [key]},
                "then": {"properties": {"config": {"$ref": _REF + name}}},
            }
        )
    return cases


def _technique_json(info: Any) -> dict[str, Any]:
    """A technique's config schema, described by its docstring's first line and the schema's own text."""
    out = {"type": ["object", "null"], **config_json(info.config_schema, info.subtechniques)}
    doc = info.doc.strip().splitlines()[0] if info.doc.strip() else ""
    text = " — ".join(x for x in (doc, out.get("description", "")) if x)
    if text:
        out["description"] = text
    return out


def _technique_name(names: list[str]) -> dict[str, Any]:
    return {
        "anyOf": [{"enum": names}, {"type": "string", "pattern": r"^pipeline\."}],
        "description": "a registered technique (shop.technique) or pipeline.<name> (a subgraph)",
    }


def builtin_techniques() -> dict[str, Any]:
    """The techniques sibyl_nb itself registers (what the committed ``sibyl.schema.json`` covers)."""
    from ..techniques.registry import registered_techniques

    return {
        name: info
        for name, info in registered_techniques().items()
        if getattr(info.fn, "__module__", "").startswith("sibyl_nb.")
    }


def json_schema(techniques: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole document's JSON Schema (draft 2020-12), from the registered techniques' schemas.

    ``techniques``: name -> TechniqueInfo; by default every technique registered now, so one registered
    from Python (``register_technique(..., config_schema=...)``) before the call is included. Each
    technique's subtechnique is matched with ``if``/``then``."""
    from ..techniques.registry import registered_techniques
    from .compile import (
        EDGE_KEYS,
        GRAPH_CONFIG_KEYS,
        GRAPH_NODE_KEYS,
        GRAPH_TECHNIQUE,
        ORCH_CONFIG_KEYS,
        ORCH_STEP_KEYS,
        ORCHESTRATION_TECHNIQUE,
        PIPELINE_KEYS,
        STEP_KEYS,
    )

    techniques = registered_techniques() if techniques is None else dict(techniques)
    names = sorted(techniques)
    tech_defs = {
        name: _technique_json(info) for name, info in sorted(techniques.items()) if not info.compiles
    }

    def block(kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: STRUCTURE[kind][k] for k in dict.fromkeys(keys)}

    step_cases = _technique_cases("use", techniques) + _technique_cases("technique", techniques)
    graph_case = [
        {
            "if": {"properties": {k: {"const": GRAPH_TECHNIQUE}}, "required": [k]},
            "then": {"properties": {"config": {"$ref": _REF + "graph_config"}}},
        }
        for k in ("use", "technique")
    ]
    orch_case = [
        {
            "if": {"properties": {k: {"const": ORCHESTRATION_TECHNIQUE}}, "required": [k]},
            "then": {"properties": {"config": {"$ref": _REF + "orchestration_config"}}},
        }
        for k in ("use", "technique")
    ]
    step_props = block("step", STEP_KEYS) | {
        "use": _technique_name(names),
        "technique": _technique_name(names),
    }
    node_props = block("graph_node", GRAPH_NODE_KEYS) | {
        "use": _technique_name(names),
        "technique": _technique_name(names),
    }
    orch_props = block("orchestration_step", ORCH_STEP_KEYS) | {
        "use": _technique_name(names),
        "technique": _technique_name(names),
    }
    needs_technique = {"anyOf": [{"required": ["use"]}, {"required": ["technique"]}]}
    pipeline = _closed(block("pipeline", PIPELINE_KEYS), required=["steps"])
    defs: dict[str, Any] = {
        "pipeline": pipeline,
        "steps": {"type": "array", "minItems": 1, "items": {"$ref": _REF + "step"}},
        "step": _closed(step_props, allOf=[needs_technique] + step_cases + graph_case + orch_case),
        "graph_config": _closed(block("graph_config", GRAPH_CONFIG_KEYS)),
        "graph_definition": _closed(
            {
                "nodes": {"type": "array", "minItems": 1, "items": {"$ref": _REF + "graph_node"}},
                "edges": {"type": ["array", "null"], "items": {"$ref": _REF + "edge"}},
                "entry": _STR_OR_LIST,
                "exit": _STR_OR_LIST,
                "output": _STR,
            },
            required=["nodes"],
        ),
        "graph_node": _closed(node_props, required=["id"], allOf=[needs_technique] + step_cases),
        "edge": _closed(block("edge", EDGE_KEYS), required=["from", "to"]),
        "orchestration_config": _closed(block("orchestration_config", ORCH_CONFIG_KEYS)),
        "orchestration_step": _closed(orch_props, allOf=step_cases),
        "fallbacks": {
            "anyOf": [
                {"$ref": _REF + "orchestration_step"},
                {"type": "array", "items": {"$ref": _REF + "orchestration_step"}},
                {"type": "null"},
            ]
        },
        "retry": {
            "anyOf": [
                {"type": "integer", "minimum": 1, "description": "max_attempts"},
                {"type": "object", **config_json(RETRY_SCHEMA)},
                {"type": "null"},
            ]
        },
        **tech_defs,  # a technique's config: #/$defs/<shop.technique> (structural names have no dot)
    }
    sections = {
        "shops": _closed(
            {"infrastructure": _closed({"config": {"type": ["object", "null"], **config_json(INFRA_SCHEMA)}})}
        ),
        "observability": {"type": ["object", "null"], **config_json(OBSERVABILITY_SCHEMA)},
        "providers": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "object", **config_json(PROVIDER_SCHEMA)},
        },
    }
    description = (
        "A sibyl_nb workflow document, generated by `sibyl schema` from the loader's own schemas. "
        "The loader also checks what JSON Schema cannot express: " + "; ".join(NOT_EXPRESSED) + "."
    )
    top = {"pipelines": {"type": "object", "additionalProperties": {"$ref": _REF + "pipeline"}}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "sibyl_nb workflow document",
        "description": description,
        "anyOf": [
            {"type": "array", "minItems": 1, "items": {"$ref": _REF + "step"}},
            {
                "type": "object",
                "required": ["pipelines"],
                "properties": top
                | sections
                | {"version": {"type": ["string", "number"]}, "description": _STR},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["steps"],
                "not": {"required": ["pipelines"]},
                "properties": block("pipeline", PIPELINE_KEYS) | sections,
                "additionalProperties": False,
            },
            {
                "type": "object",
                "not": {"anyOf": [{"required": ["pipelines"]}, {"required": ["steps"]}]},
                "minProperties": 1,
                "properties": sections | {"version": {"type": ["string", "number"]}, "description": _STR},
                "additionalProperties": False,
            },
        ],
        "$defs": defs,
    }
