"""Tab completion in ``%%sibyl_pipeline`` cells through IPython's completer API (every front end).

Why a context matcher: JupyterLab, VS Code, classic Notebook and the terminal all ask the kernel,
which hands IPython the whole cell and the cursor. So one matcher serves them all: after ``use:`` /
``technique:`` it offers registered technique names, after ``subtechnique:`` the subtechniques of the
technique named nearest above, inside its ``config:`` the keys its schema allows for that
subtechnique, and on the magic line the pipelines defined so far and the flags.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["complete", "install_completer", "remove_completer"]

_TECHNIQUE = re.compile(r"(?:^|[\s{,-])(?:use|technique)\s*:\s*[\"']?([\w.]*)$")
_SUBTECHNIQUE = re.compile(r"(?:^|[\s{,])subtechnique\s*:\s*[\"']?(\w*)$")
_NAMED = re.compile(r"(?:use|technique)\s*:\s*[\"']?([\w.]+)")
_FLAGS = (
    "--pipeline",
    "--input",
    "--session",
    "--show",
    "--output",
    "--file",
    "--trust",
    "--save",
    "--dry-run",
    "--no-cache",
    "--help",
)
_SHOW = ("graph", "tokens", "steps", "all", "none")


def complete(full_text: str, line: int, column: int, shell: Any = None) -> list[str] | None:
    """Completions at (``line``, ``column``) of ``full_text``; None when it is not a sibyl_pipeline cell."""
    lines = full_text.split("\n")
    if not lines or line >= len(lines):
        return None
    first = lines[0].lstrip()
    here = lines[line][:column]
    if line == 0 or (
        first.startswith("%sibyl_pipeline") is False and here.lstrip().startswith("%sibyl_pipeline")
    ):
        magic_line = here if line == 0 else here
        if not magic_line.lstrip().startswith(("%%sibyl_pipeline", "%sibyl_pipeline")):
            return None
        return _complete_flags(magic_line, shell)
    if not first.startswith("%%sibyl_pipeline"):
        return None
    from ..techniques.registry import registered_techniques

    m = _TECHNIQUE.search(here)
    if m:
        prefix = m.group(1)
        return sorted(n for n in registered_techniques() if n.startswith(prefix))
    m = _SUBTECHNIQUE.search(here)
    if m:
        prefix = m.group(1)
        techniques = registered_techniques()
        for above in reversed(lines[: line + 1]):
            named = _NAMED.search(above)
            if named and named.group(1) in techniques:
                subs = techniques[named.group(1)].subtechniques or ()
                return sorted(s for s in subs if s.startswith(prefix))
        return []
    return _complete_config_key(lines, line, here)


_KEY_PREFIX = re.compile(r"^(\s+)(\w*)$")
_CONFIG = re.compile(r"^(\s*)config\s*:\s*$")
_SUB_NAMED = re.compile(r"^\s*subtechnique\s*:\s*[\"']?(\w+)")


def _complete_config_key(lines: list[str], line: int, here: str) -> list[str] | None:
    """Inside a step's ``config:``, the keys its technique's schema (the loader's own) allows for the
    subtechnique chosen so far: the same :class:`~sibyl_nb.document.schema.ConfigSchema` the loader and
    ``sibyl schema`` use."""
    m = _KEY_PREFIX.match(here)
    if not m:
        return None
    indent, prefix = len(m.group(1)), m.group(2)
    from ..techniques.registry import registered_techniques

    techniques = registered_techniques()
    sub = None
    inside = False
    for above in reversed(lines[:line]):
        chosen = _SUB_NAMED.match(above)
        if chosen:  # (``subtechnique:`` also ends in ``technique:``)
            sub = sub if inside else chosen.group(1)
            continue
        named = _NAMED.search(above)
        if named:
            info = techniques.get(named.group(1))
            if info is None or not inside:
                return None
            keys = info.config_schema.keys_for(sub)
            return sorted(k for k in keys if k.startswith(prefix))
        conf = _CONFIG.match(above)
        if conf and len(conf.group(1)) < indent:
            inside = True
    return None


def _complete_flags(text: str, shell: Any) -> list[str]:
    words = text.split()
    token = "" if text.endswith((" ", "\t")) else (words[-1] if len(words) > 1 else "")
    before = words[-1] if token == "" else (words[-2] if len(words) > 1 else "")
    if before in ("-p", "--pipeline") or (
        token and not token.startswith("-") and len(words) == 2 and before.startswith("%")
    ):
        return sorted(n for n in _pipeline_names(shell) if n.startswith(token))
    if before == "--show":
        head, _, last = token.rpartition(",")
        return [(head + "," if head else "") + v for v in _SHOW if v.startswith(last)]
    if token.startswith("-"):
        return [f for f in _FLAGS if f.startswith(token)]
    if token == "" and len(words) == 1:
        return sorted(_pipeline_names(shell))
    return []


def _pipeline_names(shell: Any) -> list[str]:
    from .shell import pipelines

    return list(pipelines(shell))


def _matcher_for(shell: Any) -> Any:
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher()
    def sibyl_matcher(context: Any) -> dict[str, Any]:
        names = complete(context.full_text, context.cursor_line, context.cursor_position, shell)
        if names is None:
            return {"completions": [], "suppress": False}
        token = context.token
        # IPython replaces the current token: offer whole tokens that extend it
        out = []
        for n in names:
            text = n
            if token and not n.startswith(token):
                tail = token.rsplit(",", 1)[-1] if "," in token else token
                text = token[: len(token) - len(tail)] + n if n.startswith(tail) else n
            out.append(SimpleCompletion(text, type="sibyl"))
        return {"completions": out, "suppress": bool(out)}

    sibyl_matcher._sibyl_nb = True
    return sibyl_matcher


def install_completer(shell: Any) -> None:
    """Add the matcher to ``shell``'s completer (once)."""
    completer = getattr(shell, "Completer", None)
    if completer is None:
        return
    remove_completer(shell)
    completer.custom_matchers.append(_matcher_for(shell))


def remove_completer(shell: Any) -> None:
    completer = getattr(shell, "Completer", None)
    if completer is None:
        return
    completer.custom_matchers[:] = [
        m for m in completer.custom_matchers if not getattr(m, "_sibyl_nb", False)
    ]
