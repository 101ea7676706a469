"""``sibyl``: the command line.

    sibyl workflow visualize --pipeline research_workflow --output workflow.png [--file pipelines.yaml]
    sibyl run --pipeline NAME [--file F] [--input JSON | --query TEXT] [--workflow-id ID] [--trace]
    sibyl validate FILE_OR_FOLDER...      sibyl schema [--markdown] > sibyl.schema.json
    sibyl resume WORKFLOW_ID --pipeline NAME [--file F]
    sibyl demo
    sibyl checkpoints list|prune ...      sibyl cache clear ...
    sibyl sweep FILE --grid grid.yaml --inputs inputs.jsonl --output results.parquet|csv

Without ``--file`` the document is ``./pipelines.yaml``, else ``./sibyl.yaml``, else the seed guide's
complete examples bundled with the package (``sibyl_nb/data/examples/seed_pipelines.yaml``; a note on
stderr says so). Errors print one line (with the YAML path and line for a bad document) and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "find_document", "BUNDLED_EXAMPLES"]

BUNDLED_EXAMPLES = Path(__file__).parent / "data" / "examples" / "seed_pipelines.yaml"
DEFAULT_FILES = ("pipelines.yaml", "sibyl.yaml")
DEMO_QUERY = "What is Python used for?"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def find_document(file: str | None, *, quiet: bool = False) -> Path:
    """``--file``, else ./pipelines.yaml, else ./sibyl.yaml, else the bundled seed examples."""
    if file:
        path = Path(file)
        if not path.is_file():
            raise CliError(f"no such file: {file}")
        return path
    for name in DEFAULT_FILES:
        path = Path.cwd() / name
        if path.is_file():
            return path
    if not quiet:
        print(
            f"sibyl: no --file, ./pipelines.yaml or ./sibyl.yaml: using the bundled seed examples "
            f"({BUNDLED_EXAMPLES})",
            file=sys.stderr,
        )
    return BUNDLED_EXAMPLES


def _pipeline(args: argparse.Namespace) -> Any:
    from .pipeline import Pipeline, load_document

    path = find_document(getattr(args, "file", None))
    trust = getattr(args, "trust_code", False)
    doc = load_document(path, trust_code=trust)
    name = getattr(args, "pipeline", None)
    if name is None and len(doc.pipelines) > 1:
        raise CliError(
            f"{path} defines {len(doc.pipelines)} pipelines: pick one with --pipeline "
            f"({', '.join(doc.pipelines)})"
        )
    return Pipeline.from_document(doc, name, trusted=trust)


def _input(args: argparse.Namespace) -> Any:
    if getattr(args, "query", None):
        return {"query": args.query}
    raw = getattr(args, "input", None)
    if raw is None:
        return None
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--input {raw}: {exc}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {"query": raw}  # plain text is the query


def _print(text: str) -> None:
    try:
        print(text)
    except UnicodeEncodeError:  # a terminal that cannot show the trace symbols
        print(text.encode("ascii", "replace").decode("ascii"))


def _show(result: Any, args: argparse.Namespace) -> None:
    if getattr(args, "json", False):
        _print(
            json.dumps(
                {"run_id": result.run_id, "stopped_by": result.stopped_by, "output": result.output},
                ensure_ascii=False,
                indent=2,
                default=str,
            )
        )
    else:
        _print(result.text)
    if getattr(args, "trace", False):
        _print(result.format_trace())


# ---------------------------------------------------------------------- commands
def cmd_visualize(args: argparse.Namespace) -> int:
    from .draw import save_graph

    pipe = _pipeline(args)
    output = Path(args.output)
    if output.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise CliError(f"--output {args.output}: use a .png, .svg or .pdf file name")
    statuses = None
    if args.run:
        from .draw import statuses_from_result

        statuses = statuses_from_result(pipe.run(_input(args) or {"query": DEMO_QUERY}))
    output.parent.mkdir(parents=True, exist_ok=True)
    save_graph(pipe.graph, str(output), statuses, title=pipe.name, dpi=args.dpi)
    g = pipe.graph
    print(f"wrote {output} ({pipe.name}: {len(g.nodes)} nodes, {len(g.edges)} edges)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    result = pipe.run(_input(args), workflow_id=args.workflow_id)
    _show(result, args)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    result = pipe.resume_sync(args.workflow_id)
    _show(result, args)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem of every document (files, and *.yaml / *.yml under folders) as path:line:col: message."""
    from .document.problems import file_problems
    from .errors import SibylError
    from .pipeline import load_document

    files: list[Path] = []
    status = 0
    for given in args.files:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                print(f"{given}: no .yaml or .yml files in this folder", file=sys.stderr)
                status = 1
            files += found
        elif path.is_file():
            files.append(path)
        else:
            print(f"{given}:1:1: no such file or folder", file=sys.stderr)
            status = 1
    for path in files:
        problems = file_problems(path, trusted=args.trust_code)
        if problems:
            status = 1
            for problem in problems:
                print(problem, file=sys.stderr)
            continue
        try:
            doc = load_document(path, trust_code=args.trust_code)
        except SibylError as exc:  # the collector found nothing, the loader must agree
            print(f"{path}:{exc.line or 1}:1: {exc}", file=sys.stderr)
            status = 1
            continue
        parts = []
        warnings = []
        for name, spec in doc.pipelines.items():
            g = spec.graph
            parts.append(f"{name} ({len(g.nodes)} nodes, {len(g.edges)} edges)")
            warnings += [f"  warning: {name}: {w}" for w in spec.warnings]
        n = len(doc.pipelines)
        extras = [
            k
            for k, v in (
                ("shops", doc.infrastructure),
                ("observability", doc.observability),
                ("providers", doc.providers),
            )
            if v
        ]
        tail = f"; settings: {', '.join(extras)}" if extras else ""
        print(f"ok: {path}: {n} pipeline{'s' if n != 1 else ''}: {', '.join(parts)}{tail}")
        for w in warnings:
            print(w)
    return status


