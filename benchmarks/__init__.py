"""sibyl_nb's benchmarks, side by side with the peers: ``python -m benchmarks [--quick]``.

Every suite is a module with ``run(quick: bool) -> list[dict]`` (one dict per row: ``benchmark``,
``unit``, ``sibyl_nb``, a peer column, ``ratio``, ``goal``); ``__main__`` runs them all, each in a
fresh interpreter, and writes ``RESULTS.md``.
"""

__all__ = ["SUITES"]

# (suite name, module): the runner reports a module that does not exist yet as "not present".
SUITES = (
    ("engine", "benchmarks.engine"),
    ("context", "benchmarks.context"),
    ("checkpoint", "benchmarks.checkpoint"),
    ("widget", "benchmarks.widget"),
    ("dask", "benchmarks.dask_bench"),
    ("sessions", "benchmarks.sessions"),
    ("recall", "benchmarks.recall"),
)
