"""``sibyl sweep FILE --grid grid.yaml --inputs inputs.jsonl --output results.parquet|csv``.

The grid file is YAML (``node_id.config.key: [values]``), the inputs file JSON lines (one input per
line; a JSON string is the query). Metrics are the built-ins, named on the command line:
``--metric contains:Python --metric fact_recall --metric judge``. Imports nothing heavy until run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import SibylError

__all__ = ["add_sweep_parser", "cmd_sweep", "parse_metric", "METRIC_NAMES"]

METRIC_NAMES = ("exact_match", "contains:TEXT", "regex:PATTERN", "token_count", "fact_recall", "latency",
                "judge[:CRITERIA]")  # fmt: skip


class SweepCliError(SibylError):
    """A bad argument file or option: one line, exit 1."""


def parse_metric(text: str) -> Any:
    from . import metrics as m

    name, _, arg = text.partition(":")
    makers = {
        "exact_match": lambda: m.exact_match(arg or None),
        "contains": lambda: m.contains(arg or None),
        "regex": lambda: m.regex(arg),
        "token_count": lambda: m.token_count(),
        "fact_recall": lambda: m.fact_recall(),
        "latency": lambda: m.latency(),
        "judge": lambda: m.llm_judge(arg) if arg else m.llm_judge(),
    }
    if name not in makers or (name == "regex" and not arg):
        raise SweepCliError(f"--metric {text!r}: use one of {', '.join(METRIC_NAMES)}")
    return makers[name]()


def _read_grid(path: str) -> dict[str, Any]:
    from ..document.yaml_lines import load_yaml_with_lines
    from ..errors import SpecError

    p = Path(path)
    if not p.is_file():
        raise SweepCliError(f"--grid {path}: no such file")
    try:
        data, _ = load_yaml_with_lines(p.read_text(encoding="utf-8"), str(p))
    except SpecError as exc:
        raise SweepCliError(f"--grid {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SweepCliError(f"--grid {path}: expected a mapping of 'node_id.config.key' to lists of values")
    return data


def _read_inputs(path: str) -> list[Any]:
    p = Path(path)
    if not p.is_file():
        raise SweepCliError(f"--inputs {path}: no such file")
    out = []
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:  # JSONDecodeError, or an integer past Python's digit limit
                detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise SweepCliError(f"--inputs {path}, line {n}: not JSON ({detail})") from None
    if not out:
        raise SweepCliError(f"--inputs {path}: no inputs (one JSON value per line)")
    return out


def _portable(frame: Any) -> Any:
    """Object columns holding several kinds of value become text, so parquet can store them."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object:
            kinds = {type(v) for v in frame[col] if v is not None}
            if len(kinds) > 1:
                frame[col] = [None if v is None else str(v) for v in frame[col]]
    return frame


def write_frame(frame: Any, output: str) -> None:
    suffix = Path(output).suffix.lower()
    if suffix == ".csv":
        frame.to_csv(output, index=False)
    elif suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SweepCliError(
                "--output .parquet needs pyarrow: pip install sibyl_nb[parquet] (or use .csv)"
            ) from None
        _portable(frame).to_parquet(output, index=False)
    else:
        raise SweepCliError(f"--output {output}: use a .parquet or .csv file name")


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..engine.sync import run_sync
    from ..pipeline import Pipeline, load_document
    from .runner import SweepRun

    if Path(args.output).suffix.lower() not in (".csv", ".parquet"):
        raise SweepCliError(f"--output {args.output}: use a .parquet or .csv file name")
    path = Path(args.file)
    if not path.is_file():
        raise SweepCliError(f"no such file: {args.file}")
    doc = load_document(path, trust_code=args.trust_code)
    if args.pipeline is None and len(doc.pipelines) > 1:
        raise SweepCliError(
            f"{path} defines {len(doc.pipelines)} pipelines: pick one with --pipeline ({', '.join(doc.pipelines)})"
        )
    pipe = Pipeline.from_document(doc, args.pipeline, trusted=args.trust_code)
    grid = _read_grid(args.grid) if args.grid else {}
    inputs = _read_inputs(args.inputs)
    metrics = [parse_metric(t) for t in args.metric or ()]
    run = SweepRun(pipe, inputs, grid, metrics, repeats=args.repeats, fields=args.field or (), name=args.name,
                   seed=args.seed, store=not args.no_store)  # fmt: skip
    frame = run_sync(run.execute(max_concurrent=args.max_concurrent, progress=not args.quiet, live=False))
    write_frame(frame, args.output)
    failed = int((frame["status"] == "failed").sum()) if len(frame) else 0
    where = f", stored in {run.store.path}" if run.store.path is not None else ""
    print(f"{len(frame)} runs ({run.ran} ran, {run.reused} reused, {failed} failed) -> {args.output}{where}")
    return 0


def add_sweep_parser(sub: Any) -> None:
    sw = sub.add_parser("sweep", help="run a pipeline over inputs x a grid of settings; write a table")
    sw.add_argument("file", metavar="FILE", help="the YAML document")
    sw.add_argument("--pipeline", "-p", help="pipeline name (needed when the document has several)")
    sw.add_argument("--grid", "-g", help="YAML file: node_id.config.key: [values, ...]")
    sw.add_argument("--inputs", "-i", required=True, help="JSON lines file: one input per line")
    sw.add_argument("--output", "-o", required=True, help="results.parquet or results.csv")
    sw.add_argument("--metric", "-m", action="append", help=f"a built-in metric: {', '.join(METRIC_NAMES)}")
    sw.add_argument(
        "--field", action="append", help="an output field to add as a column (answer, node.field)"
    )
    sw.add_argument("--repeats", type=int, default=1)
    sw.add_argument("--max-concurrent", type=int, default=8)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument(
        "--name", help="sweep name (its folder under $SIBYL_HOME/sweeps; default: the pipeline's)"
    )
    sw.add_argument(
        "--no-store",
        action="store_true",
        help="keep nothing after the sweep (a re-run runs everything again)",
    )
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument("--trust-code", action="store_true", help="allow builder_code from the document to run")
    sw.set_defaults(func=cmd_sweep)