def cmd_schema(args: argparse.Namespace) -> int:
    """The document format: JSON Schema (draft 2020-12) or, with --markdown, the reference."""
    if args.markdown:
        from .document.reference import reference_markdown

        sys.stdout.write(reference_markdown())
    else:
        from .document.json_schema import json_schema

        sys.stdout.write(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    pipe = Pipeline.from_yaml(BUNDLED_EXAMPLES, "research_workflow")
    result = pipe.run({"query": args.query})
    _print(result.format_trace())
    _print("")
    _print(result.text)
    return 0


def _checkpoint_store(args: argparse.Namespace) -> Any:
    if getattr(args, "pipeline", None) or getattr(args, "file", None):
        return _pipeline(args).checkpoint_store()
    from .state.checkpoint import open_checkpoint_store

    return open_checkpoint_store(
        {
            "storage": args.storage,
            "database_url": args.database_url,
            "redis_url": args.redis_url,
            "path": args.path,
        }
    )


def cmd_checkpoints(args: argparse.Namespace) -> int:
    import time

    store = _checkpoint_store(args)
    if args.action == "list":
        rows = store.list()
        if not rows:
            print(f"no checkpoints in {store.url}")
            return 0
        print(f"{'workflow_id':<28} {'pipeline':<22} {'status':<9} {'steps':>5}  updated")
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["updated_at"] or 0))
            print(
                f"{r['workflow_id']:<28} {str(r['pipeline']):<22} {str(r['status']):<9} {r['steps']:>5}  {when}"
            )
        return 0
    older = _duration(args.older_than) if args.older_than else None
    if args.keep is None and older is None and not args.stale_only:
        raise CliError(
            "checkpoints prune: give --keep N, --older-than DURATION (e.g. 7d, 12h) or --stale-only"
        )
    out = store.prune(keep=args.keep, older_than=older, status=args.status)
    print(f"pruned {out['workflows']} workflow(s), {out['entries']} entries from {store.url}")
    return 0


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise CliError(f"--older-than {text!r}: use seconds or a number with s/m/h/d/w (e.g. 7d)") from None


