"""Time travel on the checkpoint chain: list every checkpoint of a workflow, fork a new workflow from one.

A workflow's checkpoints are the deltas of its current generation (see :mod:`.checkpoint`); the
state at checkpoint ``step`` is the fold of deltas ``0..step``. A fork:

1. folds the chain up to the chosen step (or the one before, see :func:`plan_fork`),
2. applies ``updates`` (a node id -> that node's new output; ``state`` -> merged into the run state),
3. writes the result as the *first* delta of a new workflow (so the fork resumes, is listed and
   forks again like any other workflow, with no pointer into the original), and
4. runs on from there: an edited node completes with its new output (status ``edited``), and what
   depends on it runs again.

The original chain is only read, never written. An edit that could not flow downstream (the node's
successors already ran on the old output) is refused, naming the checkpoint to fork from instead.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointNotFoundError, ConfigError
from .checkpoint import CheckpointStore, fold

__all__ = ["CheckpointInfo", "Fork", "history", "plan_fork", "STATE_KEY"]

_DONE = ("ran", "cached", "edited")
STATE_KEY = "state"  # the ``updates`` key that edits run state (a node of that id wins)


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint of a workflow: pass it (or its ``step``) as ``resume(..., checkpoint=)``."""

    workflow_id: str
    step: int  # 0-based position in the chain
    node_id: str | None  # the node whose completion wrote it (the last one, when several did)
    iteration: int
    time: float  # time.time() when it was written
    nodes: tuple[str, ...] = ()  # every node with a step record in it (ran, cached, skipped...)
    frontier: tuple[str, ...] = ()  # what a resume from here runs first

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "step": self.step,
            "node_id": self.node_id,
            "iteration": self.iteration,
            "time": self.time,
            "nodes": list(self.nodes),
            "frontier": list(self.frontier),
        }


