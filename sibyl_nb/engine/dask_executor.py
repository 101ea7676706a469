"""Technique calls as Dask tasks, while the scheduler (retries, fallbacks, events, records) stays here.

Why this shape:

- Only the *call* moves. The scheduler keeps running in the caller's event loop, so conditions,
  retries, fallbacks, checkpoints and widgets behave exactly as with the local executor; a worker
  only ever sees one technique call.
- A live run cannot travel (it holds the event bus, the scheduler, locks). Each call ships a
  :class:`RemoteCall`: plain data (config, input, upstream and results by id, session/state copies,
  iteration, attempt, provider configs) plus the technique function. On the worker a
  :class:`WorkerRun` stand-in rebuilds a real :class:`StepContext` over that data.
- Notebook cells and the user's own files are not importable on a worker, so their functions are
  shipped *by value* with cloudpickle; ``sibyl_nb``'s built-ins and installed packages go by
  reference (a module path). If loading fails, the worker falls back to the technique's name in its
  own registry, so a technique registered on the workers (a worker plugin) still works.
- What a technique does to the run travels back with its result: ``ctx.emit`` events, ``ctx.defer``
  callbacks, and changed ``session``/``state`` keys are replayed in the caller, in that order,
  before the scheduler records the node. A technique's exception is returned as a value (never
  raised inside Dask), so Dask's own ``retries=`` never multiplies the node's ``retry:`` policy.
- Worker loss is Dask's job: tasks on a dead worker are rescheduled on another one (up to the
  scheduler's ``distributed.scheduler.allowed-failures``); ``retries=`` on submit covers task errors
  outside the technique (e.g. a failure to deserialise on one worker).
- Nothing here is stored: cloudpickle is used only on the wire, between this process and workers
  it trusts, like Dask itself.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
import pickle
import sys
import sysconfig
import threading
import traceback
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExecutorError, SibylError, UnknownTechniqueError
from ..techniques.context import StepContext
from ..techniques.registry import TechniqueInfo, get_technique

if TYPE_CHECKING:  # pragma: no cover
    from .run import ContextRun

__all__ = [
    "DaskExecutor",
    "RemoteCall",
    "RemoteOutcome",
    "RemoteTechniqueError",
    "WorkerRun",
    "replay",
    "run_remote",
    "ship_function",
]


class RemoteTechniqueError(SibylError):
    """A technique failed on a worker with an exception that could not travel back as itself."""


# ====================================================================== the portable call
@dataclass(slots=True)
class RemoteCall:
    """Everything a worker needs to run one technique call: plain data plus the function's bytes."""

    technique: str
    node_id: str
    config: Any
    input: Any
    upstream: dict[str, Any]
    results: dict[str, Any]
    iteration: int = 1
    attempt: int = 1
    session: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    workflow_id: str = ""
    aliases: dict[str, str] = field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    fn_blob: bytes | None = None  # cloudpickled technique function; None = look it up by name
    fn_digest: str = ""
    ship_note: str = ""  # why the function was not shipped (for the worker's error message)


@dataclass(slots=True)
class RemoteOutcome:
    """What comes back: the output or the exception, plus the side effects to replay in the caller."""

    ok: bool
    value: Any
    traceback: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    deferred: bytes | None = None
    session: tuple[dict[str, Any], list[str]] | None = None  # (changed keys, removed keys)
    state: tuple[dict[str, Any], list[str]] | None = None
    worker: str = ""


class _Record:
    """Stand-in for a step record: ``${field}`` lookups scan record outputs newest first."""

    __slots__ = ("output",)

    def __init__(self, output: Any) -> None:
        self.output = output


