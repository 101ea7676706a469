"""The document's schema as data, and the checks that apply it.

Every technique declares its config as a :class:`ConfigSchema`: each key's :class:`Field` (type,
range, enum, default, one-line description), which keys each subtechnique uses, and relations
between keys (``reserve_tokens < max_tokens``). The loader validates with exactly this data, at the
offending key's own line; issue 17's JSON Schema export reads the same objects. A key that the chosen
subtechnique does not use is an error, never silently ignored.

A plain ``{key: type}`` dict (what user techniques have always passed) still works: it becomes an
open schema (listed keys type-checked, others allowed unless they look like a typo of a listed one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SibylError

if TYPE_CHECKING:
    from .yaml_lines import LineMap
    from .yaml_path import Path

__all__ = [
    "check_keys",
    "check_type",
    "expect_mapping",
    "expect_list",
    "did_you_mean",
    "TYPE_NAMES",
    "check_schema",
    "Field",
    "Rule",
    "ConfigSchema",
    "as_schema",
    "validate_config",
    "validate_value",
    "NUMBER",
]

TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def did_you_mean(name: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    import difflib  # only when a document has a mistake to name

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_keys(data: dict[str, Any], allowed: Iterable[str], path: Path, lines: LineMap, what: str) -> None:
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise lines.error(
                path + (key,),
                f"unknown key '{key}' in {what}{did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})",
            )


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return TYPE_NAMES.get(t, getattr(t, "__name__", str(t)))


def check_type(value: Any, expected: Any, path: Path, lines: LineMap, what: str = "") -> None:
    """``expected``: a type, a tuple of types, or a list/tuple of allowed string values."""
    if isinstance(value, str) and "${" in value:
        return  # rendered at run time
    if isinstance(expected, (list, tuple)) and expected and any(isinstance(x, str) for x in expected):
        # an enum of strings, optionally with types also accepted (``replay: off`` is YAML false)
        also = tuple(x for x in expected if isinstance(x, type))
        expected = [x for x in expected if isinstance(x, str)]
        if also and isinstance(value, also):
            return
        if value not in expected:
            raise lines.error(
                path,
                f"{what or 'value'} {value!r} is not one of: {', '.join(map(str, expected))}"
                f"{did_you_mean(str(value), expected)}",
            )
        return
    types = expected if isinstance(expected, tuple) else (expected,)
    if float in types and int not in types:
        types = types + (int,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise lines.error(
            path, f"{what or 'value'} must be {_type_name(expected)}, got {type(value).__name__} {value!r}"
        )


def check_schema(
    config: dict[str, Any], schema: dict[str, Any], path: Path, lines: LineMap, what: str
) -> None:
    """Type-check known keys; an unknown key that looks like a typo of a known one is an error."""
    for key, value in config.items():
        if key in schema:
            if value is not None:
                check_type(value, schema[key], path + (key,), lines, f"{what} '{key}'")
        elif schema:
            hint = did_you_mean(key, schema, cutoff=0.8)
            if hint:
                raise lines.error(path + (key,), f"unknown {what} key '{key}'{hint}")


def expect_mapping(value: Any, path: Path, lines: LineMap, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise lines.error(path, f"{what} must be a mapping, got {type(value).__name__}")
    return value


def expect_list(value: Any, path: Path, lines: LineMap, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise lines.error(path, f"{what} must be a list, got {type(value).__name__}")
    return value


def fail(lines: LineMap, path: Path, message: str) -> SibylError:
    return lines.error(path, message)


# ---------------------------------------------------------------------------------------------------
# Declarative schemas

NUMBER = (int, float)
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True, slots=True)
class Field:
    """One config key: its type and the values it accepts.

    ``type``: a Python type or tuple of types, or a tuple of allowed strings (an enum). Numbers are
    always finite. ``items`` describes list elements (a Field or a ConfigSchema for mappings);
    ``values`` describes mapping values (or a ConfigSchema for a mapping with known keys).
    ``templated``: a ``${...}`` string is accepted here (rendered, then checked, at run time).
    """

    type: Any
    description: str = ""
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    items: Any = None
    values: Any = None
    max_items: int | None = None
    unique_key: str | None = None  # list of mappings: no two items share this key's value
    templated: bool = True
    # "path" (a file or folder read), "root" (a folder paths are read from), "store" (where sibyl_nb
    # writes its own files) or "url" (a connection): in an untrusted document these must stay inside
    # the document's roots / out of /proc, /sys, /dev / on this machine (document/trust.py)
    access: str | None = None

    @property
    def enum(self) -> tuple[str, ...] | None:
        t = self.type
        if isinstance(t, (list, tuple)) and t and all(isinstance(x, str) for x in t):
            return tuple(t)
        return None

    def range_text(self) -> str:
        parts = []
        if self.exclusive_minimum is not None:
            parts.append(f"more than {self.exclusive_minimum:g}")
        if self.minimum is not None:
            parts.append(f"at least {self.minimum:g}")
        if self.exclusive_maximum is not None:
            parts.append(f"less than {self.exclusive_maximum:g}")
        if self.maximum is not None:
            parts.append(f"at most {self.maximum:g}")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class Rule:
    """A relation between two keys of one config (``reserve_tokens < max_tokens``); an absent key
    takes its Field's default, an absent key without a default leaves the rule unchecked."""

    left: str
    op: str
    right: str

    def holds(self, a: Any, b: Any) -> bool:
        return bool(_OPS[self.op](a, b))


