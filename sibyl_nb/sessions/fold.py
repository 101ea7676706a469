"""The summary of what a turn leaves out, kept up to date by folding, so ``summarization`` with
``max_tokens`` (and no ``max_messages``) reads a bounded tail instead of the whole log every turn.

Everything before the shown history is summarised: the stored summary (of messages trimmed from the
log) and the stored messages ``max_tokens`` leaves out. Re-summarising those every turn reads and
ranks the whole history; instead the summary is kept in the store's key-value facet under
``sibyl:session-fold:<session>``, with how far it reaches (``through``: the store's number,
``SessionData.first_seq + i``, of the first message it does not cover) and a fingerprint of the
last message it covers. A turn folds
only the messages that left the window since then (``summarize_messages(new, prior=summary)``, the
same rolling fold ``max_messages`` trimming uses) and reads them with the window in one page.

The record is rebuilt from the whole log (once) when it is missing, or when it no longer describes
this session: a different stored summary or creation time (deleted and started again), a
``through`` outside the log (rewritten: numbers start after the old ones; or trimmed past it), or a
last covered message whose content changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..context.extractive import summarize_messages
from ..context.tokens import TokenCounter
from ..stores import SessionData, Store

__all__ = ["left_out_summary", "fold_key"]

_VERSION = 1


def fold_key(session_id: str) -> str:
    return f"sibyl:session-fold:{session_id}"


def _base(data: SessionData, length: int, encoding: str) -> str:
    """What a fold record depends on besides the messages: the stored summary, the session's birth."""
    text = "\x00".join((data.summary, repr(data.created_at), str(length), encoding))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def left_out_summary(
    store: Store,
    data: SessionData,
    shown: int,
    *,
    length: int,
    counter: TokenCounter,
    ttl: float | None,
    reload: Callable[[int | None], SessionData | None],
) -> str:
    """The summary of everything before the newest ``shown`` messages of ``data`` (a tail of the log).

    ``reload(last)`` reads the session again with its newest ``last`` messages (None: all), for the
    rare turn whose page does not reach back to where the stored fold ends.
    """
    sid = data.session_id
    end = data.first_seq + data.message_count
    boundary = end - shown  # the number of the first shown message
    if boundary <= data.first_seq:  # nothing stored is left out
        return data.summary
    key = fold_key(sid)
    base = _base(data, length, counter.encoding)
    rec = store.kv_get(key)
    valid = (
        isinstance(rec, dict)
        and rec.get("v") == _VERSION
        and rec.get("base") == base
        and isinstance(rec.get("through"), int)
        and isinstance(rec.get("text"), str)
        and data.first_seq < rec["through"] <= end
    )
    if valid:
        through = int(rec["through"])
        start = end - len(data.messages)  # the number of messages[0]
        if through - 1 < start:  # the page does not reach the last covered message: read back to it
            more = reload(end - (through - 1))
            valid = more is not None and _base(more, length, counter.encoding) == base
            if more is not None and valid:
                data = more
                start = data.first_seq + data.message_count - len(data.messages)
                valid = start <= through - 1  # (not when messages arrived in between: rebuild)
        if valid and counter.fingerprint(data.messages[through - 1 - start]) == rec.get("mark"):
            if through >= boundary:
                return str(rec["text"])  # nothing new left the window (it may even have grown back)
            new = data.messages[through - start : boundary - start]
            text = summarize_messages(new, length, prior=str(rec["text"]), counter=counter)
            _write(store, key, base, boundary, data.messages[boundary - 1 - start], text, counter, ttl)
            return text
    full = reload(None)
    if full is None:
        return data.summary
    start = full.first_seq  # the whole log
    boundary = min(boundary, start + len(full.messages))
    left = full.messages[: max(0, boundary - start)]
    if not left:
        return full.summary
    text = summarize_messages(left, length, prior=full.summary, counter=counter)
    _write(store, key, _base(full, length, counter.encoding), boundary, left[-1], text, counter, ttl)
    return text


def _write(
    store: Store,
    key: str,
    base: str,
    through: int,
    last: dict[str, Any],
    text: str,
    counter: TokenCounter,
    ttl: float | None,
) -> None:
    record = {
        "v": _VERSION,
        "base": base,
        "through": through,
        "mark": counter.fingerprint(last),
        "text": text,
    }
    store.kv_put(key, record, ttl=ttl)
