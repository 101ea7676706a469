"""One sweep cell: run a pipeline on one input under one setting, and keep what happened as JSON.

The record is plain JSON (the run's outputs, step records, timings, token usage, cache hits) so it can
be stored, reloaded in a new kernel, scored again by a new metric and diffed, without the objects of
the run that made it. A failure is a record with its error, never an exception out of the sweep.
"""

from __future__ import annotations

import json
from typing import Any

from ..engine.events import Event, Observer
from ..engine.result import RunResult, StepRecord

__all__ = ["CellCache", "run_cell", "result_from_record", "jsonable", "failed_record"]

_STEP_KEYS = ("node_id", "technique", "iteration", "status", "started", "ended", "attempts", "error", "reason",
              "fallback_for", "group")  # fmt: skip


class _NotPlain(Exception):
    """A value the fast copy does not take (the JSON round trip decides what it becomes)."""


_ATOMS = (str, int, float, bool, type(None))


def _plain_copy(value: Any) -> Any:
    t = type(value)
    if t in _ATOMS:
        return value
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NotPlain
            out[k] = _plain_copy(v)
        return out
    if t is list or t is tuple:
        return [_plain_copy(v) for v in value]
    raise _NotPlain


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (objects that are not JSON become their repr).

    Outputs are nearly always dicts, lists, strings and numbers already: those are copied as they
    are, without the text round trip (a third of a sweep's own time per run); anything else takes
    the round trip, whose rules (tuple -> list, number keys -> text, objects -> repr) are the truth."""
    try:
        return _plain_copy(value)
    except (_NotPlain, RecursionError):
        pass
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, default=repr))
    except (TypeError, ValueError):
        return repr(value)


class CellCache(Observer):
    """The step cache for one cell's run: a hook (``before_node``) and an observer (write-behind).

    An :class:`Observer` with one hook, so the run's bus hands it only the ``node_finished`` events
    the cache writes from (a plain callable was handed every event of every run).

    The step cache needs the run it serves, which exists only once the run starts, so it is built at
    the first node. ``template`` groups entries per sweep and repeat: repeats of a setting never
    share outputs, different settings do wherever a node's config, input and upstream are equal.
    """

    def __init__(self, store: Any, template: str) -> None:
        self.store = store
        self.template = template
        self.cache: Any = None

    @property
    def hits(self) -> int:
        return self.cache.hits if self.cache is not None else 0

    def before_node(self, node: Any, ctx: Any) -> Any:
        if self.cache is None:
            from ..state.cache import StepCache

            self.cache = StepCache(self.store, ctx._run, template=self.template)
        return self.cache.before_node(node, ctx)

    def on_node_finished(self, ev: Event) -> None:
        if self.cache is not None:
            self.cache.on_node_finished(ev)


def _usage(records: list[StepRecord]) -> tuple[int, int]:
    tin = tout = 0
    for r in records:
        if r.status != "ran":  # cached steps made no call: they cost nothing this time
            continue
        u = r.usage or {}
        tin += int(u.get("prompt_tokens") or 0)
        tout += int(u.get("completion_tokens") or 0)
    return tin, tout


def record_of(result: RunResult, *, key: str, cache_hits: int, keep_outputs: bool) -> dict[str, Any]:
    tin, tout = _usage(result.records)
    steps = []
    for r in result.records:
        d = {k: getattr(r, k) for k in _STEP_KEYS}
        if r.usage:
            d["usage"] = dict(r.usage)
        steps.append(d)
    status = "ok" if result.stopped_by == "completed" else result.stopped_by
    return {
        "key": key,
        "run_id": result.run_id,
        "status": status,
        "error": result.error,
        "output": jsonable(result.output),
        "outputs": jsonable(result.outputs) if keep_outputs else {},
        "steps": steps,
        "duration": result.duration,
        "started_at": result.started_at,
        "tokens_in": tin,
        "tokens_out": tout,
        "cache_hits": cache_hits,
    }


async def run_cell(
    pipeline: Any,
    input: Any,
    *,
    key: str,
    run_id: str,
    cache_store: Any = None,
    cache_template: str = "",
    keep_outputs: bool = True,
    executor: Any = None,
) -> dict[str, Any]:
    """Run once; the JSON record of the run (``status`` ``failed`` with its ``error`` on failure)."""
    from ..errors import NodeExecutionError

    hooks: list[Any] = []
    observers: list[Any] = []
    cache = None
    if cache_store is not None:
        cache = CellCache(cache_store, cache_template)
        hooks.append(cache)
        observers.append(cache)
    try:
        result = await pipeline.execute(
            input, run_id=run_id, hooks=hooks, observers=observers, executor=executor
        )
    except NodeExecutionError as exc:
        if exc.result is None:
            return failed_record(key, run_id, exc)
        rec = record_of(exc.result, key=key, cache_hits=cache.hits if cache else 0, keep_outputs=keep_outputs)
        rec["status"], rec["error"] = "failed", exc.one_line()
        return rec
    except (
        Exception
    ) as exc:  # bad input, a provider that cannot be built...: the cell fails, the sweep goes on
        return failed_record(key, run_id, exc)
    return record_of(result, key=key, cache_hits=cache.hits if cache else 0, keep_outputs=keep_outputs)


def failed_record(key: str, run_id: str, exc: BaseException) -> dict[str, Any]:
    from ..errors import SibylError

    text = (
        exc.one_line()
        if isinstance(exc, SibylError) and hasattr(exc, "one_line")
        else f"{type(exc).__name__}: {exc}"
    )
    return {
        "key": key, "run_id": run_id, "status": "failed", "error": text, "output": None, "outputs": {},
        "steps": [], "duration": 0.0, "started_at": 0.0, "tokens_in": 0, "tokens_out": 0, "cache_hits": 0,
    }  # fmt: skip


def result_from_record(record: dict[str, Any], *, pipeline: str = "", input: Any = None) -> RunResult:
    """A :class:`RunResult` rebuilt from a stored record (what metrics and diffs read)."""
    outputs = record.get("outputs") or {}
    steps = []
    for s in record.get("steps") or []:
        d = {k: s.get(k) for k in _STEP_KEYS}
        d["output"] = outputs.get(s["node_id"]) if s.get("status") in ("ran", "cached") else None
        if d["output"] is None and s.get("usage"):
            d["output"] = {"usage": s["usage"]}
        d["group"] = d["group"] or ""
        steps.append(StepRecord(**d))
    status = record.get("status", "ok")
    return RunResult(
        run_id=record.get("run_id", ""),
        pipeline=pipeline,
        output=record.get("output"),
        outputs=dict(outputs),
        records=steps,
        stopped_by="completed" if status == "ok" else status,
        started_at=record.get("started_at") or 0.0,
        duration=record.get("duration") or 0.0,
        input=input,
        error=record.get("error"),
    )