@dataclass(frozen=True)
class ConfigSchema:
    """A technique's config (or a document section): fields, which keys each subtechnique uses, rules.

    ``subtechniques``: subtechnique -> the keys it reads (``None``: every field for every mode).
    ``closed``: unknown keys are errors (built-ins); an open schema only flags likely typos.
    """

    fields: Mapping[str, Field]
    subtechniques: Mapping[str, tuple[str, ...]] | None = None
    default_subtechnique: str | None = None
    rules: tuple[Rule, ...] = ()
    closed: bool = True
    description: str = ""
    required: tuple[str, ...] = ()
    # key -> (other key, value it must have): ``prometheus_port`` means nothing without ``export: prometheus``
    requires: Mapping[str, tuple[str, Any]] | None = None
    selector: str = "subtechnique"  # the key that picks the subtechnique (``kind`` for providers)

    def keys_for(self, subtechnique: str | None) -> tuple[str, ...]:
        """The keys a config with this subtechnique may hold (``subtechnique`` itself included)."""
        base = (self.selector,) if self.subtechniques is not None else ()
        if self.subtechniques is None:
            return base + tuple(self.fields)
        sub = subtechnique if subtechnique is not None else self.default_subtechnique
        if sub is None or sub not in self.subtechniques:
            return base + tuple(self.fields)
        return base + tuple(self.subtechniques[sub])

    def __contains__(self, key: object) -> bool:
        return key in self.fields


def as_schema(value: Any) -> ConfigSchema:
    """A :class:`ConfigSchema` from what a technique declared (schema, ``{key: type|Field}`` or None)."""
    if isinstance(value, ConfigSchema):
        return value
    if not value:
        return ConfigSchema({}, closed=False)
    return ConfigSchema(
        {k: v if isinstance(v, Field) else Field(v) for k, v in dict(value).items()}, closed=False
    )


def _is_templated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def validate_value(
    value: Any,
    spec: Field,
    path: Path,
    lines: LineMap,
    what: str,
    *,
    trusted: bool = True,
    root: str | None = None,
) -> None:
    """Type, enum, finiteness and range of one value; nested lists/mappings by ``items``/``values``;
    for an untrusted document, where a path or URL leads (``access``)."""
    if value is None:
        return
    if _is_templated(value) and spec.templated:
        return
    check_type(value, spec.type, path, lines, what)
    if spec.access is not None and isinstance(value, str) and not trusted:
        _check_access(value, spec.access, path, lines, what, root)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise lines.error(path, f"{what} must be a finite number, got {value!r}")
        bad = (
            (spec.minimum is not None and value < spec.minimum)
            or (spec.maximum is not None and value > spec.maximum)
            or (spec.exclusive_minimum is not None and value <= spec.exclusive_minimum)
            or (spec.exclusive_maximum is not None and value >= spec.exclusive_maximum)
        )
        if bad:
            raise lines.error(path, f"{what} must be {spec.range_text()}, got {value!r}")
    if isinstance(value, list):
        if spec.max_items is not None and len(value) > spec.max_items:
            raise lines.error(path, f"{what} has {len(value)} items (at most {spec.max_items})")
        if spec.items is not None:
            for i, item in enumerate(value):
                _validate_nested(item, spec.items, path + (i,), lines, f"{what}[{i}]", trusted)
        if spec.unique_key is not None:
            seen: dict[Any, int] = {}
            for i, item in enumerate(value):
                key = item.get(spec.unique_key) if isinstance(item, dict) else None
                if key is None:
                    continue
                if key in seen:
                    raise lines.error(
                        path + (i, spec.unique_key),
                        f"{what}[{i}]: {spec.unique_key} {key!r} repeats {what}[{seen[key]}]",
                    )
                seen[key] = i
    if isinstance(value, dict) and spec.values is not None:
        if isinstance(spec.values, ConfigSchema):
            _validate_nested(value, spec.values, path, lines, what, trusted)
        else:
            for k, v in value.items():
                validate_value(v, spec.values, path + (k,), lines, f"{what}.{k}", trusted=trusted)


