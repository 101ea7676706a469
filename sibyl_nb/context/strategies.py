"""The four context strategies as pure functions of (history, budget, token counter).

Each returns a :class:`ContextResult`: the context messages to send (an optional summary message,
compressed older messages, recent messages in full — in chronological order; the system prompt and
the current user message are *accounted* but left to the generation step) and a token allocation
whose seven parts — system, summary, compressed, recent, current, reserved, free — sum exactly to
``max_tokens``. ``free`` is negative only when the fixed parts alone (system + current + reserve)
exceed the budget; ``over_budget`` says so.

Counts come from each message's cached ``tokens`` (see :mod:`.tokens`), and selection walks back
from the newest message, so a turn costs O(messages kept), not O(history).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .extractive import compress_text, summarize_messages
from .tokens import REPLY_PRIMING, TokenCounter, content_text, get_counter

__all__ = [
    "ContextResult",
    "ALLOCATION_KEYS",
    "STRATEGIES",
    "window_context",
    "compression_context",
    "summary_context",
    "hierarchical_context",
    "build_context",
    "parse_levels",
    "DEFAULT_LEVELS",
    "SUMMARY_PREFIX",
    "COMPRESSED_PREFIX",
]

ALLOCATION_KEYS = ("system", "summary", "compressed", "recent", "current", "reserved", "free")
DEFAULT_MAX_TOKENS = 8000
DEFAULT_LEVELS = {"full": 5, "compressed": 10, "summary": 100}
SUMMARY_PREFIX = "Summary of the earlier conversation: "
COMPRESSED_PREFIX = "Earlier conversation (compressed): "

Message = dict[str, Any]
Abstractor = Callable[[Sequence[Mapping[str, Any]], int], str]


@dataclass(slots=True)
class ContextResult:
    """What a strategy decided: the messages to send and where the budget went."""

    strategy: str
    messages: list[Message]
    allocation: dict[str, int]
    max_tokens: int
    kept: dict[str, int]
    dropped: int = 0
    summary: str = ""
    over_budget: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_used(self) -> int:
        """Tokens the request will use: everything but the response reserve and the free space."""
        a = self.allocation
        return a["system"] + a["summary"] + a["compressed"] + a["recent"] + a["current"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "allocation": dict(self.allocation),
            "strategy": self.strategy,
            "kept": dict(self.kept),
            "tokens_used": self.tokens_used,
            "max_tokens": self.max_tokens,
            "dropped": self.dropped,
            "summary": self.summary,
            "over_budget": self.over_budget,
        }


# ---------------------------------------------------------------------------------- helpers
def _clean(msg: Mapping[str, Any], content: Any = None) -> Message:
    """The message as a provider wants it: role, content (and name), no cached bookkeeping."""
    out: Message = {
        "role": msg.get("role", "user"),
        "content": msg.get("content") if content is None else content,
    }
    if msg.get("name"):
        out["name"] = msg["name"]
    return out


class _Budget:
    """The fixed parts of the allocation and what is left for history."""

    def __init__(
        self,
        counter: TokenCounter,
        max_tokens: int,
        reserve_tokens: int | None,
        system_prompt: str,
        current: str,
    ) -> None:
        self.counter = counter
        self.max_tokens = int(max_tokens)
        if reserve_tokens is None:
            reserve_tokens = min(2000, self.max_tokens // 4)
        self.reserved = max(0, int(reserve_tokens))
        self.system = (
            counter.message_tokens({"role": "system", "content": system_prompt}) if system_prompt else 0
        )
        cur = counter.message_tokens({"role": "user", "content": current}) if current else 0
        self.current = cur + REPLY_PRIMING
        self.available = self.max_tokens - self.reserved - self.system - self.current

    def allocation(self, summary: int = 0, compressed: int = 0, recent: int = 0) -> dict[str, int]:
        used = self.system + summary + compressed + recent + self.current + self.reserved
        return {
            "system": self.system,
            "summary": summary,
            "compressed": compressed,
            "recent": recent,
            "current": self.current,
            "reserved": self.reserved,
            "free": self.max_tokens - used,
        }


def _suffix(
    history: Sequence[Mapping[str, Any]], budget: int, counter: TokenCounter, limit: int | None = None
) -> tuple[int, int]:
    """(count, tokens) of the longest suffix of ``history`` (at most ``limit`` messages) within ``budget``."""
    n = len(history)
    stop = n - limit if limit is not None else 0
    used = 0
    i = n
    tok = counter.message_tokens
    while i > max(stop, 0):
        t = tok(history[i - 1])
        if used + t > budget:
            break
        used += t
        i -= 1
    return n - i, used


def _fill_compressed(
    older: Sequence[Mapping[str, Any]], ratio: float, counter: TokenCounter, room: int
) -> tuple[list[Message], int, int]:
    """Compress the newest of ``older`` first while they fit ``room``: (messages in order, tokens used,
    tokens they had before compression)."""
    out: list[Message] = []
    used = original = 0
    for m in reversed(older):
        msg, t = _compressed(m, ratio, counter)
        if used + t > room:
            break
        out.append(msg)
        used += t
        original += counter.message_tokens(m)
    out.reverse()
    return out, used, original


def _compressed(msg: Mapping[str, Any], ratio: float, counter: TokenCounter) -> tuple[Message, int]:
    """The message with its content compressed (memoised), and its token cost."""
    text, n = compress_text(content_text(msg.get("content")), ratio, counter)
    name = msg.get("name")
    return _clean(msg, text), counter.overhead(str(msg.get("role") or ""), str(name) if name else None) + n


@lru_cache(maxsize=4096)
def _system_message(counter: TokenCounter, content: str) -> tuple[tuple[str, Any], ...]:
    """A system message with ``content``, counted (``tokens``, ``tokens_of``): a summary recurs
    turn after turn, so it is counted once, not every turn."""
    msg: Message = {"role": "system", "content": content}
    counter.message_tokens(msg)
    return tuple(msg.items())


def _summary_message(text: str, counter: TokenCounter) -> tuple[Message | None, int]:
    if not text:
        return None, 0
    msg = dict(_system_message(counter, SUMMARY_PREFIX + text))
    return msg, int(msg["tokens"])


def _fit_summary(text: str, room: int, counter: TokenCounter) -> tuple[Message | None, int, str]:
    """The summary message cut to ``room`` tokens (None if not even the frame fits)."""
    msg, t = _summary_message(text, counter)
    if msg is None or t <= room:
        return msg, t, text
    frame = t - counter.count(text)
    cut = counter.truncate(text, room - frame - 1) if room - frame - 1 > 0 else ""
    if not cut:
        return None, 0, ""
    msg, t = _summary_message(cut, counter)
    return msg, t, cut


def _setup(counter: TokenCounter | None, model: str | None) -> TokenCounter:
    return counter or get_counter(model)


# ---------------------------------------------------------------------------------- strategies
def window_context(
    history: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    window_size: int | None = None,
    reserve_tokens: int | None = None,
    system_prompt: str = "",
    current: str = "",
    summary: str = "",
    include_summary: bool = False,
    counter: TokenCounter | None = None,
    model: str | None = None,
) -> ContextResult:
    """Keep the longest suffix (at most ``window_size`` messages) that fits
    ``max_tokens - reserve_tokens - system - current`` (minus the summary if ``include_summary``)."""
    counter = _setup(counter, model)
    b = _Budget(counter, max_tokens, reserve_tokens, system_prompt, current)
    room = b.available
    smsg, stok, stext = (None, 0, "")
    if include_summary and summary:
        smsg, stok, stext = _fit_summary(summary, max(room, 0), counter)
        room -= stok
    limit = int(window_size) if window_size else None
    k, used = _suffix(history, max(room, 0), counter, limit)
    kept = history[len(history) - k :] if k else []
    messages = ([smsg] if smsg else []) + [_clean(m) for m in kept]
    alloc = b.allocation(summary=stok, recent=used)
    return ContextResult(
        "window",
        messages,
        alloc,
        b.max_tokens,
        {"full": k, "compressed": 0, "summarized": 0},
        dropped=len(history) - k,
        summary=stext,
        over_budget=alloc["free"] < 0,
    )


def compression_context(
    history: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    compression_ratio: float = 0.5,
    compression_method: str = "extractive",
    keep_recent: int | None = None,
    reserve_tokens: int | None = None,
    system_prompt: str = "",
    current: str = "",
    summary: str = "",
    include_summary: bool = False,
    counter: TokenCounter | None = None,
    model: str | None = None,
    abstract: Abstractor | None = None,
) -> ContextResult:
    """Recent messages in full (the newest that fit half the room, or ``keep_recent`` of them), older
    ones compressed to ``compression_ratio``: each message extractively, or all together in one
    block by ``abstract(messages, target_tokens)`` (a model) when the method is ``abstractive``.
    What still does not fit is dropped, oldest first."""
    counter = _setup(counter, model)
    b = _Budget(counter, max_tokens, reserve_tokens, system_prompt, current)
    room = max(b.available, 0)
    smsg, stok, stext = (None, 0, "")
    if include_summary and summary:
        smsg, stok, stext = _fit_summary(summary, room, counter)
        room -= stok
    n = len(history)
    k_all, used_all = _suffix(history, room, counter)
    if k_all == n:  # everything fits uncompressed
        messages = ([smsg] if smsg else []) + [_clean(m) for m in history]
        alloc = b.allocation(summary=stok, recent=used_all)
        return ContextResult(
            "compression",
            messages,
            alloc,
            b.max_tokens,
            {"full": n, "compressed": 0, "summarized": 0},
            summary=stext,
            over_budget=alloc["free"] < 0,
            details={"ratio_requested": compression_ratio},
        )
    if keep_recent is not None:
        k_full, used_full = _suffix(history, room, counter, int(keep_recent))
    else:
        k_full, used_full = _suffix(history, room // 2, counter)
    older = history[: n - k_full]
    left = room - used_full
    ratio = float(compression_ratio)
    comp_msgs: list[Message] = []
    comp_tokens = 0
    orig_tokens = 0
    n_comp = 0
    if compression_method == "abstractive":
        if abstract is None:
            raise ValueError(
                "compression_method 'abstractive' needs a model: pass abstract=(messages, tokens) -> text"
            )
        take, orig = 0, 0
        for m in reversed(older):  # the newest older messages whose compressed size fits
            t = counter.message_tokens(m)
            if (orig + t) * ratio > left:
                break
            orig += t
            take += 1
        if take:
            block = older[len(older) - take :]
            frame = counter.message_tokens({"role": "system", "content": COMPRESSED_PREFIX})
            text = abstract(block, max(1, int(orig * ratio) - frame))
            text = counter.truncate(text, max(0, left - frame))
            if text:
                msg = {"role": "system", "content": COMPRESSED_PREFIX + text}
                comp_msgs, comp_tokens, orig_tokens, n_comp = [msg], counter.message_tokens(msg), orig, take
    else:
        comp_msgs, comp_tokens, orig_tokens = _fill_compressed(older, ratio, counter, left)
        n_comp = len(comp_msgs)
    full = history[n - k_full :]
    messages = ([smsg] if smsg else []) + comp_msgs + [_clean(m) for m in full]
    alloc = b.allocation(summary=stok, compressed=comp_tokens, recent=used_full)
    achieved = comp_tokens / orig_tokens if orig_tokens else 1.0
    return ContextResult(
        "compression",
        messages,
        alloc,
        b.max_tokens,
        {"full": k_full, "compressed": n_comp, "summarized": 0},
        dropped=n - k_full - n_comp,
        summary=stext,
        over_budget=alloc["free"] < 0,
        details={"ratio_requested": ratio, "ratio_achieved": achieved, "method": compression_method},
    )


_BLOCK_CACHE: dict[tuple[Any, ...], str] = {}
_BLOCK_CACHE_MAX = 4096
_COMBINED: dict[tuple[Any, ...], str] = {}  # hierarchical: block summaries -> the level's summary
SUMMARY_BLOCK = 10  # hierarchical: messages per summarised block, aligned to the conversation's numbering


def _block_key(block: Sequence[Mapping[str, Any]]) -> int:
    return hash(tuple((str(m.get("role") or ""), content_text(m.get("content"))) for m in block))


def block_summary(
    block: Sequence[Mapping[str, Any]],
    length: int,
    counter: TokenCounter,
    abstract: Abstractor | None = None,
    cache_key: Any = None,
) -> str:
    """One block's summary (extractive, or ``abstract(block, length)``), memoised by the block's
    content: a block that is complete never changes, so it is summarised once, not every turn."""
    if abstract is not None and cache_key is None:  # an unnamed model: nothing to key a memo on
        return counter.truncate(str(abstract(block, length) or "").strip(), length)
    key = (cache_key if abstract is not None else "extractive", counter.requested, length, _block_key(block))
    text = _BLOCK_CACHE.get(key)
    if text is None:
        if abstract is not None:
            text = counter.truncate(str(abstract(block, length) or "").strip(), length)
        else:
            text = summarize_messages(block, length, counter=counter)
        if len(_BLOCK_CACHE) >= _BLOCK_CACHE_MAX:
            _BLOCK_CACHE.clear()
        _BLOCK_CACHE[key] = text
    return text


def _level_summary(
    history: Sequence[Mapping[str, Any]],
    lo: int,
    hi: int,
    offset: int,
    length: int,
    prior: str,
    counter: TokenCounter,
) -> str:
    """One summary of ``history[lo:hi]`` (after the stored ``prior``) from memoised block summaries."""
    if lo >= hi:
        return summarize_messages([], length, prior=prior, counter=counter) if prior else ""
    offset = max(0, int(offset))
    parts = [prior.strip()] if prior and prior.strip() else []
    start = lo
    while start < hi:
        stop = min(hi, ((offset + start) // SUMMARY_BLOCK + 1) * SUMMARY_BLOCK - offset)
        text = block_summary(history[start:stop], length, counter)
        if text:
            parts.append(text)
        start = stop
    if len(parts) == 1 and not prior:
        return parts[0]
    key = (counter.requested, length, tuple(parts))
    combined = _COMBINED.get(key)
    if combined is None:
        # the block summaries compete as one text, as a rolling summary's earlier parts do
        combined = summarize_messages([], length, prior="\n".join(parts), counter=counter)
        if len(_COMBINED) >= _BLOCK_CACHE_MAX:
            _COMBINED.clear()
        _COMBINED[key] = combined
    return combined


def summary_context(
    history: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    summary_frequency: int = 10,
    summary_length: int = 200,
    reserve_tokens: int | None = None,
    system_prompt: str = "",
    current: str = "",
    summary: str = "",
    counter: TokenCounter | None = None,
    model: str | None = None,
    abstract: Abstractor | None = None,
    offset: int = 0,
) -> ContextResult:
    """One summary per block of ``summary_frequency`` messages, as the seed draws it ("Messages 1-10:
    ...", "Messages 11-20: ..."), each at most ``summary_length`` tokens, and the newest block's
    messages in full.

    Blocks are aligned to the conversation's own numbering (``offset`` is the index of
    ``history[0]`` in the whole session, when the history is its newest part), so a complete block
    never changes and its summary is computed once (see :func:`block_summary`). The newest messages
    take the room first; block summaries fill what is left, newest first; the stored ``summary``
    (of messages no longer in the history) leads when it fits.
    """
    counter = _setup(counter, model)
    b = _Budget(counter, max_tokens, reserve_tokens, system_prompt, current)
    room = max(b.available, 0)
    n = len(history)
    freq = max(1, int(summary_frequency))
    length = max(0, int(summary_length))
    offset = max(0, int(offset))
    end = offset + n
    cut = max(0, ((end - 1) // freq) * freq - offset) if n else 0
    older, recent = history[:cut], history[cut:]
    blocks: list[tuple[int, int, Sequence[Mapping[str, Any]]]] = []
    start = 0
    while start < cut:
        stop = min(cut, ((offset + start) // freq + 1) * freq - offset)
        blocks.append((offset + start, offset + stop, older[start:stop]))
        start = stop
    frame = counter.message_tokens({"role": "system", "content": SUMMARY_PREFIX})
    k, used = _suffix(recent, max(room - frame - 1, 0), counter)
    left = room - used
    cache_key = getattr(abstract, "cache_key", None) if abstract is not None else None
    lines: list[tuple[int, str]] = []  # (block start, line), chosen newest first
    covered = 0
    total = frame
    for first, last, block in reversed(blocks):
        text = block_summary(block, length, counter, abstract, cache_key) if length else ""
        if not text:
            continue
        line = f"Messages {first + 1}-{last}: {text}"
        t = counter.count(line) + 1
        if total + t > left:
            break
        lines.append((first, line))
        covered += len(block)
        total += t
    stored = (summary or "").strip()
    if stored:
        line = f"Earlier: {stored}"
        t = counter.count(line) + 1
        if total + t > left and left - total > 8:
            line = f"Earlier: {counter.truncate(stored, left - total - 4)}"
            t = counter.count(line) + 1
        if total + t <= left:
            lines.append((-1, line))
    lines.sort()
    text = "\n".join(line for _, line in lines)
    smsg, stok = _summary_message(text, counter)
    messages = ([smsg] if smsg else []) + [_clean(m) for m in recent[len(recent) - k :]]
    alloc = b.allocation(summary=stok, recent=used)
    return ContextResult(
        "summary",
        messages,
        alloc,
        b.max_tokens,
        {"full": k, "compressed": 0, "summarized": covered},
        dropped=n - k - covered,
        summary=text,
        over_budget=alloc["free"] < 0,
        details={
            "summary_frequency": freq,
            "blocks": len(blocks),
            "blocks_shown": sum(f >= 0 for f, _ in lines),
        },
    )


def parse_levels(levels: Any) -> dict[str, int]:
    """Seed form ``[{name: full, messages: 5}, ...]`` or ``{full: 5, ...}`` -> message counts per level."""
    out = dict(DEFAULT_LEVELS)
    if not levels:
        return out
    alias = {
        "full": "full",
        "recent": "full",
        "compressed": "compressed",
        "compress": "compressed",
        "summary": "summary",
        "summarized": "summary",
        "summarised": "summary",
    }
    items = (
        levels.items()
        if isinstance(levels, Mapping)
        else ((lv.get("name"), lv.get("messages")) for lv in levels if isinstance(lv, Mapping))
    )
    for name, count in items:
        key = alias.get(str(name).lower())
        if key is None:
            raise ValueError(f"unknown context level {name!r}: use full, compressed or summary")
        out[key] = max(0, int(count)) if count is not None else out[key]
    return out


def _level_option(levels: Any, name: str, key: str) -> Any:
    if isinstance(levels, Sequence) and not isinstance(levels, str):
        for lv in levels:
            if isinstance(lv, Mapping) and str(lv.get("name", "")).lower().startswith(name[:4]) and key in lv:
                return lv[key]
    return None


def hierarchical_context(
    history: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    levels: Any = None,
    compression_ratio: float = 0.5,
    summary_length: int = 200,
    reserve_tokens: int | None = None,
    system_prompt: str = "",
    current: str = "",
    summary: str = "",
    counter: TokenCounter | None = None,
    model: str | None = None,
    offset: int = 0,
) -> ContextResult:
    """The newest ``full`` messages verbatim, the ``compressed`` before them compressed, the
    ``summary`` before those in one summary (defaults 5 / 10 / 100). When the budget is short, the
    full level keeps priority, then the summary (cut), then the compressed level (oldest dropped).

    The summary level is summarised in blocks of :data:`SUMMARY_BLOCK` messages aligned to the
    conversation's numbering (``offset``: the index of ``history[0]``), each memoised by its
    content, and the block summaries are combined into one: as the level slides two messages a
    turn, only its newest block (growing) and oldest (cut) are summarised again, not 100 messages."""
    counter = _setup(counter, model)
    lv = parse_levels(levels)
    ratio = float(_level_option(levels, "compressed", "ratio") or compression_ratio)
    length = int(_level_option(levels, "summary", "max_tokens") or summary_length)
    b = _Budget(counter, max_tokens, reserve_tokens, system_prompt, current)
    room = max(b.available, 0)
    n = len(history)
    f_start = max(0, n - lv["full"])
    c_start = max(0, f_start - lv["compressed"])
    s_start = max(0, c_start - lv["summary"])
    full, comp, summ = history[f_start:], history[c_start:f_start], history[s_start:c_start]

    k_full, used_full = _suffix(full, room, counter)
    room -= used_full
    text = _level_summary(history, s_start, c_start, offset, length, summary, counter)
    smsg, stok, stext = _fit_summary(text, room, counter)
    room -= stok
    comp_msgs, comp_tokens, orig_tokens = _fill_compressed(comp, ratio, counter, room)
    messages = ([smsg] if smsg else []) + comp_msgs + [_clean(m) for m in full[len(full) - k_full :]]
    alloc = b.allocation(summary=stok, compressed=comp_tokens, recent=used_full)
    kept = {"full": k_full, "compressed": len(comp_msgs), "summarized": len(summ) if smsg else 0}
    dropped = n - kept["full"] - kept["compressed"] - kept["summarized"]
    return ContextResult(
        "hierarchical",
        messages,
        alloc,
        b.max_tokens,
        kept,
        dropped=dropped,
        summary=stext,
        over_budget=alloc["free"] < 0,
        details={
            "levels": lv,
            "ratio_requested": ratio,
            "ratio_achieved": comp_tokens / orig_tokens if orig_tokens else 1.0,
        },
    )


STRATEGIES: dict[str, Callable[..., ContextResult]] = {
    "window": window_context,
    "compression": compression_context,
    "summary": summary_context,
    "hierarchical": hierarchical_context,
}

_OPTIONS = {
    "window": (
        "max_tokens",
        "window_size",
        "reserve_tokens",
        "system_prompt",
        "current",
        "summary",
        "include_summary",
        "counter",
        "model",
    ),
    "compression": (
        "max_tokens",
        "compression_ratio",
        "compression_method",
        "keep_recent",
        "reserve_tokens",
        "system_prompt",
        "current",
        "summary",
        "include_summary",
        "counter",
        "model",
        "abstract",
    ),
    "summary": (
        "max_tokens",
        "summary_frequency",
        "summary_length",
        "reserve_tokens",
        "system_prompt",
        "current",
        "summary",
        "counter",
        "model",
        "abstract",
        "offset",
    ),
    "hierarchical": (
        "max_tokens",
        "levels",
        "compression_ratio",
        "summary_length",
        "reserve_tokens",
        "system_prompt",
        "current",
        "summary",
        "counter",
        "model",
        "offset",
    ),
}


def build_context(strategy: str, history: Sequence[Mapping[str, Any]], **options: Any) -> ContextResult:
    """Run ``strategy`` by name with whichever of ``options`` it understands (the rest is ignored)."""
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown context strategy {strategy!r}: choose {', '.join(STRATEGIES)}") from None
    known = _OPTIONS[strategy]
    return fn(history, **{k: v for k, v in options.items() if k in known and v is not None})


def clear_caches() -> None:
    """Forget every memo the strategies keep (block and combined summaries, compressed messages):
    the next turn computes everything from scratch, as the first did."""
    from . import extractive

    _BLOCK_CACHE.clear()
    _COMBINED.clear()
    _system_message.cache_clear()
    for fn in (
        extractive._compress,
        extractive._analyse,
        extractive._gist,
        extractive._tokens,
        extractive._items,
        extractive._prior_line,
    ):
        fn.cache_clear()