class WorkerRun:
    """The slice of a run a :class:`StepContext` reads, rebuilt on a worker from a :class:`RemoteCall`.

    Like :class:`sibyl_nb.testing.StandaloneRun`, plus what a worker must hand back: emitted events
    and deferred callbacks are collected instead of delivered.
    """

    def __init__(self, call: RemoteCall, providers: dict[str, Any]) -> None:
        self.input = call.input
        self.results = call.results
        self.state = call.state
        self.session = call.session
        self.providers = providers
        self.run_id = call.run_id
        self.workflow_id = call.workflow_id
        self.aliases = call.aliases
        self.trusted = False
        self.deferred: list[Any] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.extras: dict[str, Any] = {}
        self.bus = None

    @property
    def records(self) -> list[_Record]:
        return [_Record(out) for out in self.results.values()]

    def render(self, text: Any, ctx: StepContext) -> Any:
        from .scope import render_runtime

        return render_runtime(text, self, ctx)

    def emit_custom(self, kind: str, node_id: str, iteration: int, data: dict[str, Any]) -> None:
        self.events.append((kind, dict(data)))


# ====================================================================== shipping functions
_SHIP_LOCK = threading.Lock()
_SHIPPED: weakref.WeakKeyDictionary[Any, tuple[Any, bytes | None, str, str]] = weakref.WeakKeyDictionary()


def _installed_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    keys = ("purelib", "platlib", "stdlib", "platstdlib")
    return tuple({paths.get(k, "") for k in keys} - {""})


def _is_installed(module_name: str) -> bool:
    """True for the standard library and site-packages: a cluster is expected to have them."""
    mod = sys.modules.get(module_name)
    path = getattr(mod, "__file__", None) or ""
    if not path:
        return mod is not None  # built-in or namespace module
    return path.startswith(_installed_dirs()) or "site-packages" in path or "dist-packages" in path


def ship_function(fn: Any, token: Any = None) -> tuple[bytes | None, str, str]:
    """``(blob, digest, note)`` for sending ``fn`` to workers; ``blob`` None means "look it up by name".

    ``sibyl_nb`` and installed packages go by reference (a module path: every worker has them);
    ``__main__`` (a notebook cell) and the user's own files, which workers cannot import, by value.
    Cached per function and ``token`` (the run id), so a 1,000-node fan-out pickles its technique
    once, while the next run re-pickles it: by-value pickles capture the globals the function reads,
    and a notebook user who changed one in another cell expects the next run to see it.
    """
    try:
        cached = _SHIPPED.get(fn)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None and cached[0] == token:
        return cached[1:]
    shipped = _ship(fn)
    try:
        _SHIPPED[fn] = (token, *shipped)
    except TypeError:
        pass
    return shipped


def _ship(fn: Any) -> tuple[bytes | None, str, str]:
    import cloudpickle

    module = getattr(fn, "__module__", None) or "__main__"
    ours = module == "sibyl_nb" or module.startswith("sibyl_nb.")  # every worker has the package
    by_value = (
        inspect.isfunction(fn)
        and not ours
        and module != "__main__"
        and module in sys.modules
        and not _is_installed(module)
    )
    try:
        blob = _dumps_by_value(fn, module) if by_value else cloudpickle.dumps(fn)
    except Exception as exc:
        try:
            blob = cloudpickle.dumps(fn)  # by reference: fine if the workers can import it
        except Exception:
            return None, "", f"the function could not be serialised ({type(exc).__name__}: {exc})"
    return blob, hashlib.blake2b(blob, digest_size=16).hexdigest(), ""


def _dumps_by_value(fn: Any, module: str) -> bytes:
    import cloudpickle

    with _SHIP_LOCK:  # cloudpickle's by-value registry is process-global
        already = module in cloudpickle.list_registry_pickle_by_value()
        if not already:
            cloudpickle.register_pickle_by_value(sys.modules[module])
        try:
            data: bytes = cloudpickle.dumps(fn)
            return data
        finally:
            if not already:
                cloudpickle.unregister_pickle_by_value(sys.modules[module])