def _check_access(value: str, access: str, path: Path, lines: LineMap, what: str, root: str | None) -> None:
    from ..errors import TrustError
    from .trust import check_path, check_store_path, check_url, document_roots

    try:
        if access == "url":
            check_url(value, trusted=False, what=what, source=lines.source)
        elif access == "root":
            document_roots(lines.source, value)
        elif access == "store":
            check_store_path(value, trusted=False, what=what)
        else:
            check_path(value, source=lines.source, trusted=False, root=root, what=what)
    except TrustError as exc:
        raise lines.error(path, exc.message, TrustError) from None


def _validate_nested(
    value: Any, spec: Any, path: Path, lines: LineMap, what: str, trusted: bool = True
) -> None:
    if isinstance(spec, ConfigSchema):
        if not isinstance(value, dict):
            raise lines.error(path, f"{what} must be a mapping, got {type(value).__name__} {value!r}")
        validate_config(value, spec, path, lines, what, trusted=trusted)
    else:
        validate_value(value, spec, path, lines, what, trusted=trusted)


def validate_config(
    config: Mapping[str, Any],
    schema: ConfigSchema,
    path: Path,
    lines: LineMap,
    what: str,
    *,
    skip: Iterable[str] = (),
    trusted: bool = True,
) -> None:
    """Check ``config`` against ``schema``: keys the (sub)technique uses, each value, then the rules.

    ``skip``: keys validated elsewhere (the subtechnique name is checked by the caller).
    ``trusted=False``: paths and URLs (``Field.access``) must stay inside the document's reach."""
    skip = set(skip)
    root = next(
        (
            config[k]
            for k, f in schema.fields.items()
            if f.access == "root" and isinstance(config.get(k), str)
        ),
        None,
    )
    root = None if root is None or _is_templated(root) else root
    sub = config.get(schema.selector)
    sub = sub if isinstance(sub, str) and not _is_templated(sub) else None
    allowed = schema.keys_for(sub)
    for key, value in config.items():
        if key in skip:
            continue
        kpath = path + (key,)
        if key not in allowed:
            if key in schema.fields and schema.subtechniques is not None:
                mode = sub or schema.default_subtechnique
                users = [m for m, keys in schema.subtechniques.items() if key in keys]
                raise lines.error(
                    kpath,
                    f"'{key}' does nothing for subtechnique '{mode}' of {what}"
                    f" (it is used by: {', '.join(users)}; '{mode}' uses: "
                    f"{', '.join(k for k in allowed if k != 'subtechnique') or 'nothing'})",
                )
            if schema.closed:
                raise lines.error(
                    kpath,
                    f"unknown key '{key}' in {what}{did_you_mean(key, allowed)}"
                    f" (allowed: {', '.join(allowed) or 'none'})",
                )
            hint = did_you_mean(key, schema.fields, cutoff=0.8)
            if hint:
                raise lines.error(kpath, f"unknown {what} key '{key}'{hint}")
            continue
        spec = schema.fields.get(key)
        if spec is not None:
            validate_value(value, spec, kpath, lines, f"{what} '{key}'", trusted=trusted, root=root)
    for key, (other, wanted) in (schema.requires or {}).items():
        if config.get(key) is not None and config.get(other) != wanted:
            raise lines.error(
                path + (key,),
                f"{what}: '{key}' does nothing without {other}: {wanted} (got {config.get(other)!r})",
            )
    for key in schema.required:
        if key not in config:
            raise lines.error(path, f"{what} needs '{key}'")
    for rule in schema.rules:
        if rule.left not in allowed or rule.right not in allowed:
            continue
        a = config.get(rule.left, schema.fields[rule.left].default)
        b = config.get(rule.right, schema.fields[rule.right].default)
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            continue  # absent without default, or templated: checked at run time
        if not rule.holds(a, b):
            at = rule.left if rule.left in config else rule.right
            raise lines.error(
                path + (at,),
                f"{what}: {rule.left} ({a!r}) must be {rule.op} {rule.right} ({b!r})",
            )