def cmd_cache(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    n = pipe.clear_cache(all_pipelines=args.all)
    print(f"cleared {n} cached step output(s)")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sibyl", description="Run, check and draw sibyl_nb YAML pipelines.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def doc_args(sp: argparse.ArgumentParser, pipeline_required: bool = False) -> None:
        sp.add_argument(
            "--file",
            "-f",
            help="YAML document (default: ./pipelines.yaml, ./sibyl.yaml, else the bundled seed examples)",
        )
        sp.add_argument(
            "--pipeline",
            "-p",
            required=pipeline_required,
            help="pipeline name (needed when the document has several)",
        )
        sp.add_argument(
            "--trust-code", action="store_true", help="allow builder_code from the document to run"
        )

    def run_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--input", "-i", help="pipeline input: JSON, @file.json, or plain text (the query)")
        sp.add_argument("--query", "-q", help="shortcut for --input '{\"query\": ...}'")

    wf = sub.add_parser("workflow", help="workflow commands (visualize)")
    wsub = wf.add_subparsers(dest="workflow_command", metavar="ACTION")
    wsub.required = True
    for parent, name in ((wsub, "visualize"), (sub, "visualize")):
        vis = parent.add_parser(name, help="draw a pipeline's graph to PNG/SVG/PDF (offline)")
        doc_args(vis)
        vis.add_argument("--output", "-o", default="workflow.png", help="output file (.png, .svg, .pdf)")
        vis.add_argument("--dpi", type=int, default=150)
        vis.add_argument("--run", action="store_true", help="run once first and colour nodes by status")
        run_args(vis)
        vis.set_defaults(func=cmd_visualize)

    run = sub.add_parser("run", help="run a pipeline and print its answer")
    doc_args(run)
    run_args(run)
    run.add_argument("--workflow-id", help="workflow id (checkpoints, state, cache keys)")
    run.add_argument("--trace", action="store_true", help="print the step trace")
    run.add_argument("--json", action="store_true", help="print the output as JSON")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser(
        "validate",
        help="check documents and folders; every problem as path:line:col: message on stderr, exit 1 if any",
    )
    val.add_argument("files", nargs="+", metavar="FILE_OR_FOLDER")
    val.add_argument("--trust-code", action="store_true")
    val.set_defaults(func=cmd_validate)

    sch = sub.add_parser("schema", help="print the document's JSON Schema (or --markdown: the reference)")
    sch.add_argument("--markdown", action="store_true", help="print docs/reference.md instead")
    sch.set_defaults(func=cmd_schema)

    res = sub.add_parser("resume", help="continue a checkpointed run that died")
    res.add_argument("workflow_id")
    doc_args(res)
    res.add_argument("--trace", action="store_true")
    res.add_argument("--json", action="store_true")
    res.set_defaults(func=cmd_resume)

    demo = sub.add_parser("demo", help="run the seed's research workflow offline and print its trace")
    demo.add_argument("--query", "-q", default=DEMO_QUERY)
    demo.set_defaults(func=cmd_demo)

    ck = sub.add_parser("checkpoints", help="list or prune checkpoints")
    ck.add_argument("action", choices=("list", "prune"))
    doc_args(ck)
    ck.add_argument("--storage", help="without --pipeline: memory | diskcache | redis | database")
    ck.add_argument("--database-url")
    ck.add_argument("--redis-url")
    ck.add_argument("--path", help="diskcache folder")
    ck.add_argument("--keep", type=int, help="prune: keep the N most recent workflows")
    ck.add_argument("--older-than", help="prune: drop workflows not updated for this long (7d, 12h, 3600)")
    ck.add_argument("--status", help="prune: only workflows with this status (finished, failed, running)")
    ck.add_argument("--stale-only", action="store_true", help="prune: only leftovers of superseded runs")
    ck.set_defaults(func=cmd_checkpoints)

    cache = sub.add_parser("cache", help="clear the step cache")
    cache.add_argument("action", choices=("clear",))
    doc_args(cache)
    cache.add_argument("--all", action="store_true", help="every pipeline's entries, not just --pipeline's")
    cache.set_defaults(func=cmd_cache)

    from .experiments.cli_sweep import add_sweep_parser  # light: pandas only when a sweep runs

    add_sweep_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sibyl`` console script; returns the exit status."""
    from .errors import SibylError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, SibylError) as exc:
        print(f"sibyl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - interactive
        return 130
    except BrokenPipeError:  # pragma: no cover - `sibyl demo | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
