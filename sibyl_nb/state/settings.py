"""Where state, checkpoints and the step cache live, decided from a document's settings.

All three reuse the session stores (``sibyl_nb.stores``: one code path per backend) through their
JSON key-value facet; each gets its own diskcache folder / SQL table / Redis prefix so that clearing
the cache or pruning checkpoints can never touch conversation history.

Default locations are resolved *before* the shared-store lookup, so a changed ``$SIBYL_HOME`` (a new
test, another project folder) opens a new store instead of reusing one that points elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..paths import sibyl_home

if TYPE_CHECKING:  # pragma: no cover
    from ..stores.base import Store

__all__ = [
    "STATE_TECHNIQUE",
    "open_kind_store",
    "render_env",
    "pipeline_settings",
    "state_config_of",
    "KINDS",
]

STATE_TECHNIQUE = "workflow_orchestration.state_management"

# the settings that say where a store is (everything else in a step's config is about behaviour)
STORE_KEYS = ("backend", "storage", "redis_url", "database_url", "path", "namespace", "ttl", "table")

# kind -> (diskcache folder / sqlite file stem, SQL kv table, Redis key prefix)
KINDS: dict[str, tuple[str, str, str]] = {
    "state": ("state", "sibyl_state", "sibyl:state:"),
    "checkpoints": ("checkpoints", "sibyl_checkpoints", "sibyl:ckpt:"),
    "cache": ("cache", "sibyl_cache", "sibyl:cache:"),
}


def open_kind_store(kind: str, config: Mapping[str, Any] | None = None) -> Store:
    """The shared store for ``kind`` (state | checkpoints | cache) under ``config``.

    ``config`` keys: ``storage``/``backend`` (memory | diskcache (default) | redis | database...),
    ``path`` (diskcache folder), ``database_url``, ``redis_url``, ``namespace`` (Redis key prefix).
    """
    from ..stores.factory import canonical_storage, shared_store

    cfg = dict(config or {})
    raw = cfg.get("storage") or cfg.get("backend")
    name = canonical_storage(raw)
    folder, table, prefix = KINDS[kind]
    if name == "diskcache":
        path = cfg.get("path") or cfg.get("directory") or str(sibyl_home(folder))
        return shared_store(raw or "diskcache", path=str(path))
    if name == "sql":
        url = cfg.get("database_url") or f"sqlite:///{sibyl_home(folder + '.db')}"
        return shared_store(raw, database_url=url, kv_table=cfg.get("table") or table)
    if name == "redis":
        return shared_store("redis", redis_url=cfg.get("redis_url"), kv_prefix=cfg.get("namespace") or prefix)
    return shared_store("memory", name=f"{kind}:{cfg.get('name') or 'default'}")


def render_env(config: Mapping[str, Any]) -> dict[str, Any]:
    """Render environment references in a static settings mapping (an unset variable is None).

    Settings are read outside any run (``pipe.load_state``, the CLI), so only environment variables
    can be resolved here, and only where the env policy allows one (:mod:`sibyl_nb.document.templates`):
    ``${env:NAME}``, or ``${NAME}`` in a connection setting such as the seed's ``redis_url: "${REDIS_URL}"``.
    """
    from ..document.templates import compile_value, env_name
    from ..errors import TemplateError

    render, refs = compile_value(dict(config))
    if render is None:
        return dict(config)
    for ref, _ in refs:
        if env_name(ref) is None:
            raise TemplateError(
                f"setting {ref} can only read an environment variable here: write ${{env:NAME}} "
                f"(or ${{NAME}} in redis_url / database_url / base_url)"
            )
    from ..engine.scope import env_value

    return render(env_value)


def pipeline_settings(pipeline: Any) -> dict[str, Any]:
    """``{"checkpointing", "caching", "logging", "metrics", "state"}`` for ``pipeline``: the document's
    sections, overridden per pipeline by ``pipe.configure(...)``. Absent sections are left out."""
    doc = pipeline.document
    out: dict[str, Any] = {}
    infra = doc.infrastructure or {}
    for key in ("checkpointing", "caching"):
        if key in infra:
            out[key] = infra[key] or {}
    obs = doc.observability or {}
    for key in ("logging", "metrics"):
        if key in obs:
            out[key] = obs[key] or {}
    overrides = getattr(pipeline, "_sibyl_settings", None)
    if overrides:
        for key, value in overrides.items():
            if value is None or value is False:
                out.pop(key, None)
            else:
                out[key] = {} if value is True else dict(value)
    return out


def state_config_of(pipeline: Any) -> dict[str, Any]:
    """The state backend settings: ``pipe.configure(state=...)``, else the pipeline's first
    ``workflow_orchestration.state_management`` step's config, else the defaults (diskcache)."""
    overrides = getattr(pipeline, "_sibyl_settings", None) or {}
    if overrides.get("state"):
        return render_env(overrides["state"])
    for node in pipeline.spec.graph.nodes.values():
        if node.technique == STATE_TECHNIQUE:
            # only where the state lives; other keys (workflow_id: ${user}) need a run to render
            return render_env({k: v for k, v in node.config.items() if k in STORE_KEYS})
    return {}
