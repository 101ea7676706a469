"""``docs/reference.md``: every technique, subtechnique and key, generated from the loader's schemas.

Regenerate with ``python -m sibyl_nb.document.reference > docs/reference.md`` (or ``sibyl schema --markdown``);
``tests/test_json_schema.py`` fails when the committed file differs from this output.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .schema import (
    INFRA_SCHEMA,
    OBSERVABILITY_SCHEMA,
    PROVIDER_SCHEMA,
    RETRY_SCHEMA,
    ConfigSchema,
    Field,
)

__all__ = ["reference_markdown", "main"]

_TYPE_WORDS = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}


def _type_text(spec: Field) -> str:
    if spec.enum is not None:
        return "one of " + ", ".join(f"`{x}`" for x in spec.enum)
    t = spec.type
    if isinstance(t, (list, tuple)) and any(isinstance(x, str) for x in t):
        words = [f"`{x}`" for x in t if isinstance(x, str)] + [
            _TYPE_WORDS.get(x, getattr(x, "__name__", str(x))) for x in t if isinstance(x, type)
        ]
        return "one of " + ", ".join(words)
    types = t if isinstance(t, tuple) else (t,)
    names = list(dict.fromkeys(_TYPE_WORDS.get(x, getattr(x, "__name__", str(x))) for x in types))
    if "number" in names and "integer" in names:
        names.remove("integer")
    return " or ".join(names)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(spec: Field) -> str:
    return "" if spec.default is None else f"`{spec.default!r}`"


def _table(schema: ConfigSchema, keys: tuple[str, ...] | None = None) -> list[str]:
    keys = tuple(schema.fields) if keys is None else keys
    rows = ["| key | type | range | default | description |", "|---|---|---|---|---|"]
    for key in keys:
        spec = schema.fields.get(key)
        if spec is None:
            continue
        extra = []
        if spec.max_items is not None:
            extra.append(f"at most {spec.max_items} items")
        if spec.unique_key is not None:
            extra.append(f"unique `{spec.unique_key}`")
        rng = "; ".join(x for x in (spec.range_text(), *extra) if x)
        rows.append(
            f"| `{key}` | {_cell(_type_text(spec))} | {_cell(rng)} | {_cell(_default(spec))} "
            f"| {_cell(spec.description)} |"
        )
        if isinstance(spec.values, ConfigSchema):
            for sub, sspec in spec.values.fields.items():
                rows.append(
                    f"| `{key}.{sub}` | {_cell(_type_text(sspec))} | {_cell(sspec.range_text())} "
                    f"| {_cell(_default(sspec))} | {_cell(sspec.description)} |"
                )
    return rows


def _schema_section(
    title: str, schema: ConfigSchema, subtechniques: tuple[str, ...] | None = None
) -> list[str]:
    out = [f"### `{title}`", ""]
    if schema.description:
        out += [schema.description[0].upper() + schema.description[1:] + ".", ""]
    if not schema.closed:
        out += ["Open schema: undeclared keys are allowed (a likely typo of a declared key is refused).", ""]
    if schema.subtechniques is not None:
        modes = tuple(schema.subtechniques)
        default = schema.default_subtechnique
        out += [
            f"`{schema.selector}`: "
            + ", ".join(f"`{m}`" + (" (default)" if m == default else "") for m in modes),
            "",
        ]
        for mode, keys in schema.subtechniques.items():
            out += [f"#### {schema.selector} `{mode}`", ""]
            out += _table(schema, keys) if keys else ["Takes no options."]
            out.append("")
    else:
        if subtechniques:
            out += [f"`subtechnique`: {', '.join(f'`{m}`' for m in subtechniques)}", ""]
        out += _table(schema) if schema.fields else ["No declared options."]
        out.append("")
    if schema.rules:
        out += ["Rules: " + "; ".join(f"`{r.left} {r.op} {r.right}`" for r in schema.rules), ""]
    for key, (other, wanted) in (schema.requires or {}).items():
        out += [f"`{key}` needs `{other}: {wanted}`.", ""]
    return out


def reference_markdown(techniques: Mapping[str, Any] | None = None) -> str:
    """The whole reference as Markdown; ``techniques`` by default: every technique registered now."""
    from ..techniques.registry import registered_techniques
    from .compile import (
        EDGE_KEYS,
        GRAPH_CONFIG_KEYS,
        GRAPH_NODE_KEYS,
        ORCH_CONFIG_KEYS,
        ORCH_STEP_KEYS,
        PIPELINE_KEYS,
        STEP_KEYS,
    )
    from .json_schema import NOT_EXPRESSED, STRUCTURE

    out = [
        "# sibyl_nb document reference",
        "",
        "Generated from the schemas the loader validates with; do not edit by hand. Regenerate with",
        "`python -m sibyl_nb.document.reference > docs/reference.md`. The JSON Schema for editors is",
        "`sibyl.schema.json` (`sibyl schema`).",
        "",
        "## Document structure",
        "",
    ]
    blocks = (
        ("pipeline (`pipelines.<name>`)", "pipeline", PIPELINE_KEYS),
        ("step (`steps[i]`)", "step", STEP_KEYS),
        ("`workflow_orchestration.graph` config", "graph_config", GRAPH_CONFIG_KEYS),
        ("graph node (`graph_definition.nodes[i]`)", "graph_node", GRAPH_NODE_KEYS),
        ("edge (`graph_definition.edges[i]`)", "edge", EDGE_KEYS),
        ("`workflow_orchestration.orchestration` config", "orchestration_config", ORCH_CONFIG_KEYS),
        ("orchestration step", "orchestration_step", ORCH_STEP_KEYS),
    )
    for title, kind, keys in blocks:
        out += [f"### {title}", "", "| key | description |", "|---|---|"]
        for key in dict.fromkeys(keys):
            entry = STRUCTURE[kind][key]
            desc = entry.get("description", "")
            if "enum" in entry:
                desc = "one of " + ", ".join(f"`{x}`" for x in entry["enum"])
            out.append(f"| `{key}` | {_cell(desc)} |")
        out.append("")
    out += ["## Document sections", ""]
    out += _schema_section("retry", RETRY_SCHEMA)
    out += _schema_section("shops.infrastructure.config", INFRA_SCHEMA)
    out += _schema_section("observability", OBSERVABILITY_SCHEMA)
    out += _schema_section("providers.<name>", PROVIDER_SCHEMA)
    out += ["## Techniques", ""]
    techniques = registered_techniques() if techniques is None else techniques
    for name, info in sorted(techniques.items()):
        if info.compiles:
            continue
        section = _schema_section(name, info.config_schema, info.subtechniques)
        if info.doc.strip():
            section.insert(2, info.doc.strip().splitlines()[0])
            section.insert(3, "")
        out += section
    out += [
        "## What only the loader checks",
        "",
        "JSON Schema cannot express these; `sibyl validate` reports them:",
        "",
    ]
    out += [f"- {x}" for x in NOT_EXPRESSED]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(reference_markdown())


if __name__ == "__main__":
    main()
