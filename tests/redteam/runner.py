"""Run red-team cases in this (limited) process and print one JSON line per case.

Usage: ``python runner.py CASE.yaml ...``. Each case is a YAML document whose leading comments say
what must happen::

    # expect: SpecError          (an error class name, or "ok": loads, and runs if asked, without error)
    # path: pipelines.p.steps[0].config.max_tokens
    # line: 7
    # match: at least 1          (a fragment of the message)
    # run: {"query": "hi"}       (optional: also run it with this input; the error may come from the run)
    # trust: true                (optional: load with trust_code=True)

The caller (tests/test_redteam.py) starts this script with an address-space and CPU limit; here each
case also gets a wall-clock alarm. A case that escapes as anything but the expected sibyl_nb error,
names the wrong place, hangs or exhausts memory is reported as ``other``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

CASE_SECONDS = float(os.environ.get("REDTEAM_CASE_SECONDS", "10"))
MEMORY_BYTES = int(os.environ.get("REDTEAM_MEMORY_BYTES", str(3 * 2**30)))


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException so library code catching Exception cannot swallow it."""


def header(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _located(exc: BaseException) -> BaseException:
    """The error that says what went wrong: a NodeExecutionError's cause when it has one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) and type(exc).__name__ == "NodeExecutionError" else exc


def run_case(path: Path) -> dict[str, object]:
    import sibyl_nb as sb

    text = path.read_text(encoding="utf-8")
    want = header(text)
    expect = want.get("expect", "ok")
    trust = want.get("trust", "false").lower() == "true"
    result: dict[str, object] = {"case": f"{path.parent.name}/{path.name}", "category": path.parent.name}
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        try:
            pipe = sb.Pipeline.from_yaml(str(path), trust_code=trust)  # from the file: its folder is a root
            if "run" in want:
                pipe.run(json.loads(want["run"]))
            got: BaseException | None = None
        except CaseTimeout:
            raise
        except MemoryError:
            result.update(outcome="other", reason="MemoryError")
            return result
        except RecursionError:
            result.update(outcome="other", reason="RecursionError")
            return result
        except Exception as exc:  # noqa: BLE001 - classifying is the point
            got = exc
    except CaseTimeout:
        result.update(outcome="other", reason=f"hung (over {CASE_SECONDS:g}s)")
        return result
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        result["seconds"] = round(time.perf_counter() - t0, 3)
    if got is None:
        ok = expect == "ok"
        result.update(outcome="clear" if ok else "other", reason="no error" if not ok else "")
        return result
    err = _located(got)
    result.update(error=type(err).__name__, message=str(err)[:400])
    problems = []
    if expect == "ok":
        problems.append("expected no error")
    elif type(err).__name__ != expect and not any(c.__name__ == expect for c in type(err).__mro__):
        problems.append(f"expected {expect}")
    if not isinstance(err, sb.SibylError):
        problems.append("not a sibyl_nb error: " + "".join(traceback.format_exception_only(err)).strip())
    else:
        if "path" in want and (err.path or "") != want["path"]:
            problems.append(f"path {err.path!r} != {want['path']!r}")
        if "line" in want and str(err.line) != want["line"]:
            problems.append(f"line {err.line!r} != {want['line']}")
        if "match" in want and want["match"] not in str(err):
            problems.append(f"message lacks {want['match']!r}")
    result.update(outcome="other" if problems else "clear", reason="; ".join(problems))
    return result


def main(paths: list[str]) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))

    def on_alarm(_signum: int, _frame: object) -> None:
        raise CaseTimeout

    signal.signal(signal.SIGALRM, on_alarm)
    os.chdir(Path(__file__).parent)  # the working directory is a root: make it the corpus folder
    for p in paths:
        print("START " + p, flush=True)
        print(json.dumps(run_case(Path(p).resolve())), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
