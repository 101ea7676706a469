"""Offline text machinery behind the built-in techniques and the local provider.

One module per job: :mod:`.tokenize` (words, stems, sentences), :mod:`.tokens` (token counts),
:mod:`.bm25` (keyword index), :mod:`.embedding` (hashing embedder), :mod:`.ranking` (fusion,
MMR, lexical relevance), :mod:`.corpus` (the document store), :mod:`.query` (topics, follow-ups,
expansion, decomposition), :mod:`.prompts` (reading prompts and replies), :mod:`.classify`,
:mod:`.extractive`, :mod:`.support`, :mod:`.critique` (what the local provider is made of) and
:mod:`.gather` (finding a step's inputs among earlier outputs).

Users mostly need the corpus helpers, re-exported here::

    from sibyl_nb.text import add_documents, list_collections
    add_documents("faq", [{"id": "faq-1", "title": "Refunds", "text": "Refunds take 5 days."}])
"""

from __future__ import annotations

from .corpus import add_documents, get_documents, list_collections, reset_corpus, search

__all__ = ["add_documents", "get_documents", "list_collections", "reset_corpus", "search"]
