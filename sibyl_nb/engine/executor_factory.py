"""``executor:`` in YAML (or ``pipe.executor`` / ``execute(executor=...)``) -> an executor object.

Forms::

    executor: local                      # the default: the caller's asyncio loop
    executor: dask                       # the current distributed client, else a local cluster
    executor: tcp://10.0.0.5:8786        # dask at that scheduler address
    executor:
      kind: dask
      scheduler_address: ${DASK_SCHEDULER_ADDRESS}   # environment templates only
      retries: 2                         # Dask-level retries of errors outside the technique
      ship_results: true                 # send ctx.results (false: only the upstream outputs)
      connect_timeout: 10
      resources: {GPU: 1}                # passed to client.submit, like workers: and priority:

A scheduler address *written in a document* needs ``trust_code=True``: the client unpickles what
the scheduler sends back, so a hostile scheduler runs code in this process. An address given from
Python (``execute(executor="tcp://...")``, ``pipe.executor = ...``) or read from the environment
(``${DASK_SCHEDULER_ADDRESS}``, the user's own setting) is the user's choice and needs no trust.

From Python, an executor object (anything with ``async call(info, ctx, offload=)``) or a
``distributed.Client`` is accepted too. Why a module of its own: ``import sibyl_nb`` and loading a
pipeline must never import dask; the shape is checked at load time (errors name the YAML line),
the cluster is contacted only when the pipeline runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from ..errors import ExecutorError, SibylError, SpecError, TrustError
from .executors import LocalExecutor

__all__ = [
    "make_executor",
    "check_executor_spec",
    "document_address",
    "resolve_executor",
    "EXECUTOR_KINDS",
    "EXECUTOR_KEYS",
    "DASK_MISSING",
]

EXECUTOR_KINDS = ("local", "dask")
EXECUTOR_KEYS = (
    "kind",
    "scheduler_address",
    "address",
    "retries",
    "ship_results",
    "connect_timeout",
    "resources",
    "workers",
    "priority",
)
ADDRESS_SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")
DASK_MISSING = "the Dask executor needs the optional dask extra: pip install sibyl_nb[dask]"
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_SHARED: dict[tuple[Any, ...], Any] = {}
_SHARED_LOCK = threading.Lock()


def _problem(value: Any) -> str | None:
    """What is wrong with an ``executor:`` value, or None."""
    if value is None or hasattr(value, "call"):
        return None
    if isinstance(value, str):
        if value in EXECUTOR_KINDS or value.startswith(ADDRESS_SCHEMES) or _ENV_REF.fullmatch(value):
            return None
        from ..document.schema import did_you_mean

        return (
            f"executor {value!r} is not one of: {', '.join(EXECUTOR_KINDS)} "
            f"(or a scheduler address such as tcp://host:8786){did_you_mean(value, EXECUTOR_KINDS)}"
        )
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in EXECUTOR_KEYS]
        if unknown:
            from ..document.schema import did_you_mean

            return (
                f"unknown key '{unknown[0]}' in executor{did_you_mean(str(unknown[0]), EXECUTOR_KEYS)} "
                f"(allowed: {', '.join(EXECUTOR_KEYS)})"
            )
        kind = value.get("kind", "dask")
        if kind not in EXECUTOR_KINDS:
            return f"executor kind {kind!r} is not one of: {', '.join(EXECUTOR_KINDS)}"
        if kind == "local" and len(value) > 1:
            return "executor kind 'local' takes no other keys"
        for key, types in (
            ("retries", int),
            ("connect_timeout", (int, float)),
            ("ship_results", bool),
            ("priority", int),
            ("resources", Mapping),
            ("workers", (list, str)),
        ):
            if key in value and (
                not isinstance(value[key], types) or (isinstance(value[key], bool) and key != "ship_results")
            ):
                return (
                    f"executor.{key} must be {getattr(types, '__name__', 'a number or list')}, "
                    f"got {value[key]!r}"
                )
        return None
    if _is_client(value):
        return None
    return (
        f"executor must be 'local', 'dask', a mapping with kind: dask, or an executor object; got {value!r}"
    )


def document_address(value: Any) -> str | None:
    """The scheduler address a document's ``executor:`` spells out literally (None: none, or only
    ``${ENV}`` references, which are the user's own configuration)."""
    if isinstance(value, str):
        address: Any = value if value.startswith(ADDRESS_SCHEMES) or _ENV_REF.search(value) else None
    elif isinstance(value, Mapping):
        address = value.get("scheduler_address", value.get("address"))
    else:
        return None
    if not isinstance(address, str) or not address.strip():
        return None
    return None if _ENV_REF.sub("", address).strip() == "" else address


