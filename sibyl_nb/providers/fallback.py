"""Provider-level fallback: try ``primary``, answer from ``fallback`` when it fails.

The engine's ``on_error`` handles fallbacks between *steps*; this is the smaller tool for one call
(a flaky remote model backed by a local one). ``Completion.provider`` says which one answered.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ProviderError
from .base import Completion, Message, Provider
from .streaming import TokenCallback, complete_with_tokens, stream_via_complete

__all__ = ["FallbackProvider"]

logger = logging.getLogger("sibyl_nb.providers.fallback")

_DEFAULT_ERRORS: tuple[type[BaseException], ...] = (ProviderError, TimeoutError, OSError)


class FallbackProvider:
    """``complete`` tries ``primary``; on one of ``errors`` it asks ``fallback`` instead.

    Only provider-ish failures fall through by default (``ProviderError``, timeouts, OS errors): a
    bug such as a ``TypeError`` should surface, not be hidden behind the fallback's answer.
    With ``on_token``, deltas the primary streamed before failing have already been shown; the
    fallback's deltas follow them.
    """

    def __init__(
        self,
        primary: Provider,
        fallback: Provider,
        *,
        name: str | None = None,
        errors: tuple[type[BaseException], ...] = _DEFAULT_ERRORS,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = name or primary.name
        self.errors = errors

    def __repr__(self) -> str:
        return f"FallbackProvider({self.primary!r}, {self.fallback!r}, name={self.name!r})"

    @property
    def model(self) -> str:
        return str(getattr(self.primary, "model", "") or "")

    async def complete(
        self, messages: list[Message], *, on_token: TokenCallback | None = None, **params: Any
    ) -> Completion:
        try:
            completion = await complete_with_tokens(self.primary, messages, on_token, params)
            return _stamped(completion, self.primary)
        except self.errors as first:
            logger.warning(
                "provider '%s' failed (%s); falling back to '%s'",
                self.primary.name,
                first,
                self.fallback.name,
            )
            try:
                completion = await complete_with_tokens(self.fallback, messages, on_token, params)
            except self.errors as second:
                raise ProviderError(
                    f"primary '{self.primary.name}' failed ({first}); fallback '{self.fallback.name}' "
                    f"failed too ({second})",
                    provider=self.name,
                    retryable=bool(getattr(second, "retryable", False)),
                ) from second
            return _stamped(completion, self.fallback)

    def stream(self, messages: list[Message], **params: Any) -> AsyncIterator[str]:
        return stream_via_complete(self, messages, **params)


def _stamped(completion: Completion, provider: Provider) -> Completion:
    if not completion.provider:
        completion.provider = provider.name
    return completion
