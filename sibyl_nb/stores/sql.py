"""SQL store through SQLAlchemy: SQLite by default (a file under ``sibyl_home``), PostgreSQL in
production, with the seed's ``conversations`` schema (``table:`` honoured) and two tables beside it.

* ``<table>`` — the seed's row per session: ``session_id``, ``user_id``, ``messages`` (JSON/JSONB),
  ``metadata`` (the summary and bookkeeping live in ``metadata["sibyl"]``, beside the raw
  messages), ``created_at``, ``updated_at``, ``expires_at``.
* ``<table>_log`` — appends land here first, one row per message, so an append costs the same at
  10 messages and at 10,000 (rewriting a growing JSONB array per append is quadratic). Every
  ``COMPACT_EVERY`` appends, and on any rewrite (trim, summary), they are folded into ``messages``;
  a load always returns ``messages`` followed by the pending rows.
* ``kv_table`` (default ``sibyl_kv``) — the JSON key-value facet.

Every append runs under the session row's lock (PostgreSQL: one autocommit ``UPDATE ... RETURNING``
+ ``INSERT`` statement; SQLite: ``BEGIN IMMEDIATE``), so concurrent writers never lose or duplicate
a message and each writer's messages keep their order.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..errors import StoreError
from ..paths import sibyl_home
from .base import SessionData, Store, check_messages, mask_url, to_json

__all__ = ["SQLStore", "normalize_database_url"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
_SQLITE_FMT = "%Y-%m-%d %H:%M:%S.%f"


class _Retry(Exception):
    """A concurrent writer created the row first: run the transaction again."""


def normalize_database_url(url: str | None) -> str:
    """None/empty -> the SQLite default under ``sibyl_home``; ``postgres(ql)://`` -> psycopg 3 driver."""
    if not url:
        return f"sqlite:///{sibyl_home('sessions.db')}"
    url = str(url).strip()
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def _check_ident(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise StoreError(
            f"{what} {name!r} is not a plain SQL identifier (letters, digits, _; optional schema.)"
        )
    return name


class SQLStore(Store):
    """Sessions in ``table`` (default ``conversations``) and KV entries in ``kv_table``."""

    backend = "sql"
    COMPACT_EVERY = 64

    def __init__(
        self,
        database_url: str | None = None,
        *,
        table: str = "conversations",
        kv_table: str = "sibyl_kv",
        log_table: str | None = None,
        ttl: float | None = None,
        engine: Any = None,
        create_tables: bool = True,
    ) -> None:
        super().__init__(ttl=ttl)
        try:
            import sqlalchemy as sa
        except ImportError as exc:  # pragma: no cover - sqlalchemy is a declared extra
            raise StoreError("storage: database needs SQLAlchemy: pip install 'sibyl_nb[sql]'") from exc
        self._sa = sa
        url = normalize_database_url(database_url)
        self.url = mask_url(url)
        self.table = _check_ident(table or "conversations", "table")
        self.kv_table = _check_ident(kv_table or "sibyl_kv", "kv_table")
        self.log_table = _check_ident(log_table or f"{self.table}_log", "log_table")
        try:
            self._engine = engine or self._make_engine(url)
        except Exception as exc:  # bad URL, missing driver
            raise StoreError(
                f"sql store: cannot use database_url {self.url!r}: {exc}. Use e.g. "
                "postgresql://user@host:5432/db or sqlite:///path.db, or leave it unset for "
                "the embedded SQLite default"
            ) from exc
        self.dialect = self._engine.dialect.name
        prep = self._engine.dialect.identifier_preparer
        self._t = ".".join(prep.quote(p) for p in self.table.split("."))
        self._kv = ".".join(prep.quote(p) for p in self.kv_table.split("."))
        self._log = ".".join(prep.quote(p) for p in self.log_table.split("."))
        self._create = create_tables
        self._ready: set[str] = set()
        self._ready_lock = threading.Lock()
        self._ping()

    # ---------------------------------------------------------------- setup
    def _make_engine(self, url: str) -> Any:
        sa = self._sa
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

            @sa.event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=60000")
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _on_begin(conn: Any) -> None:
                # Take the write lock up front: no deadlocked read->write upgrades between writers.
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            return engine
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)

    def _ping(self) -> None:
        """Connect once now, so a wrong URL fails when the store is opened, not mid-run."""
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except self._sa.exc.SQLAlchemyError as exc:
            raise self._conn_error(exc) from exc

    def _ensure(self, facet: str) -> None:
        """Create a facet's tables on first use (a KV-only user never gets a conversations table)."""
        if facet in self._ready or not self._create:
            return
        with self._ready_lock:
            if facet not in self._ready:
                self._create_tables(facet)
                self._ready.add(facet)

    def _create_tables(self, facet: str) -> None:
        sa = self._sa
        from sqlalchemy.dialects.postgresql import JSONB

        js = sa.JSON().with_variant(JSONB(), "postgresql")
        md = sa.MetaData()

        def split(name: str) -> tuple[str | None, str]:
            return (name.split(".")[0], name.split(".")[1]) if "." in name else (None, name)

        if facet == "log":
            schema, name = split(self.table)
            sa.Table(
                name,
                md,
                sa.Column("session_id", sa.Text, primary_key=True),
                sa.Column("user_id", sa.Text),
                sa.Column("messages", js),
                sa.Column("metadata", js),
                sa.Column("created_at", sa.DateTime),
                sa.Column("updated_at", sa.DateTime),
                sa.Column("expires_at", sa.DateTime),
                schema=schema,
            )
            schema, name = split(self.log_table)
            big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY = rowid
            sa.Table(
                name,
                md,
                sa.Column("id", big, primary_key=True, autoincrement=True),
                sa.Column("session_id", sa.Text, nullable=False, index=True),
                sa.Column("message", js),
                schema=schema,
            )
        else:
            schema, name = split(self.kv_table)
            sa.Table(
                name,
                md,
                sa.Column("key", sa.Text, primary_key=True),
                sa.Column("value", js),
                sa.Column("updated_at", sa.DateTime),
                sa.Column("expires_at", sa.DateTime),
                schema=schema,
            )
        for attempt in range(3):
            try:
                md.create_all(self._engine, checkfirst=True)
                return
            except sa.exc.OperationalError as exc:
                raise self._conn_error(exc) from exc
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
                if attempt == 2:  # two processes creating the same table at once: retry the check
                    raise
                time.sleep(0.05)

    def _conn_error(self, exc: Exception) -> StoreError:
        hint = (
            "start PostgreSQL there, fix database_url / DATABASE_URL, or leave it unset for the "
            "embedded SQLite default"
            if self.dialect != "sqlite"
            else "check that the folder is writable (SIBYL_HOME)"
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(f"sql store at {self.url} is unavailable ({first}); {hint}")

    # ---------------------------------------------------------------- conversions
    def _ts(self, t: float | None) -> Any:
        if t is None:
            return None
        dt = datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)
        return dt.strftime(_SQLITE_FMT) if self.dialect == "sqlite" else dt

    @staticmethod
    def _epoch(v: Any) -> float | None:
        if v is None:
            return None
        if isinstance(v, str):
            v = datetime.fromisoformat(v)
        return v.replace(tzinfo=timezone.utc).timestamp()

    def _jcast(self, param: str) -> str:
        return f"CAST(:{param} AS JSONB)" if self.dialect == "postgresql" else f"json(:{param})"

    def _begin(self) -> Any:
        return self._engine.begin()

    def _exec(self, conn: Any, sql: str, many: list[dict[str, Any]] | None = None, **params: Any) -> Any:
        return conn.execute(self._sa.text(sql), many if many is not None else params)

    def _run(self, fn: Callable[[], Any], facet: str = "log") -> Any:
        sa = self._sa
        self._ensure(facet)
        for _ in range(100):
            try:
                return fn()
            except _Retry:
                continue
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                if self.dialect == "postgresql" and "could not serialize" in str(exc):
                    continue
                raise self._conn_error(exc) from exc
        raise StoreError(f"sql store at {self.url}: gave up after 100 conflicting concurrent writes")

    def _row_to_data(self, sid: str, row: Any) -> SessionData:
        meta = json.loads(row.metadata) if row.metadata else {}
        own = meta.pop("sibyl", {}) if isinstance(meta, dict) else {}
        own = own if isinstance(own, dict) else {}
        return SessionData(
            session_id=sid,
            messages=json.loads(row.messages) if row.messages else [],
            summary=own.get("summary", ""),
            summary_covers=int(own.get("summary_covers") or 0),
            metadata=meta,
            user_id=row.user_id,
            created_at=self._epoch(row.created_at) or 0.0,
            updated_at=self._epoch(row.updated_at) or 0.0,
            expires_at=self._epoch(row.expires_at),
        )

    def _lock_sql(self, mode: str | None) -> str:
        if self.dialect != "postgresql" or not mode:
            return ""  # SQLite: the whole transaction holds the write lock (BEGIN IMMEDIATE)
        return " FOR UPDATE" if mode == "update" else " FOR SHARE"

    def _select_session(self, conn: Any, sid: str, lock: str | None) -> Any:
        lock_sql = self._lock_sql(lock)
        return self._exec(
            conn,
            "SELECT user_id, CAST(messages AS TEXT) AS messages, CAST(metadata AS TEXT) "
            f"AS metadata, created_at, updated_at, expires_at FROM {self._t} "
            f"WHERE session_id = :sid{lock_sql}",
            sid=sid,
        ).first()

    # ---------------------------------------------------------------- message log
    def _fresh_meta(self) -> dict[str, Any]:
        return {"sibyl": {"summary": "", "summary_covers": 0, "count": 0, "pending": 0}}

    def _log_rows(self, conn: Any, sid: str) -> list[tuple[int, str]]:
        rows = self._exec(
            conn,
            f"SELECT id, CAST(message AS TEXT) AS message FROM {self._log} "
            "WHERE session_id = :sid ORDER BY id",
            sid=sid,
        )
        return [(int(r[0]), r[1]) for r in rows]

    def _read(self, conn: Any, sid: str, row: Any) -> SessionData:
        data = self._row_to_data(sid, row)
        data.messages.extend(json.loads(text) for _, text in self._log_rows(conn, sid))
        return data

    def _compact(self, conn: Any, sid: str) -> None:
        """Fold the session's pending log rows into ``messages`` (the row is locked by the caller)."""
        rows = self._log_rows(conn, sid)
        if not rows:
            return
        batch = "[" + ",".join(text for _, text in rows) + "]"
        if self.dialect == "postgresql":
            self._exec(
                conn,
                f"UPDATE {self._t} SET messages = COALESCE(messages, CAST('[]' AS JSONB)) || "
                "CAST(:b AS JSONB) WHERE session_id = :sid",
                b=batch,
                sid=sid,
            )
        else:
            old = (
                self._exec(
                    conn, f"SELECT CAST(messages AS TEXT) FROM {self._t} WHERE session_id = :sid", sid=sid
                ).scalar()
                or "[]"
            ).strip()
            text = batch if old in ("[]", "") else old[:-1] + "," + batch[1:]
            self._exec(
                conn,
                f"UPDATE {self._t} SET messages = {self._jcast('m')} WHERE session_id = :sid",
                m=text,
                sid=sid,
            )
        self._exec(
            conn, f"DELETE FROM {self._log} WHERE session_id = :sid AND id <= :top", sid=sid, top=rows[-1][0]
        )

    def _delete_session(self, conn: Any, sid: str) -> None:
        self._exec(conn, f"DELETE FROM {self._log} WHERE session_id = :sid", sid=sid)
        self._exec(conn, f"DELETE FROM {self._t} WHERE session_id = :sid", sid=sid)

    def load(self, session_id: str, *, touch: bool = True) -> SessionData | None:
        def go() -> SessionData | None:
            with self._begin() as conn:
                row = self._select_session(conn, session_id, lock="share")
                if row is None:
                    return None
                now = time.time()
                data = self._read(conn, session_id, row)
                if data.expired(now):
                    self._delete_session(conn, session_id)
                    return None
                if touch and self.ttl is not None:
                    data.expires_at = now + self.ttl
                    self._exec(
                        conn,
                        f"UPDATE {self._t} SET expires_at = :exp WHERE session_id = :sid",
                        exp=self._ts(data.expires_at),
                        sid=session_id,
                    )
                return data

        return self._run(go)

    def append(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        user_id: str | None = None,
        ttl: float | None = None,
    ) -> int:
        """One row per message in ``<table>_log`` (O(1) whatever the history length), under the
        session row's lock; every ``COMPACT_EVERY`` appends they are folded into ``messages``."""
        texts = [to_json(m) for m in check_messages(messages)]
        if self.dialect == "postgresql" and texts:
            n = self._run(lambda: self._append_pg(session_id, texts, user_id, ttl))
            if n is not None:
                return n

        def go() -> int:
            with self._begin() as conn:
                sid = session_id
                now = time.time()
                row = self._exec(
                    conn,
                    f"SELECT CAST(metadata AS TEXT) AS metadata, expires_at FROM {self._t} "
                    f"WHERE session_id = :sid{self._lock_sql('update')}",
                    sid=sid,
                ).first()
                sets = [
                    "metadata = " + self._jcast("meta"),
                    "updated_at = :now",
                    "user_id = COALESCE(:uid, user_id)",
                ]
                if row is None:
                    meta = self._fresh_meta()
                    res = self._exec(
                        conn,
                        f"INSERT INTO {self._t} (session_id, user_id, messages, metadata, "
                        f"created_at, updated_at, expires_at) VALUES (:sid, :uid, "
                        f"{self._jcast('empty')}, {self._jcast('meta')}, :now, :now, NULL) "
                        "ON CONFLICT (session_id) DO NOTHING",
                        sid=sid,
                        uid=user_id,
                        empty="[]",
                        meta=to_json(meta),
                        now=self._ts(now),
                    )
                    if res.rowcount == 0:
                        raise _Retry
                else:
                    exp_old = self._epoch(row.expires_at)
                    if exp_old is not None and exp_old <= now:  # expired: start a fresh session
                        self._exec(conn, f"DELETE FROM {self._log} WHERE session_id = :sid", sid=sid)
                        meta = self._fresh_meta()
                        sets += [
                            f"messages = {self._jcast('empty')}",
                            "created_at = :now",
                            "expires_at = NULL",
                        ]
                    else:
                        meta = json.loads(row.metadata) if row.metadata else {}
                own = meta.setdefault("sibyl", {})
                if texts:
                    self._exec(
                        conn,
                        f"INSERT INTO {self._log} (session_id, message) VALUES (:sid, {self._jcast('m')})",
                        [{"sid": sid, "m": t} for t in texts],
                    )
                own["count"] = int(own.get("count") or 0) + len(texts)
                own["pending"] = int(own.get("pending") or 0) + len(texts)
                if own["pending"] >= self.COMPACT_EVERY:
                    self._compact(conn, sid)
                    own["pending"] = 0
                exp = self._expiry(now, ttl)
                if exp is not None:
                    sets.append("expires_at = :exp")
                self._exec(
                    conn,
                    f"UPDATE {self._t} SET {', '.join(sets)} WHERE session_id = :sid",
                    sid=sid,
                    meta=to_json(meta),
                    now=self._ts(now),
                    uid=user_id,
                    exp=self._ts(exp),
                    empty="[]",
                )
                return own["count"]

        return self._run(go)

    def _append_pg(self, sid: str, texts: list[str], user_id: str | None, ttl: float | None) -> int | None:
        """PostgreSQL fast path for a live session: one autocommit statement (row lock held for one
        round trip). None when the session is new or expired: the caller takes the general path."""
        now = time.time()
        exp = self._expiry(now, ttl)
        exp_sql = ":exp" if exp is not None else "c.expires_at"
        sql = (
            f"WITH s AS (UPDATE {self._t} AS c SET updated_at = :now, user_id = COALESCE(:uid, c.user_id), "
            f"expires_at = {exp_sql}, metadata = jsonb_set(COALESCE(c.metadata, CAST('{{}}' AS JSONB)), "
            "'{sibyl}', COALESCE(c.metadata->'sibyl', CAST('{}' AS JSONB)) || jsonb_build_object("
            "'count', COALESCE(CAST(c.metadata->'sibyl'->>'count' AS BIGINT), 0) + :k, "
            "'pending', COALESCE(CAST(c.metadata->'sibyl'->>'pending' AS BIGINT), 0) + :k)) "
            "WHERE c.session_id = :sid AND (c.expires_at IS NULL OR c.expires_at > :now) "
            "RETURNING CAST(c.metadata->'sibyl'->>'count' AS BIGINT) AS n, "
            "CAST(c.metadata->'sibyl'->>'pending' AS BIGINT) AS p), "
            f"ins AS (INSERT INTO {self._log} (session_id, message) SELECT :sid, x.m FROM s CROSS JOIN "
            "jsonb_array_elements(CAST(:msgs AS JSONB)) WITH ORDINALITY AS x(m, i) ORDER BY x.i) "
            "SELECT n, p FROM s"
        )
        with self._engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            row = self._exec(
                conn,
                sql,
                now=self._ts(now),
                uid=user_id,
                exp=self._ts(exp),
                k=len(texts),
                sid=sid,
                msgs="[" + ",".join(texts) + "]",
            ).first()
        if row is None:
            return None
        if int(row.p) >= self.COMPACT_EVERY:
            self._run(lambda: self._compact_txn(sid))
        return int(row.n)

    def _compact_txn(self, sid: str) -> None:
        with self._begin() as conn:
            row = self._exec(
                conn,
                f"SELECT CAST(metadata AS TEXT) AS metadata FROM {self._t} "
                f"WHERE session_id = :sid{self._lock_sql('update')}",
                sid=sid,
            ).first()
            if row is None:
                return
            self._compact(conn, sid)
            meta = json.loads(row.metadata) if row.metadata else {}
            meta.setdefault("sibyl", {})["pending"] = 0
            self._exec(
                conn,
                f"UPDATE {self._t} SET metadata = {self._jcast('meta')} WHERE session_id = :sid",
                meta=to_json(meta),
                sid=sid,
            )

    def _rmw(
        self, session_id: str, fn: Callable[[SessionData | None], SessionData | None]
    ) -> SessionData | None:
        def go() -> SessionData | None:
            with self._begin() as conn:
                row = self._select_session(conn, session_id, lock="update")
                cur = None
                if row is not None:
                    cur = self._read(conn, session_id, row)
                    if cur.expired():
                        cur = None
                new = fn(cur)
                if new is None:
                    if row is not None:
                        self._delete_session(conn, session_id)
                    return None
                meta = dict(new.metadata)
                meta["sibyl"] = {
                    "summary": new.summary,
                    "summary_covers": new.summary_covers,
                    "count": len(new.messages),
                    "pending": 0,
                }
                params = {
                    "sid": session_id,
                    "uid": new.user_id,
                    "msgs": to_json(new.messages),
                    "meta": to_json(meta),
                    "c": self._ts(new.created_at),
                    "u": self._ts(new.updated_at),
                    "e": self._ts(new.expires_at),
                }
                if row is not None:
                    self._exec(conn, f"DELETE FROM {self._log} WHERE session_id = :sid", sid=session_id)
                    self._exec(
                        conn,
                        f"UPDATE {self._t} SET user_id = :uid, messages = {self._jcast('msgs')}, "
                        f"metadata = {self._jcast('meta')}, created_at = :c, updated_at = :u, "
                        "expires_at = :e WHERE session_id = :sid",
                        **params,
                    )
                else:
                    res = self._exec(
                        conn,
                        f"INSERT INTO {self._t} (session_id, user_id, messages, metadata, "
                        "created_at, updated_at, expires_at) VALUES (:sid, :uid, "
                        f"{self._jcast('msgs')}, {self._jcast('meta')}, :c, :u, :e) "
                        "ON CONFLICT (session_id) DO NOTHING",
                        **params,
                    )
                    if res.rowcount == 0:
                        raise _Retry
                return new

        return self._run(go)

    def expire(self, session_id: str, ttl: float | None) -> bool:
        def go() -> bool:
            with self._begin() as conn:
                now = time.time()
                live = "session_id = :sid AND (expires_at IS NULL OR expires_at > :now)"
                if ttl is not None and ttl <= 0:
                    found = self._exec(
                        conn, f"SELECT 1 FROM {self._t} WHERE {live}", sid=session_id, now=self._ts(now)
                    ).first()
                    self._delete_session(conn, session_id)
                    return found is not None
                res = self._exec(
                    conn,
                    f"UPDATE {self._t} SET expires_at = :exp WHERE {live}",
                    sid=session_id,
                    now=self._ts(now),
                    exp=self._ts(None if ttl is None else now + ttl),
                )
                return res.rowcount > 0

        return self._run(go)

    def delete(self, session_id: str) -> bool:
        def go() -> bool:
            with self._begin() as conn:
                now = self._ts(time.time())
                live = self._exec(
                    conn,
                    f"SELECT 1 FROM {self._t} WHERE session_id = :sid AND "
                    "(expires_at IS NULL OR expires_at > :now)",
                    sid=session_id,
                    now=now,
                ).first()
                self._delete_session(conn, session_id)
                return live is not None

        return self._run(go)

    def sessions(self) -> list[str]:
        def go() -> list[str]:
            with self._engine.connect() as conn:
                rows = self._exec(
                    conn,
                    f"SELECT session_id FROM {self._t} WHERE expires_at IS NULL OR "
                    "expires_at > :now ORDER BY session_id",
                    now=self._ts(time.time()),
                )
                return sorted(r[0] for r in rows)

        return self._run(go)

    def purge_expired(self) -> int:
        def go() -> int:
            with self._begin() as conn:
                now = self._ts(time.time())
                expired = "expires_at IS NOT NULL AND expires_at <= :now"
                self._exec(
                    conn,
                    f"DELETE FROM {self._log} WHERE session_id IN "
                    f"(SELECT session_id FROM {self._t} WHERE {expired})",
                    now=now,
                )
                n = self._exec(conn, f"DELETE FROM {self._t} WHERE {expired}", now=now).rowcount
                self._exec(conn, f"DELETE FROM {self._kv} WHERE {expired}", now=now)
                return int(n)

        self._ensure("kv")
        return self._run(go)

    # ---------------------------------------------------------------- key-value
    def _kv_row(self, conn: Any, key: str, lock: bool) -> Any:
        lock_sql = self._lock_sql("update" if lock else None)
        return self._exec(
            conn,
            f'SELECT CAST(value AS TEXT) AS value, expires_at FROM {self._kv} WHERE "key" = :k{lock_sql}',
            k=key,
        ).first()

    def kv_get(self, key: str, default: Any = None) -> Any:
        def go() -> Any:
            with self._engine.connect() as conn:
                row = self._kv_row(conn, key, lock=False)
            if row is None:
                return default
            exp = self._epoch(row.expires_at)
            if exp is not None and exp <= time.time():
                return default
            return json.loads(row.value)

        return self._run(go, "kv")

    def kv_put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        now = time.time()
        params = {
            "k": key,
            "v": to_json(value),
            "u": self._ts(now),
            "e": self._ts(None if ttl is None else now + float(ttl)),
        }

        def go() -> None:
            with self._begin() as conn:
                self._exec(
                    conn,
                    f'INSERT INTO {self._kv} ("key", value, updated_at, expires_at) VALUES '
                    f'(:k, {self._jcast("v")}, :u, :e) ON CONFLICT ("key") DO UPDATE SET '
                    "value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, "
                    "expires_at = EXCLUDED.expires_at",
                    **params,
                )

        self._run(go, "kv")

    def kv_update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        def go() -> Any:
            with self._begin() as conn:
                row = self._kv_row(conn, key, lock=True)
                now = time.time()
                old_exp = self._epoch(row.expires_at) if row is not None else None
                live = row is not None and (old_exp is None or old_exp > now)
                cur = json.loads(row.value) if live else json.loads(to_json(default))
                new = fn(cur)
                exp = now + float(ttl) if ttl is not None else (old_exp if live else None)
                params = {"k": key, "v": to_json(new), "u": self._ts(now), "e": self._ts(exp)}
                if row is not None:
                    self._exec(
                        conn,
                        f"UPDATE {self._kv} SET value = {self._jcast('v')}, updated_at = :u, "
                        'expires_at = :e WHERE "key" = :k',
                        **params,
                    )
                else:
                    res = self._exec(
                        conn,
                        f'INSERT INTO {self._kv} ("key", value, updated_at, expires_at) '
                        f"VALUES (:k, {self._jcast('v')}, :u, :e) "
                        'ON CONFLICT ("key") DO NOTHING',
                        **params,
                    )
                    if res.rowcount == 0:
                        raise _Retry
                return new

        return self._run(go, "kv")

    def kv_delete(self, key: str) -> bool:
        def go() -> bool:
            with self._begin() as conn:
                now = self._ts(time.time())
                live = self._exec(
                    conn,
                    f'SELECT 1 FROM {self._kv} WHERE "key" = :k AND '
                    "(expires_at IS NULL OR expires_at > :now)",
                    k=key,
                    now=now,
                ).first()
                self._exec(conn, f'DELETE FROM {self._kv} WHERE "key" = :k', k=key)
                return live is not None

        return self._run(go, "kv")

    def kv_keys(self, prefix: str = "") -> list[str]:
        pat = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        def go() -> list[str]:
            with self._engine.connect() as conn:
                rows = self._exec(
                    conn,
                    f'SELECT "key" FROM {self._kv} WHERE "key" LIKE :pat ESCAPE \'\\\' '
                    'AND substr("key", 1, :n) = :p AND (expires_at IS NULL OR expires_at > :now)',
                    pat=pat,
                    n=len(prefix),
                    p=prefix,
                    now=self._ts(time.time()),
                )
                return sorted(r[0] for r in rows)

        return self._run(go, "kv")

    # ---------------------------------------------------------------- lifecycle
    def drop_tables(self) -> None:
        """Drop this store's three tables (tests, teardown)."""
        with self._begin() as conn:
            self._exec(conn, f"DROP TABLE IF EXISTS {self._t}")
            self._exec(conn, f"DROP TABLE IF EXISTS {self._log}")
            self._exec(conn, f"DROP TABLE IF EXISTS {self._kv}")
        self._ready.clear()

    def close(self) -> None:
        self._engine.dispose()
