"""``data.*``: load documents, and store embedded chunks where ``rag.search`` can find them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...document.schema import ConfigSchema, Field
from ...document.trust import check_path, document_roots
from ...errors import TechniqueError, TrustError
from ...text import corpus
from ...text.embedding import HashingEmbedder
from ...text.gather import upstream_documents
from ..registry import technique

__all__ = ["load_documents", "store_vectors", "load_markdown", "load_json_documents"]

_SOURCES = ("filesystem_markdown", "markdown", "corpus", "json")


def _title_of(text: str, fallback: str) -> str:
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# "):
            return s[2:].strip()
    return fallback.replace("_", " ").replace("-", " ").strip().capitalize()


def load_markdown(
    path: str | Path = corpus.DOCS_DIR, pattern: str = "**/*.md", *, allowed: list[Path] | None = None
) -> list[dict[str, Any]]:
    """Every markdown file under ``path`` (or the one file ``path``) as a document, sorted by path.

    ``allowed``: folders every matched file (symlinks followed) must lie in; others are refused."""
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.glob(pattern) if p.is_file())
    if allowed is not None:
        for f in files:
            real = f.resolve()
            if not any(real.is_relative_to(r) for r in allowed):
                raise TrustError(f"'{f}' leads outside the folders this document may read (to {real})")
    docs = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        rel = f.relative_to(root).with_suffix("").as_posix() if root.is_dir() else f.stem
        docs.append(
            {
                "id": rel,
                "title": _title_of(text, f.stem),
                "text": text,
                "source": str(f),
                "collection": "markdown",
            }
        )
    return docs


def load_json_documents(path: str | Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of documents, or ``{"documents": [...]}`` (strings become texts)."""
    data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    items = data.get("documents", []) if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        raise ValueError('expected a list of documents or {"documents": [...]}')
    out = []
    for i, item in enumerate(items):
        doc = dict(item) if isinstance(item, Mapping) else {"text": str(item)}
        doc.setdefault("id", f"{Path(path).stem}-{i + 1}")
        doc.setdefault("title", str(doc.get("text", ""))[:60])
        doc.setdefault("source", str(path))
        doc.setdefault("collection", "json")
        if "text" not in doc:
            doc["text"] = str(doc.pop("content", ""))
        out.append(doc)
    return out


@technique(
    "data.load_documents",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "source": Field(_SOURCES, "what to read", default="filesystem_markdown"),
            "path": Field(str, "file or folder, inside the allowed roots", access="path"),
            "collection": Field(str, "built-in collection (source: corpus)"),
            "pattern": Field(str, "glob of files to read", default="**/*.md"),
            "root": Field(
                str, "folder files may be read from (default: the document's folder, the cwd)", access="root"
            ),
        },
        description="load documents from files or the built-in corpus",
    ),
    outputs=("documents", "count", "source", "path"),
)
def load_documents(ctx: Any) -> dict[str, Any]:
    """Load documents: ``filesystem_markdown`` (default; ``path`` defaults to the packaged sample
    docs), ``corpus`` (a collection of the in-process store) or ``json`` (a file)."""
    source = str(ctx.config.get("source") or "filesystem_markdown")
    raw_path = ctx.config.get("path")
    allowed = _allowed_roots(ctx, raw_path, str(ctx.config.get("pattern") or ""))
    try:
        if source in ("filesystem_markdown", "markdown"):
            path = Path(str(raw_path)) if raw_path else corpus.DOCS_DIR
            if not path.exists():
                raise TechniqueError(
                    f"path '{path}' does not exist", node_id=ctx.node_id, technique="data.load_documents"
                )
            docs = load_markdown(path, str(ctx.config.get("pattern") or "**/*.md"), allowed=allowed)
            where = str(path)
        elif source == "corpus":
            name = str(ctx.config.get("collection") or "documents")
            if not corpus.has_collection(name):
                raise TechniqueError(
                    f"unknown collection '{name}' (known: {', '.join(corpus.list_collections())})",
                    node_id=ctx.node_id,
                    technique="data.load_documents",
                )
            docs, where = corpus.get_documents(name), f"corpus:{name}"
        elif source == "json":
            if not raw_path:
                raise TechniqueError(
                    "source 'json' needs a 'path'", node_id=ctx.node_id, technique="data.load_documents"
                )
            docs, where = load_json_documents(str(raw_path)), str(raw_path)
        else:
            raise TechniqueError(
                f"unknown source '{source}' (known: {', '.join(_SOURCES)})",
                node_id=ctx.node_id,
                technique="data.load_documents",
            )
    except TrustError:  # a PermissionError, but the refusal must stay what it is
        raise
    except (OSError, ValueError) as exc:
        raise TechniqueError(
            f"could not load {source} documents from {raw_path!r}: {exc}",
            node_id=ctx.node_id,
            technique="data.load_documents",
        ) from exc
    return {"documents": docs, "count": len(docs), "source": source, "path": where}