def _chain(store: CheckpointStore, workflow_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta = store.meta(workflow_id)
    if meta is None:
        raise CheckpointNotFoundError(
            f"no checkpoint for workflow '{workflow_id}' in {store.url}: was the run started with "
            f"checkpointing enabled and the same storage settings?"
        )
    deltas = []
    for key in store._delta_keys(workflow_id, meta["gen"]):
        d = store.store.kv_get(key)
        if d is not None:
            deltas.append(d)
    return meta, deltas


def history(store: CheckpointStore, workflow_id: str) -> list[CheckpointInfo]:
    """Every checkpoint of ``workflow_id``, oldest first."""
    _, deltas = _chain(store, workflow_id)
    out = []
    for step, d in enumerate(deltas):
        recs = d.get("records") or []
        done = [r for r in recs if r.get("status") in (*_DONE, "failed", "interrupted")]
        last = done[-1] if done else (recs[-1] if recs else None)
        frontier = tuple(nid for nid, _ in (d.get("sched") or {}).get("frontier", []))
        out.append(
            CheckpointInfo(
                workflow_id=workflow_id,
                step=step,
                node_id=last.get("node_id") if last else None,
                iteration=int(last.get("iteration", 1)) if last else 1,
                time=float(d.get("t", 0.0)),
                nodes=tuple(dict.fromkeys(r.get("node_id") for r in recs)),
                frontier=frontier,
            )
        )
    return out


def _step_of(checkpoint: Any, n: int, workflow_id: str) -> int:
    if isinstance(checkpoint, CheckpointInfo):
        if checkpoint.workflow_id != workflow_id:
            raise CheckpointNotFoundError(
                f"checkpoint {checkpoint.step} belongs to workflow '{checkpoint.workflow_id}', "
                f"not '{workflow_id}'"
            )
        step = checkpoint.step
    elif isinstance(checkpoint, int) and not isinstance(checkpoint, bool):
        step = checkpoint + n if checkpoint < 0 else checkpoint
    else:
        raise ConfigError(
            f"checkpoint must be a step number or an entry of history(), got {type(checkpoint).__name__}"
        )
    if not 0 <= step < n:
        raise CheckpointNotFoundError(
            f"workflow '{workflow_id}' has checkpoints 0..{n - 1}, not {checkpoint}"
        )
    return step


@dataclass
class Fork:
    """What :func:`plan_fork` decided: run ``restore`` (None: from the start) under ``workflow_id``,
    completing each node of ``overrides`` with the given output instead of running it."""

    workflow_id: str
    source: str
    step: int
    restore: dict[str, Any] | None
    overrides: dict[str, Any]


def plan_fork(
    store: CheckpointStore,
    graph: Any,
    workflow_id: str,
    checkpoint: Any,
    updates: Mapping[str, Any] | None,
    *,
    fork_id: str | None = None,
) -> Fork:
    """Write a new workflow that starts at ``checkpoint`` of ``workflow_id`` with ``updates`` applied.

    A node update acts as if that node had produced the new output (LangGraph's ``as_node``): its
    out-edge conditions are evaluated on it and everything downstream runs on it. So for a node the
    checkpoint's own completion wrote, the fork starts from the checkpoint before, where that node
    was about to finish; for a node in the checkpoint's frontier (not run yet), the fork starts at
    the checkpoint and the node does not run. The caller runs the fork with ``execute(restore=...)``.
    """
    meta, deltas = _chain(store, workflow_id)
    step = _step_of(checkpoint, len(deltas), workflow_id)
    updates = dict(updates or {})
    nodes = graph.nodes
    state_patch = updates.pop(STATE_KEY, None) if STATE_KEY not in nodes else None
    if state_patch is not None and not isinstance(state_patch, Mapping):
        raise ConfigError(f"updates['{STATE_KEY}'] must be a mapping, got {type(state_patch).__name__}")
    at_step = fold(copy.deepcopy(deltas[: step + 1]))
    frontier = {nid for nid, _ in at_step["scheduler"]["frontier"]}
    finished = {r["node_id"] for r in at_step["records"] if r.get("status") in _DONE}
    base = step
    overrides: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    bases: dict[str, int] = {}
    for key, value in updates.items():
        if key not in nodes:
            from ..document.schema import did_you_mean

            raise ConfigError(
                f"updates: '{key}' is not a node of this pipeline{did_you_mean(key, list(nodes))} "
                f"(keys are node ids, or '{STATE_KEY}' for run state)"
            )
        wrote = _step_that_finished(deltas[: step + 1], key)
        where = f"fork of '{workflow_id}' at checkpoint {step}"
        if key in frontier:
            bases[key] = step
            overrides[key] = value
        elif wrote == step:
            bases[key] = step - 1
            overrides[key] = value
        elif key in finished:
            touched = sorted(n for n in _descendants(graph, key) if _has_record(at_step["records"], n))
            if touched or any(e.condition is not None or e.when is not None for e in nodes[key].out_edges):
                why = (
                    f"{', '.join(repr(n) for n in touched)} already ran (or was skipped) on its output"
                    if touched
                    else "its out-edges' conditions were already decided on its output"
                )
                raise ConfigError(
                    f"{where}: cannot edit '{key}': {why}; fork from checkpoint {wrote} (written when "
                    f"'{key}' finished) so the edit flows downstream"
                )
            bases[key] = step
            plain[key] = value
        else:
            raise ConfigError(
                f"{where}: node '{key}' has neither run nor is about to run there, so there is no output "
                f"to edit (history() shows each checkpoint's node and frontier)"
            )
    if len(set(bases.values())) > 1:
        detail = ", ".join(f"'{k}' at {v}" for k, v in bases.items())
        raise ConfigError(
            f"fork of '{workflow_id}': the edits need different starting checkpoints ({detail}); "
            f"fork once per edit"
        )
    if bases:
        base = next(iter(bases.values()))
    new_id = fork_id or f"{workflow_id}~{step}-{uuid.uuid4().hex[:6]}"
    if not isinstance(new_id, str) or not new_id:
        raise ConfigError(f"fork_id must be a non-empty string, got {new_id!r}")
    if store.meta(new_id) is not None:
        raise ConfigError(f"workflow '{new_id}' already exists in {store.url}: pick another fork_id")
    if base < 0:  # the edited node was the first to finish: the fork starts from the input
        if state_patch:
            raise ConfigError(
                f"fork of '{workflow_id}' at checkpoint {step}: state cannot be edited before the first step"
            )
        return Fork(new_id, workflow_id, step, None, overrides)
    restore = at_step if base == step else fold(copy.deepcopy(deltas[: base + 1]))
    for key, value in plain.items():
        restore["results"][key] = value
        for rec in reversed(restore["records"]):
            if rec["node_id"] == key and rec.get("status") in _DONE:
                rec["output"] = value
                rec["reason"] = f"output edited in a fork of '{workflow_id}' at checkpoint {step}"
                break
    if state_patch:
        restore["state"] = {**restore["state"], **state_patch}
    gen = uuid.uuid4().hex[:12]
    now = time.time()
    store.begin(
        new_id,
        {
            "workflow_id": new_id,
            "pipeline": meta.get("pipeline"),
            "run_id": gen,
            "gen": gen,
            "input": meta.get("input"),
            "status": "forked",
            "started_at": now,
            "updated_at": now,
            "forked_from": {"workflow_id": workflow_id, "step": step, "updates": sorted(updates)},
        },
    )
    first = {
        "seq": 0,
        "t": now,
        "records": restore["records"],
        "results": restore["results"],
        "passthrough": restore["passthrough"],
        "state": restore["state"],
        "session": restore["session"],
        "retries": restore["retries"],
        "last": restore["last_completed"],
        "allocations": restore["allocations"],
        "sched": restore["scheduler"],
    }
    store.write(new_id, gen, 0, first)
    return Fork(new_id, workflow_id, step, fold([copy.deepcopy(first)]), overrides)


def _has_record(records: list[dict[str, Any]], node_id: str) -> bool:
    return any(r.get("node_id") == node_id for r in records)


def _descendants(graph: Any, node_id: str) -> set[str]:
    """Nodes reachable from ``node_id`` along forward edges (back edges start a new iteration)."""
    nodes = graph.nodes
    seen: set[str] = set()
    todo = [node_id]
    while todo:
        for e in nodes[todo.pop()].out_edges:
            if not e.back and e.dst not in seen:
                seen.add(e.dst)
                todo.append(e.dst)
    return seen


def _step_that_finished(deltas: list[dict[str, Any]], node_id: str) -> int | None:
    """The last checkpoint (in ``deltas``) holding a finished record of ``node_id``."""
    for i in range(len(deltas) - 1, -1, -1):
        for r in deltas[i].get("records") or ():
            if r.get("node_id") == node_id and r.get("status") in _DONE:
                return i
    return None


class ForkOverrides:
    """A run hook + observer: the fork's edited nodes complete with their new output, once each,
    without running; their step record says so."""

    def __init__(self, fork: Fork) -> None:
        self.pending = dict(fork.overrides)
        self.edited: set[str] = set()
        self.note = f"output edited in a fork of '{fork.source}' at checkpoint {fork.step}"
        self.run: Any = None

    def before_node(self, node: Any, ctx: Any) -> Any:
        from ..document.expressions import MISSING

        if node.id in self.pending:
            self.run = ctx._run
            self.edited.add(node.id)
            return self.pending.pop(node.id)
        return MISSING

    def __call__(self, ev: Any) -> None:
        if ev.kind == "node_cached" and ev.node_id in self.edited and self.run is not None:
            self.edited.discard(ev.node_id)
            for rec in reversed(self.run.records):
                if rec.node_id == ev.node_id:
                    rec.status = "edited"
                    rec.reason = self.note
                    break
