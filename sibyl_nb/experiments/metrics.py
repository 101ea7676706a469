"""Metrics for sweeps: a metric is ``fn(output, input, record) -> number | bool | dict``.

``output`` is the run's final output, ``input`` the pipeline input, ``record`` the run's
:class:`~sibyl_nb.engine.result.RunResult` (step records, every node's output, duration). A dict
result becomes one column per key (``name.key``). Any plain function is a metric; the built-ins
here are small classes so that their parameters are part of their identity: a sweep stores each
metric value under a key made of the metric's name, parameters (or, for a plain function, its
code), so re-running with the same metrics computes nothing and changing one recomputes only it.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = [
    "Metric",
    "as_metric",
    "exact_match",
    "contains",
    "regex",
    "token_count",
    "fact_recall",
    "latency",
    "llm_judge",
]


def _text(value: Any) -> str:
    from ..engine.result import text_of

    return text_of(value)


def field_value(output: Any, outputs: Mapping[str, Any] | None, path: str | None) -> Any:
    """A dotted path: ``answer`` reads the final output's field, ``node.field`` (or ``node``) a node's
    output; ``None`` is the whole final output."""
    if path is None:
        return output
    parts = path.split(".")
    outputs = outputs or {}
    in_output = isinstance(output, Mapping) and parts[0] in output
    if parts[0] in outputs and not in_output:
        value, parts = outputs[parts[0]], parts[1:]
    else:
        value = output
    for part in parts:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _field(output: Any, path: str | None, record: Any) -> Any:
    return field_value(output, getattr(record, "outputs", None), path)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _code_key(fn: Callable[..., Any]) -> str:
    """A stable fingerprint of a function's code (source if known, else bytecode and constants)."""
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        src = repr((code.co_code, code.co_consts, code.co_names)) if code is not None else repr(fn)
    return hashlib.sha256(src.encode("utf-8", "replace")).hexdigest()[:16]


class Metric:
    """A named scoring function with a stable identity (``key``) for caching its values."""

    name: str = "metric"

    def __init__(self, fn: Callable[..., Any], name: str | None = None, key: str | None = None) -> None:
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "metric"))
        self.key = key or f"{self.name}:{_code_key(fn)}"
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, output: Any, input: Any, record: Any) -> Any:
        return self.fn(output, input, record)

    def __repr__(self) -> str:
        return f"<metric {self.name}>"


def as_metric(item: Any) -> Metric:
    if isinstance(item, Metric):
        return item
    if callable(item):
        return Metric(item)
    raise ConfigError(f"a metric must be a function (output, input, record) -> value, got {item!r}")


class _Builtin(Metric):
    """A built-in: parameters given to the constructor make its name and key."""

    def __init__(self, name: str, **params: Any) -> None:
        self.params = params
        self.name = name
        self.key = f"{type(self).__name__}:{params!r}"
        self.is_async = inspect.iscoroutinefunction(self.score)
        self.fn = self.score

    def score(self, output: Any, input: Any, record: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, output: Any, input: Any, record: Any) -> Any:
        return self.score(output, input, record)


def _expected(input: Any, expected: Any, field: str) -> Any:
    if expected is not None:
        return expected
    if isinstance(input, Mapping) and field in input:
        return input[field]
    raise ConfigError(
        f"metric needs the expected value: pass expected=... or give each input a '{field}' field"
    )


class exact_match(_Builtin):  # noqa: N801 - used like a function
    """The answer equals the expected text (``expected=`` or the input's ``expected`` field),
    ignoring case, punctuation and spacing unless ``normalize=False``."""

    def __init__(
        self, expected: str | None = None, *, field: str | None = None, input_field: str = "expected",
        normalize: bool = True, name: str = "exact_match",
    ) -> None:  # fmt: skip
        super().__init__(name, expected=expected, field=field, input_field=input_field, normalize=normalize)

    def score(self, output: Any, input: Any, record: Any) -> bool:
        p = self.params
        want = str(_expected(input, p["expected"], p["input_field"]))
        got = _text(_field(output, p["field"], record))
        return _norm(got) == _norm(want) if p["normalize"] else got == want


