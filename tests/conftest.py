"""Shared fixtures. Redis/PostgreSQL tests skip on a machine without the servers, unless
``SIBYL_REQUIRE_SERVICES=1`` (set by ``.ci/run``) turns that skip into a failure."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

REDIS_URL = os.environ.get("SIBYL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("SIBYL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _need(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    reason = f"{service} is not reachable at {host}:{port}"
    if os.environ.get("SIBYL_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and SIBYL_REQUIRE_SERVICES=1 forbids skipping this test")
    pytest.skip(reason)


@pytest.fixture
def redis_url() -> str:
    """A Redis URL for a live server; the test should use a unique key prefix (see ``unique``)."""
    _need("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def postgres_url() -> str:
    """A SQLAlchemy URL for the live PostgreSQL ``test`` database."""
    _need("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def unique() -> str:
    """A short unique token for key prefixes / table names so parallel runs never collide."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep every on-disk default (diskcache sessions, SQLite, caches) inside the test's tmp dir."""
    monkeypatch.setenv("SIBYL_HOME", str(tmp_path / ".sibyl"))
    yield


@pytest.fixture
def raw():
    """``raw(respond)`` starts a :class:`RawServer` answering with ``respond(sock)``; all close at the end."""
    from raw_socket_server import RawServer

    servers = []

    def start(respond):
        servers.append(RawServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
