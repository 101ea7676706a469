"""SQL store through SQLAlchemy Core: SQLite by default (a file under ``sibyl_home``), PostgreSQL in
production, with the seed's ``conversations`` schema (``table:`` honoured).

Layout (``T`` is ``table:``, default ``conversations``):

* ``T_sessions`` — one row per session: ``user_id``, ``metadata``, ``summary``, ``summary_covers``,
  the message sequence range ``first_seq`` .. ``next_seq`` (exclusive), ``created_at``,
  ``updated_at``, ``expires_at``.
* ``T_messages`` — one row per message, keyed ``(session_id, seq)``. An append inserts its rows and
  bumps ``next_seq``: it costs the same at 10 messages and at 100,000, and a turn reads only the
  newest rows it needs (``load(last=n)`` is an index range scan).
* ``T`` — a **view** with exactly the seed's columns (``session_id, user_id, messages, metadata,
  created_at, updated_at, expires_at``, plus ``summary``): ``SELECT messages FROM conversations``
  shows each session's current messages, in order, after every turn.
* ``kv_table`` (default ``sibyl_kv``) — the JSON key-value facet.

Reads: a load is one statement (the session row joined to its newest message rows: one snapshot,
one index range scan) in autocommit mode, so it takes no lock and costs one round trip; it writes
the refreshed expiry only when the stored one is stale by more than 1% of the TTL (the turn's
append refreshes it anyway), and on PostgreSQL without waiting for the WAL flush. Pooled
connections are pinged only after a second unused, not on every checkout.

Locking: every write transaction locks exactly one session row (the first statement is an
``UPDATE`` or ``SELECT ... FOR UPDATE`` of it; SQLite takes its write lock at ``BEGIN IMMEDIATE``)
and touches message rows only under that lock. One lock per transaction cannot form a cycle, so
concurrent turns do not deadlock; a deadlock or serialisation failure the database still reports
(another program's transaction) is retried with backoff by tenacity, then reported as what it is.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import tenacity

from ..errors import StoreError, StoreUnavailableError
from ..paths import sibyl_home
from .base import Message, SessionData, Store, check_messages, check_url, mask_url, scrub, to_json

__all__ = ["SQLStore", "normalize_database_url", "FastKVPut"]

# Plain identifiers only (no schema qualification: ``pg_catalog.pg_class`` is refused). 54 characters
# leaves room for the ``_sessions`` / ``_messages`` suffixes within PostgreSQL's 63.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,53}")
_RETRY_STATES = {"40P01": "deadlock detected", "40001": "serialisation failure"}
_ATTEMPTS = 12
_PING_AFTER = 1.0  # seconds a pooled connection may sit unused before its next checkout pings it
_ONE_STATEMENT = 16  # an append of at most this many messages is one multi-row INSERT


class _Conflict(Exception):
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


def _check_ident(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise StoreError(
            f"{what} {name!r} is not a plain SQL table name (a letter or _, then letters, digits or _, "
            "at most 54 characters; no schema prefix, quotes or dots)"
        )
    return name


def _dt(t: float | None) -> datetime | None:
    """Unix seconds -> naive UTC datetime (what the DateTime columns hold on both dialects)."""
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)


def _epoch(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v.replace(tzinfo=timezone.utc).timestamp()


_SEED_COLUMNS = {"session_id", "user_id", "messages", "metadata", "created_at", "updated_at", "expires_at"}


def _as_dt(v: Any) -> datetime | None:
    """A timestamp read back from the older layout (a datetime, or SQLite's text form)."""
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v))


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