class contains(_Builtin):  # noqa: N801
    """The answer contains the text (case-insensitive unless ``case=True``)."""

    def __init__(
        self, text: str | None = None, *, field: str | None = None, input_field: str = "expected",
        case: bool = False, name: str | None = None,
    ) -> None:  # fmt: skip
        label = name or (f"contains[{text}]" if text is not None else "contains")
        super().__init__(label, text=text, field=field, input_field=input_field, case=case)

    def score(self, output: Any, input: Any, record: Any) -> bool:
        p = self.params
        want = str(_expected(input, p["text"], p["input_field"]))
        got = _text(_field(output, p["field"], record))
        return want in got if p["case"] else want.lower() in got.lower()


class regex(_Builtin):  # noqa: N801
    """The answer matches ``pattern`` (``re.search``; flags as for :func:`re.compile`)."""

    def __init__(
        self, pattern: str, *, field: str | None = None, flags: int = 0, name: str | None = None
    ) -> None:
        super().__init__(name or f"regex[{pattern}]", pattern=pattern, field=field, flags=flags)
        self._re = re.compile(pattern, flags)

    def score(self, output: Any, input: Any, record: Any) -> bool:
        return self._re.search(_text(_field(output, self.params["field"], record))) is not None


class token_count(_Builtin):  # noqa: N801
    """Tokens in the answer (tiktoken ``cl100k_base``, or the encoding of ``model``)."""

    def __init__(
        self, *, field: str | None = None, model: str | None = None, name: str = "token_count"
    ) -> None:
        super().__init__(name, field=field, model=model)

    def score(self, output: Any, input: Any, record: Any) -> int:
        from ..context.tokens import count_tokens

        return count_tokens(_text(_field(output, self.params["field"], record)), self.params["model"])


class fact_recall(_Builtin):  # noqa: N801
    """Share of expected facts the answer states (each fact matched case- and punctuation-insensitively).
    ``facts=`` a list, or each input's ``facts`` field."""

    def __init__(
        self, facts: Sequence[str] | None = None, *, field: str | None = None, input_field: str = "facts",
        name: str = "fact_recall",
    ) -> None:  # fmt: skip
        super().__init__(
            name, facts=list(facts) if facts is not None else None, field=field, input_field=input_field
        )

    def score(self, output: Any, input: Any, record: Any) -> float:
        p = self.params
        facts = _expected(input, p["facts"], p["input_field"])
        if isinstance(facts, str) or not isinstance(facts, Sequence):
            raise ConfigError(f"fact_recall: the facts must be a list of strings, got {facts!r}")
        if not facts:
            return 1.0
        got = f" {_norm(_text(_field(output, p['field'], record)))} "
        return sum(f" {_norm(str(f))} " in got for f in facts) / len(facts)


class latency(_Builtin):  # noqa: N801
    """The run's wall time in milliseconds."""

    def __init__(self, *, name: str = "latency_ms") -> None:
        super().__init__(name)

    def score(self, output: Any, input: Any, record: Any) -> float:
        return float(record.duration) * 1000.0


# Instruction first, the question last (the form the local provider's rater reads, and any model can).
_JUDGE_PROMPT = (
    "Rate this answer 0-10 for {criteria}. Reply 'Score: N/10' and one sentence of critique.\n"
    "Answer: {answer}\n"
    "Question: {question}"
)


class llm_judge(_Builtin):  # noqa: N801
    """A model grades the answer 0..1 (``Score: N/10`` from the reply) through any named provider;
    the local provider gives a deterministic score (its rubric: coverage, grounding, support)."""

    def __init__(
        self, criteria: str = "correctness and helpfulness", *, provider: str = "primary",
        model: str | None = None, field: str | None = None, name: str = "judge", **params: Any,
    ) -> None:  # fmt: skip
        super().__init__(name, criteria=criteria, provider=provider, model=model, field=field, **params)

    async def score(self, output: Any, input: Any, record: Any) -> float | None:
        from ..providers.registry import get_provider
        from ..techniques.context import query_of
        from ..text.prompts import parse_score

        p = dict(self.params)
        provider = get_provider(p.pop("provider"))
        criteria, field, model = p.pop("criteria"), p.pop("field"), p.pop("model")
        prompt = _JUDGE_PROMPT.format(
            criteria=criteria, question=query_of(input), answer=_text(_field(output, field, record))
        )
        extra = {"model": model} if model else {}
        reply = await provider.complete([{"role": "user", "content": prompt}], **extra, **p)
        value = (reply.fields or {}).get("score")
        if not isinstance(value, (int, float)):
            value = parse_score(reply.text, 0.0, 10.0)
        return None if value is None else round(float(value) / 10.0, 4)