def check_executor_spec(spec: Any, *, trusted: bool | None = None) -> None:
    """Reject a malformed ``executor:`` when the pipeline loads, naming its YAML path and line; and a
    scheduler address from an untrusted document (connecting to it would unpickle its results)."""
    value = getattr(spec, "executor", None)
    problem = _problem(value)
    cls: type[SibylError] = SpecError
    if problem is None:
        trusted = getattr(spec, "trusted", False) if trusted is None else trusted
        address = None if trusted else document_address(value)
        if address is None:
            return
        problem = (
            f"executor at scheduler address '{address}' comes from the document: a Dask client unpickles "
            f"what the scheduler sends, so this is code execution; pass trust_code=True, or give the "
            f"address from Python (execute(executor=...))"
        )
        cls = TrustError
    lines = getattr(spec, "lines", None)
    if lines is None:
        raise cls(problem, path="executor")
    known = getattr(lines, "_lines", {})  # LineMap.line() falls back to ancestors: ask for the exact key
    candidates: tuple[tuple[str, ...], ...] = (
        ("pipelines", spec.name, "scheduler_address"),
        ("scheduler_address",),
        ("pipelines", spec.name, "executor"),
        ("executor",),
    )
    for where in candidates:
        if where in known and (cls is TrustError or where[-1] == "executor"):
            raise lines.error(where, problem, cls)
    raise lines.error(("executor",), problem, cls)


def make_executor(value: Any) -> Any:
    """An executor for an ``executor:`` value (see the module docstring); ``None`` -> the local one."""
    problem = _problem(value)
    if problem is not None:
        raise ExecutorError(problem)
    if value is None or value == "local":
        return LocalExecutor()
    if hasattr(value, "call"):
        return value
    if _is_client(value):
        from .dask_executor import DaskExecutor

        return DaskExecutor(client=value)
    if isinstance(value, str):
        options: dict[str, Any] = {} if value == "dask" else {"scheduler_address": value}
    else:
        if value.get("kind", "dask") == "local":
            return LocalExecutor()
        options = {k: v for k, v in value.items() if k != "kind"}
        if "address" in options:
            options["scheduler_address"] = options.pop("address")
    return _shared_dask(options)


def resolve_executor(explicit: Any, pipeline: Any) -> Any:
    """The executor one run uses: ``execute(executor=)``, else ``pipeline.executor`` (a value is turned
    into an executor and kept), else the pipeline's ``executor:`` from YAML; ``None`` = local."""
    if explicit is not None:
        return make_executor(explicit)
    current = getattr(pipeline, "executor", None)
    if current is None:
        spec = getattr(pipeline, "spec", None)
        declared = getattr(spec, "executor", None)
        if declared is None:
            return None
        check_executor_spec(spec, trusted=bool(getattr(pipeline, "trusted", False)))
        current = declared
    if not hasattr(current, "call"):
        current = make_executor(current)
    pipeline.executor = current
    return current


def _shared_dask(options: dict[str, Any]) -> Any:
    """One executor (so one client connection) per distinct configuration, shared by pipelines."""
    if importlib.util.find_spec("distributed") is None or importlib.util.find_spec("dask") is None:
        raise ExecutorError(DASK_MISSING)
    address = options.get("scheduler_address")
    if isinstance(address, str):
        address = _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), address).strip() or None
        if address is not None and "://" not in address and ":" in address:
            address = f"tcp://{address}"
    options["scheduler_address"] = address
    key = tuple(sorted((k, repr(v)) for k, v in options.items()))
    with _SHARED_LOCK:
        executor = _SHARED.get(key)
        if executor is None:
            from .dask_executor import DaskExecutor

            submit = {k: options.pop(k) for k in ("resources", "workers", "priority") if k in options}
            executor = _SHARED[key] = DaskExecutor(**options, **submit)
        return executor


def _is_client(value: Any) -> bool:
    cls = type(value)
    return cls.__name__ == "Client" and cls.__module__.startswith("distributed")