class SQLStore(Store):
    """Sessions in ``table`` (default ``conversations``; see the module docstring) and KV in ``kv_table``."""

    backend = "sql"

    def __init__(
        self,
        database_url: str | None = None,
        *,
        table: str = "conversations",
        kv_table: str = "sibyl_kv",
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
        if engine is None:
            check_url(url, ("sqlite", "postgresql", "mysql", "mariadb"), "database_url")
        try:
            self._engine = engine or self._make_engine(url)
        except Exception as exc:  # bad URL, missing driver; the driver's text may quote the password
            raise StoreError(
                f"sql store: cannot use database_url {self.url!r}: {scrub(str(exc), url)}. Use e.g. "
                "postgresql://user@host:5432/db or sqlite:///path.db, or leave it unset for "
                "the embedded SQLite default"
            ) from None
        self._raw_url = url
        self.dialect = self._engine.dialect.name
        self._define_tables()
        self._create = create_tables
        self._ready: set[str] = set()
        self._ready_lock = threading.Lock()
        self._ping()

    # ---------------------------------------------------------------- setup
    def _make_engine(self, url: str) -> Any:
        sa = self._sa
        kw: dict[str, Any] = {"json_serializer": to_json, "json_deserializer": json.loads}
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kw)

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
                # (Not for a read: it is one statement in autocommit mode, consistent on its own.)
                if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")

            return engine
        engine = sa.create_engine(url, pool_size=10, max_overflow=20, **kw)
        dialect = engine.dialect

        # pool_pre_ping would ping on every checkout: a round trip per transaction, two per turn. A
        # connection back in the pool for under _PING_AFTER seconds was just working; an older one is
        # pinged, and a dead one replaced (DisconnectionError makes the pool open a fresh connection).
        @sa.event.listens_for(engine, "checkout")
        def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            if time.monotonic() - record.info.get("sibyl_checkin", float("-inf")) <= _PING_AFTER:
                return
            try:
                alive = dialect.do_ping(dbapi_conn)
            except Exception:  # the driver's own error for a dropped connection
                alive = False
            if not alive:
                raise sa.exc.DisconnectionError("connection closed by the server")

        @sa.event.listens_for(engine, "checkin")
        def _stamp(_dbapi_conn: Any, record: Any) -> None:
            record.info["sibyl_checkin"] = time.monotonic()

        return engine

    def _define_tables(self) -> None:
        sa = self._sa
        from sqlalchemy.dialects.postgresql import JSONB

        js = sa.JSON().with_variant(JSONB(), "postgresql")
        big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
        self._md = md = sa.MetaData()
        self._s = sa.Table(
            f"{self.table}_sessions",
            md,
            sa.Column("session_id", sa.Text, primary_key=True),
            sa.Column("user_id", sa.Text),
            sa.Column("metadata", js),
            sa.Column("summary", sa.Text, nullable=False, default=""),
            sa.Column("summary_covers", big, nullable=False, default=0),
            sa.Column("first_seq", big, nullable=False),
            sa.Column("next_seq", big, nullable=False),
            sa.Column("created_at", sa.DateTime),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("expires_at", sa.DateTime),
        )
        self._m = sa.Table(
            f"{self.table}_messages",
            md,
            sa.Column("session_id", sa.Text, primary_key=True),
            sa.Column("seq", big, primary_key=True, autoincrement=False),
            sa.Column("message", js, nullable=False),
        )
        self._kvt = sa.Table(
            self.kv_table,
            md,
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("value", js),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("expires_at", sa.DateTime),
        )

    def _ping(self) -> None:
        """Connect once now, so a wrong URL fails when the store is opened, not mid-run."""
        try:
            with self._engine.connect() as conn:
                conn.execute(self._sa.select(self._sa.literal(1)))
        except self._sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from None

    def _ensure(self, facet: str) -> None:
        """Create a facet's tables on first use (a KV-only user never gets a conversations table)."""
        if facet in self._ready or not self._create:
            return
        with self._ready_lock:
            if facet not in self._ready:
                self._create_tables(facet)
                self._ready.add(facet)

    def _view_sql(self) -> str:
        q = self._engine.dialect.identifier_preparer.quote
        view, s, m = q(self.table), q(self._s.name), q(self._m.name)
        if self.dialect == "postgresql":
            messages = (
                f"COALESCE((SELECT jsonb_agg(m.message ORDER BY m.seq) FROM {m} AS m "
                "WHERE m.session_id = s.session_id), CAST('[]' AS JSONB))"
            )
            head = f"CREATE OR REPLACE VIEW {view}"
        else:
            messages = (
                f"(SELECT json_group_array(json(o.message)) FROM (SELECT m.message FROM {m} AS m "
                "WHERE m.session_id = s.session_id ORDER BY m.seq) AS o)"
            )
            head = f"CREATE VIEW IF NOT EXISTS {view}"
        return (
            f"{head} AS SELECT s.session_id AS session_id, s.user_id AS user_id, {messages} AS messages, "
            "s.metadata AS metadata, s.created_at AS created_at, s.updated_at AS updated_at, "
            f"s.expires_at AS expires_at, s.summary AS summary FROM {s} AS s"
        )

    def _create_tables(self, facet: str) -> None:
        sa = self._sa
        tables = [self._s, self._m] if facet == "log" else [self._kvt]
        for attempt in range(5):
            try:
                self._md.create_all(self._engine, tables=tables, checkfirst=True)
                if facet == "log":
                    self._create_view()
                return
            except sa.exc.OperationalError as exc:
                raise self._error(exc) from None
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.InternalError):
                if attempt == 4:  # two processes creating the same table at once: retry the check
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _create_view(self) -> None:
        sa = self._sa
        if self.table in sa.inspect(self._engine).get_view_names():
            return
        with self._engine.begin() as conn:
            insp = sa.inspect(conn)  # on this connection: SQLite's write lock is already ours
            if self.table in insp.get_view_names():
                return
            if self.table in insp.get_table_names():
                cols = {c["name"] for c in insp.get_columns(self.table)}
                if not cols >= _SEED_COLUMNS:
                    raise StoreError(
                        f"sql store at {self.url}: {self.table!r} is a table, but this store keeps it as a "
                        f"view over {self._s.name!r} and {self._m.name!r} (see sibyl_nb.stores.sql), and it "
                        "does not have the seed's columns to migrate. Rename or drop the old table, or "
                        "choose another table: name"
                    )
                self._migrate(conn, has_log=f"{self.table}_log" in insp.get_table_names())
            conn.exec_driver_sql(self._view_sql())

    def _migrate(self, conn: Any, *, has_log: bool) -> None:
        """Move sessions from the older layout (a ``T`` table holding each session's messages as one
        JSON array, plus pending appends in ``T_log``) into this one, in the same transaction that
        creates the view, then drop the old tables. Nothing is lost: messages, then pending rows."""
        sa = self._sa
        q = self._engine.dialect.identifier_preparer.quote
        old, log = q(self.table), q(f"{self.table}_log")
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE")
        rows = conn.exec_driver_sql(
            "SELECT session_id, user_id, CAST(messages AS TEXT), CAST(metadata AS TEXT), created_at, "
            f"updated_at, expires_at FROM {old}"  # noqa: S608 - identifiers checked plain and quoted
        ).all()
        for sid, uid, msgs_text, meta_text, created, updated, expires in rows:
            msgs = json.loads(msgs_text) if msgs_text else []
            if has_log:
                pending = conn.exec_driver_sql(
                    f"SELECT CAST(message AS TEXT) FROM {log} WHERE session_id = %s ORDER BY id"  # noqa: S608
                    if self.dialect == "postgresql"
                    else f"SELECT CAST(message AS TEXT) FROM {log} WHERE session_id = ? ORDER BY id",  # noqa: S608
                    (sid,),
                ).scalars()
                msgs.extend(json.loads(t) for t in pending)
            meta = json.loads(meta_text) if meta_text else {}
            own = meta.pop("sibyl", {}) if isinstance(meta, dict) else {}
            own = own if isinstance(own, dict) else {}
            conn.execute(
                sa.insert(self._s).values(
                    session_id=sid,
                    user_id=uid,
                    metadata=meta if isinstance(meta, dict) else {},
                    summary=str(own.get("summary") or ""),
                    summary_covers=int(own.get("summary_covers") or 0),
                    first_seq=0,
                    next_seq=len(msgs),
                    created_at=_as_dt(created),
                    updated_at=_as_dt(updated),
                    expires_at=_as_dt(expires),
                )
            )
            if msgs:
                conn.execute(
                    sa.insert(self._m),
                    [{"session_id": sid, "seq": i, "message": m} for i, m in enumerate(msgs)],
                )
        if has_log:
            conn.exec_driver_sql(f"DROP TABLE {log}")
        conn.exec_driver_sql(f"DROP TABLE {old}")

    def _error(self, exc: BaseException, attempts: int = 1) -> StoreError:
        """A StoreError that says what happened: a deadlock is not an unavailable server."""
        text = scrub(str(exc).strip(), self._raw_url)
        first = text.splitlines()[0] if text else type(exc).__name__
        state = _sqlstate(exc)
        if state in _RETRY_STATES:
            return StoreError(
                f"sql store at {self.url}: {_RETRY_STATES[state]} on every one of {attempts} attempts "
                f"({first}); another program is holding conflicting locks on these tables"
            )
        sa = self._sa
        down = isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) and (
            self.dialect != "sqlite"
            and ("connect" in text.lower() or getattr(exc, "connection_invalidated", 0))
        )
        if down:
            return StoreUnavailableError(
                f"sql store at {self.url} is unavailable ({first}); start PostgreSQL there, fix "
                "database_url / DATABASE_URL, or leave it unset for the embedded SQLite default"
            )
        hint = "; check that the folder is writable (SIBYL_HOME)" if self.dialect == "sqlite" else ""
        return StoreError(f"sql store at {self.url} failed ({first}){hint}")

    # ---------------------------------------------------------------- running a transaction
    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, _Conflict) or _sqlstate(exc) in _RETRY_STATES

    def _run(self, fn: Callable[[Any], Any], facet: str = "log", *, txn: bool = True) -> Any:
        """Run ``fn(conn)`` in one transaction (or a plain connection), retried on conflicts."""
        sa = self._sa
        self._ensure(facet)

        def once() -> Any:
            if txn:
                with self._engine.begin() as conn:
                    return fn(conn)
            with self._engine.connect() as conn:  # a read: no BEGIN / COMMIT round trips, no lock
                return fn(conn.execution_options(isolation_level="AUTOCOMMIT"))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._retryable),
            stop=tenacity.stop_after_attempt(_ATTEMPTS),
            wait=tenacity.wait_random_exponential(multiplier=0.005, max=0.25),
            reraise=True,
        )
        try:
            return retrying(once)
        except _Conflict:
            raise StoreError(
                f"sql store at {self.url}: gave up after {_ATTEMPTS} conflicting concurrent writes"
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc, _ATTEMPTS) from None

    def _insert(self, table: Any) -> Any:
        """The dialect's INSERT, which knows ``ON CONFLICT``."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _live(self, sid: str, now: float) -> Any:
        s = self._s.c
        return self._sa.and_(
            s.session_id == sid, self._sa.or_(s.expires_at.is_(None), s.expires_at > _dt(now))
        )

    def _expired(self, sid: str, now: float) -> Any:
        s = self._s.c
        return self._sa.and_(s.session_id == sid, s.expires_at.is_not(None), s.expires_at <= _dt(now))

    def _drop_expired(self, conn: Any, sid: str, now: float) -> bool:
        """Delete the session if (and only if) it has expired; True if it did."""
        sa = self._sa
        if conn.execute(sa.delete(self._s).where(self._expired(sid, now))).rowcount:
            conn.execute(sa.delete(self._m).where(self._m.c.session_id == sid))
            return True
        return False

    def _messages(self, conn: Any, sid: str, lo: int, hi: int) -> list[Message]:
        m = self._m.c
        rows = conn.execute(
            self._sa.select(m.message).where(m.session_id == sid, m.seq >= lo, m.seq < hi).order_by(m.seq)
        )
        return list(rows.scalars())

    def _data(self, sid: str, row: Any, messages: list[Message]) -> SessionData:
        return SessionData(
            session_id=sid,
            messages=messages,
            summary=row.summary or "",
            summary_covers=int(row.summary_covers or 0),
            metadata=dict(
                (json.loads(row.metadata) if isinstance(row.metadata, str) else row.metadata) or {}
            ),
            user_id=row.user_id,
            created_at=_epoch(row.created_at) or 0.0,
            updated_at=_epoch(row.updated_at) or 0.0,
            expires_at=_epoch(row.expires_at),
            total=int(row.next_seq - row.first_seq),
            first_seq=int(row.first_seq),
        )

    # ---------------------------------------------------------------- message log
    def load(self, session_id: str, *, touch: bool = True, last: int | None = None) -> SessionData | None:
        """One statement (the session row joined to its newest ``last`` message rows, one snapshot) in
        autocommit mode; the expiry is written only when it is older than :meth:`Store.needs_touch` allows."""
        sa = self._sa
        s, m = self._s, self._m

        def read(conn: Any) -> list[Any]:
            if last is None:
                lo = s.c.first_seq
            else:
                back = s.c.next_seq - max(0, int(last))
                lo = sa.case((back < s.c.first_seq, s.c.first_seq), else_=back)
            on = sa.and_(m.c.session_id == s.c.session_id, m.c.seq >= lo, m.c.seq < s.c.next_seq)
            # The session's columns repeat on every row: read them raw (no per-row datetime / JSON
            # processing; metadata as text) and decode them once, from the first row, in _data.
            raw = sa.types.NullType()
            cols = [
                sa.cast(c, sa.Text).label(c.name)
                if c.name == "metadata"
                else sa.type_coerce(c, raw).label(c.name)
                for c in s.c
            ]
            stmt = (
                # messages as text, parsed here: psycopg's jsonb loader would detect an encoding per row
                sa.select(*cols, sa.cast(m.c.message, sa.Text).label("sibyl_message"))
                .select_from(s.outerjoin(m, on))
                .where(self._live(session_id, time.time()))
                .order_by(m.c.seq)
            )
            return list(conn.execute(stmt).all())

        rows = self._run(read, txn=False)
        now = time.time()
        if not rows:
            self._run(lambda conn: self._drop_expired(conn, session_id, now))
            return None
        loads = json.loads
        data = self._data(
            session_id, rows[0], [loads(r.sibyl_message) for r in rows if r.sibyl_message is not None]
        )
        if touch and self.needs_touch(data.expires_at, now):
            assert self.ttl is not None
            exp = now + self.ttl

            def refresh(conn: Any) -> None:
                if self.dialect == "postgresql":
                    # Only the expiry changes: a server crash may forget the refresh (the session then
                    # keeps its previous expiry), which is not worth a WAL flush.
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                conn.execute(sa.update(s).where(self._live(session_id, now)).values(expires_at=_dt(exp)))

            self._run(refresh)
            data.expires_at = exp
        return data

    def append(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        user_id: str | None = None,
        ttl: float | None = None,
    ) -> int:
        msgs = check_messages(messages)
        for msg in msgs:
            to_json(msg)
        sa = self._sa
        s = self._s
        k = len(msgs)

        def go(conn: Any) -> int:
            now = time.time()
            exp = self._expiry(now, ttl)
            values: dict[str, Any] = {"next_seq": s.c.next_seq + k, "updated_at": _dt(now)}
            if user_id is not None:
                values["user_id"] = user_id
            if exp is not None:
                values["expires_at"] = _dt(exp)
            stmt = sa.update(s).where(self._live(session_id, now)).values(**values)
            row = conn.execute(stmt.returning(s.c.first_seq, s.c.next_seq)).first()
            if row is None:  # absent, or expired: start a fresh session
                self._drop_expired(conn, session_id, now)
                ins = (
                    self._insert(s)
                    .values(
                        session_id=session_id,
                        user_id=user_id,
                        metadata={},
                        summary="",
                        summary_covers=0,
                        first_seq=0,
                        next_seq=k,
                        created_at=_dt(now),
                        updated_at=_dt(now),
                        expires_at=_dt(exp),
                    )
                    .on_conflict_do_nothing(index_elements=["session_id"])
                    .returning(s.c.session_id)  # rowcount is -1 on psycopg: ask for the row instead
                )
                if conn.execute(ins).first() is None:
                    raise _Conflict
                first, nxt = 0, k
            else:
                first, nxt = int(row.first_seq), int(row.next_seq)
            if msgs:
                start = nxt - k
                rows = [
                    {"session_id": session_id, "seq": start + i, "message": m} for i, m in enumerate(msgs)
                ]
                if (
                    k <= _ONE_STATEMENT
                ):  # a turn's few rows: one INSERT ... VALUES (...), (...), one round trip
                    conn.execute(sa.insert(self._m).values(rows))
                else:  # a bulk load: the driver's batched executemany
                    conn.execute(sa.insert(self._m), rows)
            return nxt - first

        return self._run(go)

    def _lock(self, conn: Any, sid: str, now: float) -> Any:
        """The live session row, locked for this transaction (None if absent or expired)."""
        stmt = self._sa.select(self._s).where(self._live(sid, now))
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update()
        return conn.execute(stmt).first()

    def _rmw(
        self, session_id: str, fn: Callable[[SessionData | None], SessionData | None]
    ) -> SessionData | None:
        sa = self._sa
        s, m = self._s, self._m

        def go(conn: Any) -> SessionData | None:
            now = time.time()
            row = self._lock(conn, session_id, now)
            cur = None
            if row is not None:
                cur = self._data(
                    session_id, row, self._messages(conn, session_id, row.first_seq, row.next_seq)
                )
            else:
                self._drop_expired(conn, session_id, now)
            new = fn(cur)
            if new is None:
                if row is not None:
                    conn.execute(sa.delete(m).where(m.c.session_id == session_id))
                    conn.execute(sa.delete(s).where(s.c.session_id == session_id))
                return None
            start = int(row.next_seq) if row is not None else 0  # seqs keep growing across rewrites
            values = {
                "user_id": new.user_id,
                "metadata": new.metadata,
                "summary": new.summary,
                "summary_covers": new.summary_covers,
                "first_seq": start,
                "next_seq": start + len(new.messages),
                "created_at": _dt(new.created_at),
                "updated_at": _dt(new.updated_at),
                "expires_at": _dt(new.expires_at),
            }
            if row is not None:
                conn.execute(sa.delete(m).where(m.c.session_id == session_id))
                conn.execute(sa.update(s).where(s.c.session_id == session_id).values(**values))
            else:
                ins = self._insert(s).values(session_id=session_id, **values)
                ins = ins.on_conflict_do_nothing(index_elements=["session_id"]).returning(s.c.session_id)
                if conn.execute(ins).first() is None:
                    raise _Conflict
            if new.messages:
                conn.execute(
                    sa.insert(m),
                    [
                        {"session_id": session_id, "seq": start + i, "message": msg}
                        for i, msg in enumerate(new.messages)
                    ],
                )
            new.total = len(new.messages)
            new.first_seq = start
            return new

        return self._run(go)

    def trim(
        self, session_id: str, keep_last: int, *, fold: Callable[[str, list[Message]], str] | None = None
    ) -> list[Message]:
        """Drop all but the last ``keep_last`` messages: reads and deletes only the dropped rows."""
        sa = self._sa
        s, m = self._s, self._m

        def go(conn: Any) -> list[Message]:
            now = time.time()
            row = self._lock(conn, session_id, now)
            if row is None:
                return []
            cut = int(row.next_seq - row.first_seq) - max(0, int(keep_last))
            if cut <= 0:
                return []
            bound = int(row.first_seq) + cut
            dropped = self._messages(conn, session_id, row.first_seq, bound)
            conn.execute(sa.delete(m).where(m.c.session_id == session_id, m.c.seq < bound))
            values: dict[str, Any] = {"first_seq": bound, "updated_at": _dt(now)}
            if fold is not None:
                values["summary"] = fold(row.summary or "", list(dropped))
                values["summary_covers"] = int(row.summary_covers or 0) + cut
            exp = self._expiry(now, None)
            if exp is not None:
                values["expires_at"] = _dt(exp)
            conn.execute(sa.update(s).where(s.c.session_id == session_id).values(**values))
            return dropped

        return self._run(go)

    def set_summary(self, session_id: str, summary: str, *, covers: int | None = None) -> SessionData | None:
        """Store ``summary`` beside the raw messages without rewriting them (one UPDATE)."""
        sa = self._sa
        s = self._s

        def go(conn: Any) -> SessionData | None:
            now = time.time()
            values: dict[str, Any] = {"summary": summary, "updated_at": _dt(now)}
            if covers is not None:
                values["summary_covers"] = int(covers)
            exp = self._expiry(now, None)
            if exp is not None:
                values["expires_at"] = _dt(exp)
            row = conn.execute(
                sa.update(s).where(self._live(session_id, now)).values(**values).returning(*s.c)
            ).first()
            return None if row is None else self._data(session_id, row, [])

        return self._run(go)

    def expire(self, session_id: str, ttl: float | None) -> bool:
        sa = self._sa
        s, m = self._s, self._m

        def go(conn: Any) -> bool:
            now = time.time()
            if ttl is not None and ttl <= 0:
                found = conn.execute(sa.delete(s).where(self._live(session_id, now))).rowcount > 0
                conn.execute(sa.delete(s).where(s.c.session_id == session_id))
                conn.execute(sa.delete(m).where(m.c.session_id == session_id))
                return found
            exp = None if ttl is None else _dt(now + ttl)
            res = conn.execute(sa.update(s).where(self._live(session_id, now)).values(expires_at=exp))
            return res.rowcount > 0

        return self._run(go)

    def delete(self, session_id: str) -> bool:
        sa = self._sa
        s, m = self._s, self._m

        def go(conn: Any) -> bool:
            now = time.time()
            live = conn.execute(sa.delete(s).where(self._live(session_id, now))).rowcount > 0
            conn.execute(sa.delete(s).where(s.c.session_id == session_id))
            conn.execute(sa.delete(m).where(m.c.session_id == session_id))
            return live

        return self._run(go)

    def sessions(self) -> list[str]:
        sa = self._sa
        s = self._s.c

        def go(conn: Any) -> list[str]:
            now = _dt(time.time())
            stmt = sa.select(s.session_id).where(sa.or_(s.expires_at.is_(None), s.expires_at > now))
            return sorted(conn.execute(stmt).scalars())

        return self._run(go, txn=False)

    def purge_expired(self) -> int:
        sa = self._sa
        s, m, kv = self._s, self._m, self._kvt

        def go(conn: Any) -> int:
            now = _dt(time.time())
            expired = sa.and_(s.c.expires_at.is_not(None), s.c.expires_at <= now)
            conn.execute(sa.delete(m).where(m.c.session_id.in_(sa.select(s.c.session_id).where(expired))))
            n = conn.execute(sa.delete(s).where(expired)).rowcount
            conn.execute(sa.delete(kv).where(kv.c.expires_at.is_not(None), kv.c.expires_at <= now))
            return int(n)

        self._ensure("kv")
        return self._run(go)

    # ---------------------------------------------------------------- key-value
    def _kv_live(self, key: str, now: float) -> Any:
        c = self._kvt.c
        return self._sa.and_(c.key == key, self._sa.or_(c.expires_at.is_(None), c.expires_at > _dt(now)))

    def kv_get(self, key: str, default: Any = None) -> Any:
        sa = self._sa
        c = self._kvt.c

        def go(conn: Any) -> Any:
            row = conn.execute(sa.select(c.value).where(self._kv_live(key, time.time()))).first()
            return default if row is None else row.value

        return self._run(go, "kv", txn=False)

    def kv_put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        now = time.time()
        to_json(value)
        values = {
            "key": key,
            "value": value,
            "updated_at": _dt(now),
            "expires_at": _dt(None if ttl is None else now + float(ttl)),
        }

        def go(conn: Any) -> None:
            ins = self._insert(self._kvt).values(**values)
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["key"],
                    set_={
                        "value": ins.excluded.value,
                        "updated_at": ins.excluded.updated_at,
                        "expires_at": ins.excluded.expires_at,
                    },
                )
            )

        self._run(go, "kv")

    def kv_update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        sa = self._sa
        kv = self._kvt

        def go(conn: Any) -> Any:
            stmt = sa.select(kv.c.value, kv.c.expires_at).where(kv.c.key == key)
            if self.dialect == "postgresql":
                stmt = stmt.with_for_update()
            row = conn.execute(stmt).first()
            now = time.time()
            old_exp = _epoch(row.expires_at) if row is not None else None
            live = row is not None and (old_exp is None or old_exp > now)
            cur = row.value if live else json.loads(to_json(default))
            new = fn(cur)
            to_json(new)
            exp = now + float(ttl) if ttl is not None else (old_exp if live else None)
            values = {"value": new, "updated_at": _dt(now), "expires_at": _dt(exp)}
            if row is not None:
                conn.execute(sa.update(kv).where(kv.c.key == key).values(**values))
            else:
                ins = self._insert(kv).values(key=key, **values)
                ins = ins.on_conflict_do_nothing(index_elements=["key"]).returning(kv.c.key)
                if conn.execute(ins).first() is None:
                    raise _Conflict
            return new

        return self._run(go, "kv")

    def kv_delete(self, key: str) -> bool:
        sa = self._sa
        kv = self._kvt

        def go(conn: Any) -> bool:
            live = conn.execute(sa.delete(kv).where(self._kv_live(key, time.time()))).rowcount > 0
            conn.execute(sa.delete(kv).where(kv.c.key == key))
            return live

        return self._run(go, "kv")

    def kv_keys(self, prefix: str = "") -> list[str]:
        sa = self._sa
        c = self._kvt.c

        def go(conn: Any) -> list[str]:
            now = _dt(time.time())
            stmt = sa.select(c.key).where(
                c.key.startswith(prefix, autoescape=True),
                sa.func.substr(c.key, 1, len(prefix)) == prefix,  # LIKE is case-blind on SQLite
                sa.or_(c.expires_at.is_(None), c.expires_at > now),
            )
            return sorted(conn.execute(stmt).scalars())

        return self._run(go, "kv", txn=False)

    def fast_kv_put(self) -> FastKVPut | None:
        """A writer for hot-path KV puts (per-step checkpoints) on SQLite, or None elsewhere.

        It keeps one raw autocommit connection and one prepared upsert, skipping SQLAlchemy's
        per-call pool checkout and compilation (~90 µs of a ~140 µs put); same table, same rows.
        """
        if self.dialect != "sqlite":
            return None
        self._ensure("kv")
        return FastKVPut(self)

    # ---------------------------------------------------------------- lifecycle
    def drop_tables(self) -> None:
        """Drop this store's view and tables (tests, teardown)."""
        q = self._engine.dialect.identifier_preparer.quote
        with self._engine.begin() as conn:
            conn.exec_driver_sql(f"DROP VIEW IF EXISTS {q(self.table)}")
        self._md.drop_all(self._engine, checkfirst=True)
        self._ready.clear()

    def close(self) -> None:
        self._engine.dispose()


class FastKVPut:
    """``put(key, value)`` = ``store.kv_put(key, value)`` on one raw SQLite connection (see
    :meth:`SQLStore.fast_kv_put`)."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        q = store._engine.dialect.identifier_preparer.quote
        self._sql = (
            f'INSERT INTO {q(store.kv_table)} ("key", value, updated_at, expires_at) '
            'VALUES (?, ?, ?, NULL) ON CONFLICT ("key") DO UPDATE SET '
            "value = excluded.value, updated_at = excluded.updated_at, expires_at = NULL"
        )
        self._conn: Any = store._engine.raw_connection()

    def put(self, key: str, value: Any) -> None:
        if self._conn is None:  # closed after a failure: the store's own path
            self.store.kv_put(key, value)
            return
        text = to_json(value)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
        try:
            self._conn.driver_connection.execute(self._sql, (key, text, stamp))
        except Exception as exc:  # sqlite3.OperationalError (locked past busy_timeout, disk full...)
            self.close()
            raise StoreError(f"sql store at {self.store.url}: write failed: {exc}") from exc

    def close(self) -> None:
        """Return the connection to the store's pool."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - best effort
                pass
