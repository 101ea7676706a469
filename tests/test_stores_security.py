"""Stored data and store URLs an attacker or a careless user controls: a tampered diskcache row
cannot read or delete a file outside the cache; a password never shows in an error or repr,
whatever characters it holds; a malformed URL gets a clear StoreError."""

from __future__ import annotations

import sqlite3

import pytest

from sibyl_nb.errors import StoreError
from sibyl_nb.stores import mask_url, open_store


def _tamper(cache_dir, key: str, mode: int, filename: str) -> None:
    db = sqlite3.connect(cache_dir / "cache.db")
    db.execute("UPDATE Cache SET mode = ?, filename = ?, value = NULL WHERE key = ?", (mode, filename, key))
    db.commit()
    db.close()


@pytest.mark.parametrize("mode", [2, 3])  # diskcache MODE_BINARY, MODE_TEXT
@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_a_tampered_diskcache_row_reads_no_outside_file(tmp_path, mode, where):
    secret = tmp_path / "secret.txt"
    secret.write_text('"the secret"', encoding="utf-8")
    cache_dir = tmp_path / "cache"
    store = open_store("diskcache", directory=str(cache_dir))
    store.kv_put("k", "harmless")
    store.append("s", {"role": "user", "content": "hi"})
    store.close()
    name = str(secret) if where == "absolute" else "../secret.txt"
    _tamper(cache_dir, "k:k", mode, name)
    _tamper(cache_dir, "m:s:000000000000", mode, name)
    store = open_store("diskcache", directory=str(cache_dir))
    with pytest.raises(StoreError, match="refusing a diskcache row that points at the file"):
        store.kv_get("k")
    with pytest.raises(StoreError, match="refusing a diskcache row"):
        store.load("s")
    # deleting the tampered rows removes the rows, never the file they point at
    store.kv_delete("k")
    store.delete("s")
    store.close()
    assert secret.read_text(encoding="utf-8") == '"the secret"'


def test_large_values_stored_as_files_still_round_trip(tmp_path):
    store = open_store("diskcache", directory=str(tmp_path / "c"))
    big = "x" * 100_000  # above diskcache's 32 KB threshold: written to a value file
    store.kv_put("big", big)
    assert store.kv_get("big") == big
    assert store.kv_delete("big") and store.kv_get("big") is None
    store.close()


PASSWORDS = ["s3cret", "p@ss/word", "a#b?c", "[x]:y@z", "pct%41x", "colon:in:it", "ü∂ß"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_mask_url_hides_any_password(password):
    for url in (
        f"postgresql://user:{password}@db.example:5432/app",
        f"redis://:{password}@cache:6379/0",
    ):
        masked = mask_url(url)
        assert password not in masked and "***" in masked
        assert masked.endswith(url.rsplit("@", 1)[1])


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_password_in_store_errors_or_reprs(password, postgres_url):
    # PostgreSQL on a port nothing listens on; and the live server with a wrong database name.
    for url in (
        f"postgresql://postgres:{password}@127.0.0.1:1/test",
        f"postgresql://postgres:{password}@127.0.0.1:5432/no_such_db_{abs(hash(password))}",
    ):
        with pytest.raises(StoreError) as err:
            open_store("database", database_url=url)
        assert password not in str(err.value) and err.value.__cause__ is None
        assert password not in repr(err.value)
    with pytest.raises(StoreError) as err:
        open_store("redis", redis_url=f"redis://:{password}@127.0.0.1:1/0")
    assert password not in str(err.value) and err.value.__cause__ is None


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_password_in_a_live_store_repr(redis_url, password, tmp_path):
    import redis

    from sibyl_nb.stores.redis_store import RedisStore

    client = redis.Redis.from_url(redis_url)  # the test server has no password; the URL is what is shown
    store = RedisStore(redis_url.replace("redis://", f"redis://:{password}@"), client=client)
    assert password not in repr(store) and "***" in repr(store) and password not in store.url
    store.close()
    sql = open_store("database", database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert "***" not in repr(sql)  # nothing to hide, nothing hidden


@pytest.mark.parametrize(
    "storage,key,url,words",
    [
        ("database", "database_url", "postgresql://u@host:notaport/db", "malformed"),
        ("database", "database_url", "postgresql://u@[::1/db", "malformed"),
        ("database", "database_url", "just-a-word", "is not a URL"),
        ("database", "database_url", "ftp://host/db", "unknown scheme"),
        ("redis", "redis_url", "redis://host:99999/0", "malformed"),
        ("redis", "redis_url", "redis://host:6379/notadb", "malformed"),
        ("redis", "redis_url", "localhost:6379", "is not a URL"),
    ],
)
def test_malformed_urls_get_a_clear_error(storage, key, url, words):
    with pytest.raises(StoreError, match=words):
        open_store(storage, **{key: url})
