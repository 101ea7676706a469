"""Retry policy for HTTP model calls: which failures to retry and how long to wait. tenacity runs
the attempts (``OpenAICompatibleProvider._retrying``); this module only decides.

Kept apart from the HTTP client so the policy is testable without a server and reusable by any
provider that talks HTTP.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

__all__ = ["is_retryable_status", "retry_after_seconds", "backoff_delay", "RETRY_AFTER_CAP"]

# A server may ask for a long pause; past this we stop honouring it literally (a notebook cell
# should not hang for an hour) and wait this long instead.
RETRY_AFTER_CAP = 60.0


def is_retryable_status(status: int) -> bool:
    """408 (request timeout), 429 (rate limit) and every 5xx: the same request may succeed later."""
    return status in (408, 429) or status >= 500


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` (OpenAI), else ``Retry-After``
    as seconds or an HTTP date. ``None`` when absent or unparsable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int, initial: float, maximum: float, retry_after: float | None = None, *, jitter: bool = True
) -> float:
    """Wait before attempt ``attempt + 1``: the server's ``Retry-After`` when given (capped at
    :data:`RETRY_AFTER_CAP`), else ``initial * 2**(attempt-1)`` capped at ``maximum``, shaved by up
    to 25% of jitter so many clients hitting one rate limit do not retry in lock-step."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP)
    base = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return base * (1.0 - 0.25 * random.random()) if jitter else base
