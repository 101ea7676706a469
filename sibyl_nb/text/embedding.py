"""A local, model-free embedder: the hashing trick over word unigrams and bigrams.

Why: vector search and MMR need *some* embedding, and an offline, deterministic one keeps every
example runnable on a fresh machine. Each stemmed content word and each adjacent pair is hashed
(BLAKE2b, so the result is stable across processes, unlike ``hash()``) to one of ``dim`` buckets
with a sign from another hash bit, weighted by ``1 + log(tf)``, and the vector is L2-normalised.
Similar wording gives high cosine similarity; it knows nothing of synonyms.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from .tokenize import terms

if TYPE_CHECKING:  # numpy loads on first use, keeping technique registration cheap
    import numpy as np

__all__ = ["DEFAULT_DIM", "EMBEDDER_NAME", "embed", "embed_many", "cosine", "HashingEmbedder"]

DEFAULT_DIM = 256
EMBEDDER_NAME = "hashing-unigram-bigram-v1"


@lru_cache(maxsize=65536)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


def _features(text: str) -> Counter[str]:
    toks = terms(text)
    feats: Counter[str] = Counter(toks)
    feats.update(f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False))
    return feats


def embed(text: str, dim: int = DEFAULT_DIM) -> np.ndarray:
    """The unit-length embedding of ``text`` (all zeros for text with no content words)."""
    import numpy as np

    vec = np.zeros(dim, dtype=np.float64)
    for feat, tf in _features(text).items():
        idx, sign = _bucket(feat, dim)
        vec[idx] += sign * (1.0 + math.log(tf))
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def embed_many(texts: Sequence[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """A ``(len(texts), dim)`` matrix of unit rows."""
    import numpy as np

    if not texts:
        return np.zeros((0, dim), dtype=np.float64)
    return np.vstack([embed(t, dim) for t in texts])


def cosine(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    import numpy as np

    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    return float(va @ vb / (na * nb)) if na > 0 and nb > 0 else 0.0


class HashingEmbedder:
    """Object form for code that wants ``embedder.embed(texts)`` returning JSON-ready lists."""

    name = EMBEDDER_NAME

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if dim < 8:
            raise ValueError(f"embedding dim must be >= 8, got {dim}")
        self.dim = int(dim)

    def embed(self, texts: Sequence[str], decimals: int = 6) -> list[list[float]]:
        import numpy as np

        return np.round(embed_many(texts, self.dim), decimals).tolist()