# ---------------------------------------------------------------------------------------------------
# Document sections: pipeline settings, retry, infrastructure, observability, providers

_SECONDS = 7 * 24 * 3600.0  # no delay or timeout a document sets may exceed a week
_STORAGES = ("memory", "diskcache", "disk", "file", "local", "redis", "database", "sql", "sqlite", "postgres")
MAX_CONCURRENT = Field(int, "nodes running at once", minimum=1, maximum=100_000)
MAX_ITERATIONS = Field(int, "how often any node may run in a loop", default=10, minimum=1, maximum=1_000_000)
STEP_TIMEOUT = Field(NUMBER, "seconds one attempt may take", exclusive_minimum=0, maximum=_SECONDS)

RETRY_SCHEMA = ConfigSchema(
    {
        "max_attempts": Field(int, "attempts in all (1: no retry)", default=3, minimum=1, maximum=100),
        "backoff": Field(("exponential", "linear", "fixed"), "how the delay grows", default="exponential"),
        "initial_delay": Field(NUMBER, "seconds before the first retry", minimum=0, maximum=_SECONDS),
        "initial": Field(NUMBER, "same as initial_delay", minimum=0, maximum=_SECONDS),
        "delay": Field(NUMBER, "same as initial_delay", minimum=0, maximum=_SECONDS),
        "max_delay": Field(NUMBER, "longest delay between attempts, seconds", minimum=0, maximum=_SECONDS),
        "multiplier": Field(NUMBER, "growth factor of exponential backoff", minimum=0, maximum=1000),
        "jitter": Field((bool, float), "random share of each delay (true: 0.1)", minimum=0, maximum=1),
    },
    description="retry policy of a step",
)

_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "NOTSET")
INFRA_SCHEMA = ConfigSchema(
    {
        "checkpointing": Field(
            dict,
            "save progress so a failed run can resume",
            values=ConfigSchema(
                {
                    "enabled": Field(bool, "checkpoint this pipeline", default=True),
                    "frequency": Field(
                        int, "checkpoint every N steps", default=1, minimum=1, maximum=1_000_000
                    ),
                    "storage": Field(_STORAGES, "where checkpoints live", default="diskcache"),
                    "database_url": Field(str, "SQLAlchemy URL (storage: database)", access="url"),
                    "redis_url": Field(str, "Redis URL (storage: redis)", access="url"),
                    "path": Field(str, "diskcache directory", access="store"),
                    "keep": Field(int, "checkpoints kept per workflow", minimum=1, maximum=1_000_000),
                }
            ),
        ),
        "caching": Field(
            dict,
            "reuse step outputs across runs",
            values=ConfigSchema(
                {
                    "enabled": Field(bool, "cache step outputs", default=True),
                    "ttl": Field(NUMBER, "seconds a cached output stays valid", exclusive_minimum=0),
                    "cache_key_template": Field(
                        str, "cache key", default="workflow:${workflow_id}:${step_name}"
                    ),
                    "storage": Field(_STORAGES, "where cached outputs live", default="diskcache"),
                    "redis_url": Field(str, "Redis URL (storage: redis)", access="url"),
                    "path": Field(str, "diskcache directory", access="store"),
                }
            ),
        ),
    },
    description="shops.infrastructure.config",
)
OBSERVABILITY_SCHEMA = ConfigSchema(
    {
        "logging": Field(
            dict,
            "log records for a run",
            values=ConfigSchema(
                {
                    "level": Field(_LEVELS + tuple(x.lower() for x in _LEVELS), "log level", default="INFO"),
                    "workflow_tracing": Field(bool, "log the run's start and end", default=True),
                    "log_step_transitions": Field(bool, "log every step's start and end", default=True),
                    "log_state_changes": Field(bool, "log state keys a step changed", default=False),
                    "format": Field(("text", "json"), "record format", default="text"),
                }
            ),
        ),
        "metrics": Field(
            dict,
            "metrics of a run",
            values=ConfigSchema(
                {
                    "workflow_duration": Field(bool, "record run durations", default=True),
                    "step_duration": Field(bool, "record step durations", default=True),
                    "error_rate": Field(bool, "record failures", default=True),
                    "retry_count": Field(bool, "record retries", default=True),
                    "export": Field(("prometheus",), "serve metrics over HTTP"),
                    "prometheus_port": Field(int, "port of the /metrics endpoint", minimum=1, maximum=65535),
                },
                requires={"prometheus_port": ("export", "prometheus")},
            ),
        ),
    },
    description="observability",
)

