"""The reproducibility manifest: what a sweep (and each of its runs) ran with.

Package versions, the pipeline definition and its hash, per-setting hashes, the providers (kind,
model, parameters — never a secret), technique code fingerprints, inputs, grid, metrics and seeds.
It is plain JSON stored beside the results, and the same fingerprints key the stored cells, so
"nothing changed" is decided by exactly what the manifest says.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from .grid import Setting, definition_of, digest

__all__ = ["PACKAGES", "package_versions", "provider_table", "technique_table", "build_manifest"]

PACKAGES = ("sibyl_nb", "pandas", "numpy", "pyyaml", "tiktoken", "rank-bm25", "httpx", "diskcache", "dask")
_SECRET_WORDS = ("key", "token", "secret", "password", "auth", "credential")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _public(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        str(k): v
        for k, v in params.items()
        if not any(w in str(k).lower() for w in _SECRET_WORDS)
        and isinstance(v, (str, int, float, bool, type(None)))
    }


def _provider_names(pipeline: Any) -> list[str]:
    names = {"primary"} | set(pipeline.document.providers)
    for node in pipeline.spec.graph.nodes.values():
        for fb in [node, *node.fallbacks]:
            p = fb.config.get("provider") if isinstance(fb.config, Mapping) else None
            if isinstance(p, str) and "${" not in p:
                names.add(p)
    return sorted(names)


def provider_table(pipeline: Any) -> dict[str, dict[str, Any]]:
    """Provider name -> class, model and parameters, for every provider the pipeline may call."""
    from ..providers.registry import get_provider

    own = pipeline._providers()
    out: dict[str, dict[str, Any]] = {}
    for name in _provider_names(pipeline):
        try:
            provider = own.get(name) or get_provider(name)
        except Exception as exc:  # an unknown provider fails the run that calls it; record why
            out[name] = {"error": str(exc)}
            continue
        inner = getattr(provider, "inner", None)
        entry: dict[str, Any] = {
            "class": type(provider).__name__,
            "model": str(getattr(provider, "model", "") or ""),
        }
        if inner is not None:
            entry["wraps"] = type(inner).__name__
        params = dict(getattr(provider, "default_params", {}) or {})
        params.update(getattr(provider, "options", None) or getattr(inner, "options", None) or {})
        base_url = getattr(provider, "base_url", None) or getattr(inner, "base_url", None)
        if base_url:
            entry["base_url"] = str(base_url)
        entry["params"] = _public(params)
        out[name] = entry
    return out


def technique_table(pipeline: Any) -> dict[str, str]:
    """Technique name -> fingerprint: built-ins by package version, anything else by its code."""
    from .._version import __version__
    from ..techniques.registry import get_technique
    from .metrics import _code_key

    out: dict[str, str] = {}
    for node in pipeline.spec.graph.nodes.values():
        for n in [node, *node.fallbacks]:
            if n.kind != "task" or n.technique in out:
                continue
            try:
                fn = get_technique(n.technique).fn
            except Exception:
                out[n.technique] = "unknown"
                continue
            module = getattr(fn, "__module__", "") or ""
            ours = module == "sibyl_nb" or module.startswith("sibyl_nb.")
            out[n.technique] = f"sibyl_nb {__version__}" if ours else _code_key(fn)
    return dict(sorted(out.items()))


def build_manifest(
    *,
    name: str,
    pipeline: Any,
    settings: list[Setting],
    grid: Mapping[str, Any],
    inputs: list[Any],
    metrics: list[Any],
    fields: list[str],
    repeats: int,
    seed: int,
    providers: dict[str, Any],
    techniques: dict[str, str],
) -> dict[str, Any]:
    definition = definition_of(pipeline)
    return {
        "format": "sibyl_nb.sweep/1",
        "name": name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pipeline": pipeline.name,
        "source": pipeline.document.source,
        "document_hash": digest(definition),
        "document": definition,
        "grid": {k: list(v) for k, v in grid.items()},
        "settings": [
            {"index": s.index, "params": s.params, "hash": s.hash, "nodes": s.nodes} for s in settings
        ],
        "inputs": inputs,
        "repeats": repeats,
        "seed": seed,
        "metrics": [{"name": m.name, "key": m.key} for m in metrics],
        "fields": fields,
        "providers": providers,
        "techniques": techniques,
        "packages": package_versions(),
        "platform": {"system": platform.platform(), "executable": sys.executable},
    }