# ====================================================================== worker side
_LOADED: dict[str, Any] = {}  # digest -> function (per worker process)
_PROVIDERS: dict[str, Any] = {}  # provider config digest -> provider instance
_WORKER_LOCAL = threading.local()


def _load_technique(call: RemoteCall) -> Any:
    problem = call.ship_note
    if call.fn_blob is not None:
        fn = _LOADED.get(call.fn_digest)
        if fn is not None:
            return fn
        try:
            fn = pickle.loads(call.fn_blob)  # bytes this caller just produced: wire data, never stored
        except Exception as exc:
            problem = f"shipped function could not be loaded: {type(exc).__name__}: {exc}"
        else:
            if len(_LOADED) > 512:
                _LOADED.clear()
            _LOADED[call.fn_digest] = fn
            return fn
    try:
        return get_technique(call.technique).fn
    except UnknownTechniqueError:
        raise ExecutorError(
            f"technique '{call.technique}' is not available on Dask worker {_worker_name()}"
            f"{': ' + problem if problem else ''}; define it in an importable module "
            f"installed on the workers, or register it there",
            technique=call.technique,
        ) from None


def _worker_providers(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if not configs:
        return {}
    from ..providers.registry import make_provider

    out = {}
    for name, conf in configs.items():
        key = f"{name}:{sorted(conf.items())!r}"
        provider = _PROVIDERS.get(key)
        if provider is None:
            provider = _PROVIDERS[key] = make_provider(name, dict(conf))
        out[name] = provider
    return out


def _worker_loop() -> asyncio.AbstractEventLoop:
    """One loop per worker thread, reused: async providers keep their connection pools."""
    loop = getattr(_WORKER_LOCAL, "loop", None)
    if loop is None or loop.is_closed():
        loop = _WORKER_LOCAL.loop = asyncio.new_event_loop()
    return loop


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:
        return "(not on a worker)"


def _diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
    changed = {}
    for k, v in after.items():
        if k not in before:
            changed[k] = v
            continue
        try:
            same = bool(before[k] == v)
        except Exception:  # e.g. arrays: treat as changed
            same = False
        if not same:
            changed[k] = v
    removed = [k for k in before if k not in after]
    return (changed, removed) if changed or removed else None


def _snapshot(data: dict[str, Any]) -> dict[str, Any]:
    """A copy to diff against later; in-place changes to a list in ``session`` must show up."""
    if not data:
        return {}
    try:
        return copy.deepcopy(data)
    except Exception:
        return dict(data)


def _portable_exception(exc: BaseException) -> BaseException:
    """``exc`` itself if it survives a pickle round trip, else a :class:`RemoteTechniqueError`."""
    import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        text = str(exc)
        return RemoteTechniqueError(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def run_remote(call: RemoteCall) -> RemoteOutcome:
    """The Dask task: rebuild a context, run the technique, return its output and side effects."""
    session0 = _snapshot(call.session)
    state0 = _snapshot(call.state)
    run: WorkerRun | None = None
    try:
        fn = _load_technique(call)
        run = WorkerRun(call, _worker_providers(call.providers))
        upstream = call.upstream
        ctx = StepContext(
            run,
            call.node_id,
            call.technique,
            call.config,
            lambda: dict(upstream),
            call.iteration,
            call.attempt,
        )
        out = fn(ctx)
        if inspect.isawaitable(out):
            out = _worker_loop().run_until_complete(out)
        outcome = RemoteOutcome(True, out)
    except Exception as exc:
        outcome = RemoteOutcome(False, _portable_exception(exc), traceback.format_exc())
    outcome.worker = _worker_name()
    if run is None:
        return outcome
    outcome.events = run.events
    if run.deferred:
        import cloudpickle

        try:
            outcome.deferred = cloudpickle.dumps(run.deferred)
        except Exception as exc:
            if outcome.ok:
                outcome.ok = False
                outcome.value = ExecutorError(
                    f"a ctx.defer callback cannot be sent back from the Dask worker "
                    f"({type(exc).__name__}: {exc}); capture plain data in it, not live connections",
                    node_id=call.node_id,
                    technique=call.technique,
                )
    outcome.session = _diff(session0, run.session)
    outcome.state = _diff(state0, run.state)
    return outcome


# ====================================================================== caller side
class DaskExecutor:
    """Runs each technique call as a Dask task: ``DaskExecutor(client=...)`` or ``(scheduler_address=...)``.

    With neither, it uses the current default ``distributed`` client, else starts a local cluster
    (``distributed.Client()``); clients it creates are closed by :meth:`close`. Works with a
    synchronous client (its own loop thread: the usual notebook case) and with an asynchronous one
    on the caller's loop (``await pipe.execute(...)``).

    ``retries``: Dask-level retries of a task that errs *outside* the technique. ``ship_results``:
    send every output so far (``ctx.results``) with each call; False sends only the upstream
    outputs, cheaper for very wide graphs whose techniques read only ``ctx.upstream``.
    ``submit_options`` go to ``client.submit`` (``resources=``, ``workers=``, ``priority=``...).
    """

    name = "dask"

    def __init__(
        self,
        client: Any = None,
        scheduler_address: str | None = None,
        *,
        retries: int = 2,
        ship_results: bool = True,
        connect_timeout: float = 10.0,
        **submit_options: Any,
    ) -> None:
        if client is not None and scheduler_address is not None:
            raise ExecutorError("DaskExecutor: pass client= or scheduler_address=, not both")
        self._client = client
        self._given = client is not None
        self.scheduler_address = scheduler_address
        self.retries = int(retries)
        self.ship_results = bool(ship_results)
        self.connect_timeout = connect_timeout
        self.submit_options = submit_options
        self._owns_client = False
        self._lock = threading.Lock()
        self._pending_cancels: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ client
    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (connected on first use)."""
        return self._connect()

    def _connect(self) -> Any:
        with self._lock:
            if self._client is not None:
                if self._client.status not in ("closing", "closed"):
                    return self._client
                if self._given:  # never swap the user's cluster for another one behind their back
                    raise ExecutorError(
                        "the distributed.Client given to DaskExecutor is closed; "
                        "pass an open one (pipe.executor = DaskExecutor(client=...))"
                    )
                self._client, self._owns_client = None, False  # ours closed under us: reconnect
            try:
                from distributed import Client, default_client
            except ImportError:  # pragma: no cover - the factory checks first
                raise ExecutorError("the Dask executor needs dask: pip install sibyl_nb[dask]") from None
            if self.scheduler_address is None:
                try:
                    self._client = default_client()  # type: ignore[no-untyped-call]  # distributed is unannotated
                    return self._client
                except ValueError:
                    pass
            try:
                self._client = Client(  # type: ignore[no-untyped-call]  # distributed is unannotated
                    self.scheduler_address, set_as_default=False, timeout=self.connect_timeout
                )
            except Exception as exc:
                where = f"at {self.scheduler_address}" if self.scheduler_address else "(local cluster)"
                raise ExecutorError(
                    f"cannot connect to the Dask scheduler {where}: {type(exc).__name__}: {exc}"
                ) from None
            self._owns_client = True
            return self._client

    def close(self) -> None:
        """Close the client (and the local cluster) if this executor created it."""
        with self._lock:
            client, self._client = self._client, None
            owned, self._owns_client = self._owns_client, False
        if client is not None and owned:
            client.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = (
            self.scheduler_address
            or (getattr(self._client, "scheduler", None) and getattr(self._client.scheduler, "address", None))
            or "default"
        )
        return f"<DaskExecutor {where}>"

    # ------------------------------------------------------------------ the seam
    async def call(self, info: TechniqueInfo, ctx: StepContext, *, offload: bool) -> Any:
        """Ship the call, await the task from this loop, replay its side effects, return its output."""
        client = self._client
        if client is None or client.status in ("closing", "closed"):
            client = await asyncio.to_thread(self._connect)
        remote = self.portable(info, ctx)
        key = f"{info.name}-{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        client_loop = client.loop.asyncio_loop
        if client_loop is loop:  # an asynchronous client on this very loop
            outcome = await self._on_client_loop(client, remote, key)
        else:  # a synchronous client (own loop thread) or one on another loop
            cf = asyncio.run_coroutine_threadsafe(self._on_client_loop(client, remote, key), client_loop)
            try:
                outcome = await asyncio.wrap_future(cf)
            except asyncio.CancelledError:
                cf.cancel()
                raise
        return replay(outcome, ctx)

    async def _on_client_loop(self, client: Any, remote: RemoteCall, key: str) -> RemoteOutcome:
        future = client.submit(
            run_remote, remote, key=key, pure=False, retries=self.retries, **self.submit_options
        )
        try:
            outcome: RemoteOutcome = await future
            return outcome
        except asyncio.CancelledError:
            # a timeout, or a sibling failed: stop the task instead of letting it run on
            task = asyncio.ensure_future(client.cancel([future], asynchronous=True))
            self._pending_cancels.add(task)
            task.add_done_callback(self._pending_cancels.discard)
            raise

    def portable(self, info: TechniqueInfo, ctx: StepContext) -> RemoteCall:
        """The :class:`RemoteCall` for ``ctx``: copies, so later changes in the run don't leak in."""
        run = ctx._run
        blob, digest, note = ship_function(info.fn, getattr(run, "run_id", None))
        upstream = _declaration_order(ctx.upstream, run)
        results = dict(run.results) if self.ship_results else dict(upstream)
        pipeline = getattr(run, "pipeline", None)
        document = getattr(pipeline, "document", None)
        providers = dict(getattr(document, "providers", None) or {})
        return RemoteCall(
            technique=info.name,
            node_id=ctx.node_id,
            config=ctx.config,
            input=ctx.input,
            upstream=upstream,
            results=results,
            iteration=ctx.iteration,
            attempt=ctx.attempt,
            session=dict(run.session),
            state=dict(run.state),
            run_id=getattr(run, "run_id", ""),
            workflow_id=getattr(run, "workflow_id", ""),
            aliases=dict(getattr(run, "aliases", None) or {}),
            providers=providers,
            fn_blob=blob,
            fn_digest=digest,
            ship_note=note,
        )


def _declaration_order(upstream: dict[str, Any], run: ContextRun) -> dict[str, Any]:
    """Upstream outputs in node declaration order, not completion order: which worker finished first
    is noise, and a join that reads its inputs in order must give the same answer every run."""
    if len(upstream) < 2:
        return upstream
    nodes = getattr(getattr(getattr(run, "scheduler", None), "graph", None), "nodes", None)
    if not nodes:
        return upstream
    last = 1 << 30
    return dict(sorted(upstream.items(), key=lambda kv: getattr(nodes.get(kv[0]), "index", last)))


def replay(outcome: RemoteOutcome, ctx: StepContext) -> Any:
    """Apply a worker's side effects to the live run (events, deferred callbacks, session/state
    changes), then return the output or raise the technique's exception."""
    for kind, data in outcome.events:
        ctx.emit(kind, **data)
    if outcome.deferred is not None:
        for fn in pickle.loads(outcome.deferred):  # produced by our own worker for this call
            ctx.defer(fn)
    run = ctx._run
    for target, diff in ((run.session, outcome.session), (run.state, outcome.state)):
        if diff is not None:
            changed, removed = diff
            target.update(changed)
            for k in removed:
                target.pop(k, None)
    if outcome.ok:
        return outcome.value
    exc = outcome.value
    if outcome.traceback and hasattr(exc, "add_note"):
        exc.add_note(f"raised on Dask worker {outcome.worker}:\n{outcome.traceback.rstrip()}")
    raise exc