_PROVIDER_COMMON = ("kind", "type", "model")
_HTTP_KEYS = (
    "base_url",
    "api_key",
    "api_key_env",
    "temperature",
    "timeout",
    "max_retries",
    "backoff_initial",
    "backoff_max",
    "headers",
    "extra_headers",
    "stream_usage",
    "replay",
    "replay_dir",
    "max_response_bytes",
    "deadline",
)
HTTP_PROVIDER_KINDS = ("openai", "openai_compatible", "vllm", "ollama", "lmstudio", "llamacpp")
_HEADERS = Field(dict, "extra HTTP headers", values=Field(str, templated=True))
PROVIDER_SCHEMA = ConfigSchema(
    {
        "kind": Field(("local",) + HTTP_PROVIDER_KINDS, "provider kind", default="local"),
        "type": Field(("local",) + HTTP_PROVIDER_KINDS, "same as kind"),
        "model": Field(str, "model name"),
        "max_sentences": Field(int, "force the local provider's answer length", minimum=1, maximum=10_000),
        "base_url": Field(str, "http(s) URL of the OpenAI-compatible API", access="url"),
        "api_key": Field(str, "API key (prefer api_key_env)"),
        "api_key_env": Field(str, "environment variable holding the API key"),
        "temperature": Field(NUMBER, "default sampling temperature", minimum=0, maximum=2),
        "timeout": Field(
            NUMBER,
            "deadline of one attempt (connect to last byte), seconds",
            exclusive_minimum=0,
            maximum=3600,
        ),
        "max_retries": Field(int, "retries after the first attempt", minimum=0, maximum=20),
        "backoff_initial": Field(NUMBER, "seconds before the first retry", minimum=0, maximum=600),
        "backoff_max": Field(NUMBER, "longest delay between retries, seconds", minimum=0, maximum=3600),
        "headers": _HEADERS,
        "extra_headers": _HEADERS,
        "stream_usage": Field(bool, "ask for token usage in streamed responses"),
        "replay": Field(("auto", "record", "replay", "off", bool), "record/replay responses"),
        "replay_dir": Field(str, "folder of recorded responses", access="store"),
        "deadline": Field(
            NUMBER, "deadline of the whole call, retries included, seconds", exclusive_minimum=0, maximum=3600
        ),
        "max_response_bytes": Field(
            int, "largest response body accepted", minimum=1024, maximum=1_073_741_824, default=16 * 2**20
        ),
    },
    subtechniques={"local": _PROVIDER_COMMON + ("max_sentences",)}
    | {kind: _PROVIDER_COMMON + _HTTP_KEYS for kind in HTTP_PROVIDER_KINDS},
    default_subtechnique="local",
    selector="kind",
    description="a model provider",
)


def validate_providers(
    providers: Mapping[str, Any],
    lines: LineMap,
    *,
    trusted: bool = True,
    registered_kinds: Iterable[str] = (),
) -> None:
    """Each ``providers:`` entry against its kind's keys; a kind registered from Python
    (``registered_kinds``, passed in by the compiler) checks its own config."""
    registered = tuple(registered_kinds)
    for name, conf in providers.items():
        path: Path = ("providers", name)
        expect_mapping(conf, path, lines, f"provider '{name}'")
        kind = conf.get("kind", conf.get("type", "local"))
        kpath = path + ("kind" if "kind" in conf else "type",)
        if not isinstance(kind, str):
            raise lines.error(kpath, f"provider '{name}': kind must be a string, got {kind!r}")
        if kind in ("local",) + HTTP_PROVIDER_KINDS:
            validate_config(
                {**conf, "kind": kind}, PROVIDER_SCHEMA, path, lines, f"provider '{name}'", trusted=trusted
            )
        elif kind not in registered:
            known = ("local",) + HTTP_PROVIDER_KINDS + registered
            raise lines.error(
                kpath,
                f"provider '{name}': unknown kind '{kind}'{did_you_mean(kind, known)} (known: {', '.join(known)})",
            )
