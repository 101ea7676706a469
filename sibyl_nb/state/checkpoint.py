"""Checkpoints: a run's progress written durably as it goes, so ``resume`` can finish a run that died.

Layout (keys in the checkpoint store's JSON key-value facet):

* ``cpm:<workflow>``: meta (pipeline, input, run id, *generation*, status, times). Written when a run
  starts and when it ends.
* ``cpd:<workflow>:<generation>:<seq>``: one **delta** per checkpoint: the step records and outputs
  produced since the previous one, the scheduler counters of just the nodes those steps touched, the
  current frontier, and state/session when they changed.

Writing deltas keeps a checkpoint's cost flat (one small put per step, whatever the run's length);
a full snapshot per step would grow with the run and the graph (LangGraph's per-step cost grows
this way). Each put is atomic on every backend, so a crash leaves a valid prefix of the chain.
A fresh run with an existing workflow id starts a new generation; ``prune`` removes old ones.

Deltas are written through :class:`~sibyl_nb.state.fastkv.KVWriter` (on SQLite: one raw autocommit
upsert on a connection held for the run, into the store's own table; elsewhere ``kv_put``).

Durability: diskcache and SQLite commit in WAL mode with ``synchronous=NORMAL`` (survives a killed
process, as the crash test checks); PostgreSQL and Redis follow their server's settings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ..engine.events import Event, Observer
from ..errors import SibylError, StoreError
from ..stores.base import Store
from .fastkv import KVWriter
from .settings import open_kind_store

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import RunState

__all__ = ["Checkpoint", "CheckpointStore", "CheckpointObserver", "open_checkpoint_store"]

log = logging.getLogger("sibyl_nb.checkpoint")

_META = "cpm:"
_DELTA = "cpd:"


def _q(workflow_id: str) -> str:
    if not isinstance(workflow_id, str) or not workflow_id:
        raise StoreError(f"workflow_id must be a non-empty string, got {workflow_id!r}")
    return quote(workflow_id, safe="-_.~@+=")


def _text(value: Any) -> str:
    """A change detector for state/session (not what is stored: the store writes strict JSON)."""
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except TypeError:  # keys of mixed types cannot be sorted
        return json.dumps(value, default=str)


@dataclass
class Checkpoint:
    """What a store holds for one workflow; ``restore`` is what ``Pipeline.execute(restore=)`` takes."""

    workflow_id: str
    pipeline: str
    run_id: str
    status: str  # running | finished | failed
    input: Any = None
    steps: int = 0  # deltas in the current generation
    started_at: float = 0.0
    updated_at: float = 0.0
    error: str | None = None
    restore: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> list[str]:
        """Node ids that finished (ran or cached), in order, repeats for loop iterations."""
        done = ("ran", "cached", "edited")
        return [r["node_id"] for r in self.restore.get("records", []) if r.get("status") in done]

    @property
    def frontier(self) -> list[str]:
        """Node ids a resume starts with (ready or running when the checkpoint was written)."""
        return [nid for nid, _ in self.restore.get("scheduler", {}).get("frontier", [])]


class CheckpointStore:
    """Checkpoint chains on one :class:`~sibyl_nb.stores.base.Store` (its key-value facet)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def url(self) -> str:
        return self.store.url

    # ---------------------------------------------------------------- writing
    def begin(self, workflow_id: str, meta: Mapping[str, Any]) -> None:
        self.store.kv_put(_META + _q(workflow_id), dict(meta))

    @staticmethod
    def delta_prefix(workflow_id: str, gen: str) -> str:
        """Keys of one generation's deltas are this prefix plus a 10-digit sequence number."""
        return f"{_DELTA}{_q(workflow_id)}:{gen}:"

    def write(self, workflow_id: str, gen: str, seq: int, delta: Mapping[str, Any]) -> None:
        self.store.kv_put(f"{self.delta_prefix(workflow_id, gen)}{seq:010d}", delta)

    def mark(self, workflow_id: str, **fields: Any) -> None:
        """Atomically update meta fields (status, error, times)."""
        self.store.kv_merge(_META + _q(workflow_id), fields)

    # ---------------------------------------------------------------- reading
    def meta(self, workflow_id: str) -> dict[str, Any] | None:
        return self.store.kv_get(_META + _q(workflow_id))

    def _delta_keys(self, workflow_id: str, gen: str) -> list[str]:
        prefix = f"{_DELTA}{_q(workflow_id)}:{gen}:"
        return sorted(k for k in self.store.kv_keys(prefix) if k[len(prefix) :].isdigit())

    def last_seq(self, workflow_id: str, gen: str) -> int:
        keys = self._delta_keys(workflow_id, gen)
        return int(keys[-1].rsplit(":", 1)[1]) if keys else -1

    def load(self, workflow_id: str) -> Checkpoint | None:
        """The workflow's latest checkpoint folded into one restore dict, or None."""
        meta = self.meta(workflow_id)
        if meta is None:
            return None
        deltas = [
            d
            for d in (self.store.kv_get(k) for k in self._delta_keys(workflow_id, meta["gen"]))
            if d is not None
        ]
        return Checkpoint(
            workflow_id=workflow_id,
            pipeline=meta.get("pipeline", ""),
            run_id=meta.get("run_id", ""),
            status=meta.get("status", "running"),
            input=meta.get("input"),
            steps=len(deltas),
            started_at=meta.get("started_at", 0.0),
            updated_at=max([meta.get("updated_at", 0.0)] + [d.get("t", 0.0) for d in deltas]),
            error=meta.get("error"),
            restore=fold(deltas),
        )

    # ---------------------------------------------------------------- listing & pruning
    def _scan(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        metas = {}
        for key in self.store.kv_keys(_META):
            meta = self.store.kv_get(key)
            if meta is not None:
                metas[unquote(key[len(_META) :])] = meta
        deltas: dict[str, list[str]] = {}
        for key in self.store.kv_keys(_DELTA):
            wf = unquote(key[len(_DELTA) :].rsplit(":", 2)[0])
            deltas.setdefault(wf, []).append(key)
        return metas, deltas

    def list(self) -> list[dict[str, Any]]:
        """One row per workflow, newest first: id, pipeline, status, steps, run id, times, error."""
        metas, deltas = self._scan()
        rows = []
        for wf, meta in metas.items():
            gen = f"{_DELTA}{_q(wf)}:{meta.get('gen')}:"
            steps = sum(1 for k in deltas.get(wf, ()) if k.startswith(gen))
            stale = len(deltas.get(wf, ())) - steps
            rows.append(
                {
                    "workflow_id": wf,
                    "pipeline": meta.get("pipeline"),
                    "status": meta.get("status"),
                    "steps": steps,
                    "stale_entries": stale,
                    "run_id": meta.get("run_id"),
                    "started_at": meta.get("started_at"),
                    "updated_at": meta.get("updated_at"),
                    "error": meta.get("error"),
                }
            )
        rows.sort(key=lambda r: r["updated_at"] or 0.0, reverse=True)
        return rows

    def delete(self, workflow_id: str) -> int:
        """Remove a workflow's checkpoints (every generation); returns how many entries went."""
        q = _q(workflow_id)
        keys = [k for k in self.store.kv_keys(f"{_DELTA}{q}:") if k[len(_DELTA) + len(q) :].count(":") == 2]
        n = sum(self.store.kv_delete(k) for k in keys)
        return n + int(self.store.kv_delete(_META + q))

    def prune(
        self,
        *,
        keep: int | None = None,
        older_than: float | timedelta | None = None,
        status: str | None = None,
        pipeline: str | None = None,
    ) -> dict[str, int]:
        """Delete whole workflows' checkpoints, and always the leftovers of superseded generations.

        ``keep``: keep the N most recently updated workflows (of those matching ``status`` /
        ``pipeline``); ``older_than``: delete workflows not updated for that long (seconds or a
        ``timedelta``). Returns ``{"workflows": removed, "entries": keys deleted}``.
        """
        if isinstance(older_than, timedelta):
            older_than = older_than.total_seconds()
        metas, deltas = self._scan()
        rows = sorted(metas.items(), key=lambda kv: kv[1].get("updated_at") or 0.0, reverse=True)
        rows = [
            (wf, m)
            for wf, m in rows
            if (status is None or m.get("status") == status)
            and (pipeline is None or m.get("pipeline") == pipeline)
        ]
        doomed: set[str] = set()
        if keep is not None:
            doomed.update(wf for wf, _ in rows[max(int(keep), 0) :])
        if older_than is not None:
            cutoff = time.time() - float(older_than)
            doomed.update(wf for wf, m in rows if (m.get("updated_at") or 0.0) < cutoff)
        entries = 0
        for wf in doomed:
            for key in deltas.get(wf, ()):
                entries += int(self.store.kv_delete(key))
            entries += int(self.store.kv_delete(_META + _q(wf)))
        for wf, keys in deltas.items():  # superseded generations and orphans
            if wf in doomed:
                continue
            meta = metas.get(wf)
            live = f"{_DELTA}{_q(wf)}:{meta.get('gen')}:" if meta else None
            for key in keys:
                if live is None or not key.startswith(live):
                    entries += int(self.store.kv_delete(key))
        return {"workflows": len(doomed), "entries": entries}

    def __repr__(self) -> str:
        return f"<CheckpointStore {self.store!r}>"


def fold(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold a delta chain (oldest first) into a ``restore`` dict for ``Pipeline.execute``."""
    results: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    passthrough: dict[str, list[str]] = {}
    state: dict[str, Any] = {}
    session: dict[str, Any] = {}
    retries = 0
    last = None
    allocations: list[dict[str, Any]] = []
    sched: dict[str, Any] = {
        "pending": {},
        "need": {},
        "fired": {},
        "runs": {},
        "acts": {},
        "last": {},
        "frontier": [],
        "stopped_by": "completed",
    }
    for d in deltas:
        dres = d.get("results") or {}
        results.update(dres)
        for rec in d.get("records") or ():
            if rec.pop("same", False):
                rec["output"] = dres.get(rec["node_id"])
            records.append(rec)
        passthrough.update(d.get("passthrough") or {})
        if "state" in d:
            state = d["state"]
        if "session" in d:
            session = d["session"]
        retries = d.get("retries", retries)
        last = d.get("last", last)
        allocations.extend(d.get("allocations") or ())
        s = d.get("sched")
        if s:
            for key in ("pending", "need", "fired", "runs", "acts", "last"):
                sched[key].update(s.get(key) or {})
            if "loops" in s:
                sched["loops"] = s["loops"]
            sched["frontier"] = s.get("frontier") or []
            sched["stopped_by"] = s.get("stopped_by", "completed")
    return {
        "results": results,
        "records": records,
        "passthrough": passthrough,
        "state": state,
        "session": session,
        "retries": retries,
        "last_completed": last,
        "allocations": allocations,
        "scheduler": sched,
    }


class CheckpointObserver(Observer):
    """Subscribes to one run's events; writes a delta every ``frequency`` completed steps.

    It writes from inside the event callback (synchronously): a step counts as checkpointed before
    the scheduler starts anything that depends on it, the same guarantee as LangGraph's
    ``durability="sync"``. Steps of a dynamic subgraph are checkpointed with their dynamic node.
    """

    def __init__(
        self, store: CheckpointStore, run: RunState, *, frequency: int = 1, keep: int | None = None
    ) -> None:
        self.store = store
        self.keep = keep
        self.run = run
        self.frequency = max(int(frequency or 1), 1)
        self.graph = run.pipeline.spec.graph
        self.workflow_id = run.workflow_id
        self.gen = run.run_id
        self.seq = 0
        self._since = 0
        self._n_records = 0
        self._n_alloc = 0
        self._state_json = "{}"
        self._session_json = "{}"
        self._disabled = False
        self._writer = KVWriter(store.store)
        self._prefix = store.delta_prefix(self.workflow_id, self.gen)

    # ---------------------------------------------------------------- typed hooks
    def _guarded(self, write: Any, ev: Event) -> None:
        """A store failure turns checkpointing off for this run; it never breaks the run."""
        if self._disabled:
            return
        try:
            write(ev)
        except SibylError as exc:
            self._disabled = True
            self._writer.close()
            log.warning(
                "checkpointing of workflow %r is off for the rest of this run: %s", self.workflow_id, exc
            )

    def on_node_finished(self, ev: Event) -> None:
        self._guarded(self._step_done, ev)

    def on_node_cached(self, ev: Event) -> None:
        self._guarded(self._step_done, ev)

    def on_run_started(self, ev: Event) -> None:
        self._guarded(self._start, ev)

    def on_run_finished(self, ev: Event) -> None:
        self._guarded(self._finished, ev)

    def on_run_failed(self, ev: Event) -> None:
        self._guarded(self._failed, ev)

    def _step_done(self, ev: Event) -> None:
        if ev.node_id not in self.graph.nodes or ev.data.get("fallback_for"):
            return  # a fallback finishing is not its node finishing; subgraph nodes ride along
        self._since += 1
        if self._since >= self.frequency:
            self._write()

    def _finished(self, ev: Event) -> None:
        if len(self.run.records) > self._n_records or self._since:
            self._write()
        self._writer.close()
        status = "interrupted" if ev.data.get("stopped_by") == "interrupted" else "finished"
        self.store.mark(self.workflow_id, status=status, updated_at=time.time(), error=None)
        if self.keep is not None:
            self.store.prune(keep=self.keep, pipeline=self.run.pipeline.name)

    def _failed(self, ev: Event) -> None:
        self._writer.close()
        # the last delta still has the failed node in its frontier: a resume retries it
        self.store.mark(self.workflow_id, status="failed", updated_at=time.time(), error=ev.data.get("error"))

    def _start(self, ev: Event) -> None:
        run = self.run
        if ev.data.get("resumed"):
            meta = self.store.meta(self.workflow_id)
            if meta is not None:
                self.gen = meta["gen"]
                self._prefix = self.store.delta_prefix(self.workflow_id, self.gen)
                self.seq = self.store.last_seq(self.workflow_id, self.gen) + 1
                self._n_records = len(run.records)
                self._n_alloc = len(run.allocations)
                self._state_json = _text(run.state)
                self._session_json = _text(run.session)
                self.store.mark(self.workflow_id, status="running", updated_at=time.time(), run_id=run.run_id)
                return
        now = time.time()
        self.store.begin(
            self.workflow_id,
            {
                "workflow_id": self.workflow_id,
                "pipeline": run.pipeline.name,
                "run_id": run.run_id,
                "gen": self.gen,
                "input": run.input,
                "status": "running",
                "started_at": now,
                "updated_at": now,
            },
        )

    # ---------------------------------------------------------------- one delta
    def _write(self) -> None:
        run = self.run
        new = run.records[self._n_records :]
        results = run.results
        dirty: dict[str, None] = {}
        recs = []
        for r in new:
            nid = r.node_id
            dirty[nid] = None
            if r.fallback_for:
                dirty[r.fallback_for] = None
            d = r.to_dict()
            del d["duration"]
            if r.output is not None and r.output is results.get(nid):
                del d["output"]
                d["same"] = True
            recs.append(d)
        nodes = self.graph.nodes
        touched: dict[str, None] = {}
        for nid in dirty:
            node = nodes.get(nid)
            if node is None:
                continue
            touched[nid] = None
            for e in node.out_edges:
                if e.back:
                    touched.update(dict.fromkeys(self.graph.region(e.dst)[0]))
                else:
                    touched[e.dst] = None
        delta: dict[str, Any] = {
            "seq": self.seq,
            "t": time.time(),
            "records": recs,
            "results": {nid: results[nid] for nid in dirty if nid in results},
            "retries": run.retries,
            "last": run.last_completed,
        }
        if len(run.allocations) > self._n_alloc:
            delta["allocations"] = run.allocations[self._n_alloc :]
            self._n_alloc = len(run.allocations)
        if run.passthrough:
            pt = {nid: list(run.passthrough[nid]) for nid in dirty if nid in run.passthrough}
            if pt:
                delta["passthrough"] = pt
        if run.state:
            text = _text(run.state)
            if text != self._state_json:
                delta["state"] = run.state
                self._state_json = text
        if run.session:
            text = _text(run.session)
            if text != self._session_json:
                delta["session"] = run.session
                self._session_json = text
        scheduler = run.scheduler
        if scheduler is not None:
            delta["sched"] = scheduler.snapshot(only=touched)
        self._writer.put(f"{self._prefix}{self.seq:010d}", delta)
        self.seq += 1
        self._since = 0
        self._n_records = len(run.records)


def open_checkpoint_store(config: Mapping[str, Any] | None = None) -> CheckpointStore:
    """A :class:`CheckpointStore` from ``checkpointing`` settings (``storage``: diskcache (default) |
    database | redis | memory; ``database_url``, ``redis_url``, ``path``)."""
    return CheckpointStore(open_kind_store("checkpoints", config))