def _allowed_roots(ctx: Any, raw_path: Any, pattern: str) -> list[Path] | None:
    """None when the run is trusted (or the call comes straight from Python); else the folders this
    document may read, after checking the (rendered) ``path`` lies inside them."""
    run = getattr(ctx, "_run", None)
    if getattr(run, "trusted", True):
        return None
    spec = getattr(getattr(run, "pipeline", None), "spec", None)
    source = getattr(spec, "source", None)
    root = ctx.config.get("root")
    try:
        roots = document_roots(source, str(root) if root else None)
        if raw_path:
            check_path(str(raw_path), source=source, trusted=False, root=str(root) if root else None)
        if pattern.startswith(("/", "~")) or ".." in Path(pattern).parts:
            raise TrustError(f"pattern '{pattern}' may not leave the folder it searches")
    except TrustError as exc:
        raise TrustError(exc.message, node_id=ctx.node_id, technique="data.load_documents") from None
    return roots


@technique(
    "data.store_vectors",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "collection": Field(str, "collection name", default="documents"),
            "dim": Field(int, "embedding dimensions", default=256, minimum=1, maximum=65_536),
        },
        description="index upstream documents for search",
    ),
    outputs=("stored", "count", "collection", "collection_size", "dim", "ids"),
)
def store_vectors(ctx: Any) -> dict[str, Any]:
    """Store upstream chunks and their embeddings in a collection (default ``documents``), replacing
    chunks with the same id, so a later ``rag.search`` with ``collection:`` that name finds them.
    Documents without embeddings upstream are embedded here. ``stored``/``count``: chunks written
    by this step; ``collection_size``: documents now in the collection."""
    collection = str(ctx.config.get("collection") or "documents")
    chunks: list[dict[str, Any]] = []
    vectors: list[list[float]] = []
    for output in ctx.upstream.values():
        if isinstance(output, Mapping) and isinstance(output.get("embeddings"), list):
            items = output.get("chunks") or output.get("documents") or []
            if len(items) != len(output["embeddings"]):
                raise TechniqueError(
                    f"{len(items)} chunks but {len(output['embeddings'])} embeddings upstream",
                    node_id=ctx.node_id,
                    technique="data.store_vectors",
                )
            chunks.extend(dict(c) for c in items)
            vectors.extend([float(x) for x in v] for v in output["embeddings"])
    if not chunks:
        chunks = upstream_documents(ctx)
        dim = int(ctx.config.get("dim") or 256)
        vectors = HashingEmbedder(dim).embed([f"{c.get('title', '')}. {c.get('text', '')}" for c in chunks])
    dims = {len(v) for v in vectors}
    if len(dims) > 1:
        raise TechniqueError(
            f"embeddings of different sizes {sorted(dims)} cannot share a collection",
            node_id=ctx.node_id,
            technique="data.store_vectors",
        )
    stored = corpus.add_documents(collection, chunks, vectors) if chunks else 0
    size = len(corpus.get_documents(collection)) if corpus.has_collection(collection) else 0
    return {
        "stored": stored,
        "count": stored,
        "collection": collection,
        "collection_size": size,
        "dim": dims.pop() if dims else 0,
        "ids": [str(c.get("id")) for c in chunks],
    }
