"""What an untrusted document may reach: files inside its roots, servers on this machine.

A document is a program a user may have downloaded. Unless the caller trusts it (``trust_code=True``,
a notebook cell, a call from Python), a file it *reads* must lie inside one of its roots — the
document's own folder, the working directory, or a ``root`` that is itself inside those — and a
connection URL it spells out literally must point at this machine (``localhost``, ``127.0.0.0/8``,
``::1``). ``${ENV}`` URLs are the user's own configuration and are not refused here. ``/proc``,
``/sys`` and ``/dev`` are never touched from an untrusted document, whatever its roots.

Store locations (a diskcache directory, an SQLite file, a replay folder) are where sibyl_nb *writes*
its own files, with names it chooses: those may be anywhere (a temporary directory is the common
case) except the pseudo-filesystems.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import TrustError

__all__ = [
    "document_roots",
    "check_path",
    "check_store_path",
    "check_url",
    "is_loopback_host",
    "PSEUDO_FILESYSTEMS",
]

PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
_HINT = "pass trust_code=True if you trust this document"
_SERVER_PARAMS = frozenset({"host", "hostaddr", "service", "server", "unix_socket_path", "dsn"})


def document_roots(source: str | None, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders an untrusted document may read: its own folder and the working directory, or
    only ``root`` when one is configured (a root outside those is refused by :func:`check_path`)."""
    base = [Path.cwd().resolve()]
    if source and not source.startswith("<"):
        base.append(Path(source).expanduser().resolve().parent)
    if root is None:
        return base
    r = Path(root).expanduser()
    r = (r if r.is_absolute() else Path.cwd() / r).resolve()
    if not _inside(r, base):
        raise TrustError(f"root '{root}' is outside the document's folder and the working directory; {_HINT}")
    return [r]


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def check_path(
    path: str | os.PathLike[str],
    *,
    source: str | None,
    trusted: bool,
    root: str | os.PathLike[str] | None = None,
    what: str = "path",
) -> Path:
    """``path`` resolved (symlinks followed); refused unless trusted or inside the document's roots."""
    p = Path(path).expanduser()
    resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
    if trusted:
        return resolved
    if _inside(resolved, PSEUDO_FILESYSTEMS):
        raise TrustError(f"{what} '{path}' is a system file an untrusted document may not read; {_HINT}")
    roots = document_roots(source, root)
    if not _inside(resolved, roots):
        raise TrustError(
            f"{what} '{path}' is outside the folders this document may read "
            f"({', '.join(str(r) for r in roots)}); {_HINT}"
        )
    return resolved


def check_store_path(path: str | os.PathLike[str], *, trusted: bool, what: str = "path") -> None:
    """A folder or file sibyl_nb writes its own data to: anywhere but ``/proc``, ``/sys``, ``/dev``."""
    if trusted:
        return
    p = Path(path).expanduser()
    resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
    if _inside(resolved, PSEUDO_FILESYSTEMS):
        raise TrustError(f"{what} '{path}' is inside a system pseudo-filesystem; {_HINT}")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, trusted: bool, what: str = "url", source: str | None = None) -> None:
    """A connection URL spelled out in an untrusted document must stay on this machine."""
    if trusted or "${" in url:
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return  # malformed: the store/provider reports it with its own clear error
    if parts.scheme.startswith("sqlite"):
        # sqlite:///relative.db or sqlite:////absolute/path.db: a file, not a server
        file = url.split(":///", 1)[1] if ":///" in url else ""
        file = file.split("?", 1)[0]
        if file and file != ":memory:":
            check_store_path(file, trusted=trusted, what=f"{what} file")
        return
    if host is None and parts.scheme in ("unix", "redis+unix"):
        return
    # libpq and some drivers take the server from the query too (?host=..., ?service=...)
    from urllib.parse import parse_qsl

    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in _SERVER_PARAMS and not (key.lower() == "host" and is_loopback_host(value)):
            raise TrustError(
                f"{what} '{_masked(url)}' names its server in the query ({key}=...): an untrusted document "
                f"may only connect to localhost; {_HINT}"
            )
    if not is_loopback_host(host):
        raise TrustError(
            f"{what} '{_masked(url)}' points at host '{host}', not this machine: an untrusted document "
            f"may only connect to localhost; {_HINT} (or use ${{ENV}})"
        )


def _masked(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed url>"
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
