"""Record/replay of provider calls: JSON-only diskcache, stable keys, no model needed on replay."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_stub_server import AutoReply, StubServer

from sibyl_nb.errors import ProviderError, SibylError
from sibyl_nb.providers import registry
from sibyl_nb.providers.base import Completion
from sibyl_nb.providers.openai_compat import OpenAICompatibleProvider
from sibyl_nb.providers.registry import disable_replay, enable_replay
from sibyl_nb.providers.replay import ReplayProvider, clear_replay, open_replay_store, replay_key

MESSAGES = [{"role": "user", "content": "Summarise the plan in one line."}]
PICKLE_HEADS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@pytest.fixture
def server() -> Iterator[StubServer]:
    with StubServer(default=AutoReply("The plan: ship it on Friday.")) as stub:
        yield stub


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(registry._PROVIDERS)
    yield
    disable_replay()
    registry._PROVIDERS.clear()
    registry._PROVIDERS.update(saved)


def http(server_url: str, name: str = "primary", **kw: Any) -> OpenAICompatibleProvider:
    opts: dict[str, Any] = {"api_key_env": None, "timeout": 0.5, "max_retries": 0, "backoff_initial": 0.01}
    opts.update(kw)
    return OpenAICompatibleProvider(name, server_url, "stub-model", **opts)


async def _call(provider: Any, messages: list[dict[str, Any]] = MESSAGES, **params: Any) -> Completion:
    try:
        return await provider.complete(messages, **params)
    finally:
        inner = getattr(provider, "inner", provider)
        if hasattr(inner, "aclose"):
            await inner.aclose()


def call(provider: Any, messages: list[dict[str, Any]] = MESSAGES, **params: Any) -> Completion:
    return asyncio.run(_call(provider, messages, **params))


def test_record_then_replay_without_the_server(server: StubServer, tmp_path: Path) -> None:
    url = server.url
    recorder = ReplayProvider(http(url, temperature=0.3), mode="record", directory=tmp_path / "rec")
    recorded = call(recorder, max_tokens=20)
    assert recorded.text == "The plan: ship it on Friday." and recorded.usage["total_tokens"] == 18
    assert recorder.recorded == 1 and len(server.requests) == 1
    recorder.close()

    server.stop()  # no model any more: replay must not need it
    replayer = ReplayProvider(http(url, temperature=0.3), mode="replay", directory=tmp_path / "rec")
    seen: list[str] = []
    replayed = call(replayer, max_tokens=20, on_token=seen.append)
    assert replayed == recorded
    assert seen == [recorded.text]  # the notebook display still gets the text
    assert replayer.hits == 1 and len(server.requests) == 1


def test_replay_miss_is_a_clear_error_and_calls_nothing(server: StubServer, tmp_path: Path) -> None:
    replayer = ReplayProvider(http(server.url), mode="replay", directory=tmp_path)
    with pytest.raises(
        ProviderError, match=r"provider 'primary': replay miss: no recording .*model 'stub-model'"
    ) as err:
        call(replayer)
    assert err.value.retryable is False
    assert str(tmp_path) in str(err.value)
    assert server.requests == []


def test_auto_replays_hits_and_records_misses(server: StubServer, tmp_path: Path) -> None:
    auto = ReplayProvider(http(server.url), mode="auto", directory=tmp_path)
    first = call(auto)
    again = call(auto)
    assert again == first and len(server.requests) == 1
    call(auto, temperature=0.9)  # different parameters: a different recording
    call(auto, [{"role": "user", "content": "Something else"}])
    assert len(server.requests) == 3 and auto.recorded == 3 and auto.hits == 1

    # The provider's own default temperature is part of the key too.
    warmer = ReplayProvider(http(server.url, temperature=0.7), mode="replay", directory=tmp_path)
    with pytest.raises(ProviderError, match="replay miss"):
        call(warmer)


def test_record_mode_always_calls_and_overwrites(server: StubServer, tmp_path: Path) -> None:
    rec = ReplayProvider(http(server.url), mode="record", directory=tmp_path)
    call(rec)
    server.default = AutoReply("A newer answer.")
    assert call(rec).text == "A newer answer."
    assert len(server.requests) == 2
    assert call(ReplayProvider(http(server.url), mode="replay", directory=tmp_path)).text == "A newer answer."


def test_streamed_calls_record_and_replay(server: StubServer, tmp_path: Path) -> None:
    rec = ReplayProvider(http(server.url), mode="record", directory=tmp_path)

    async def collect(provider: Any) -> list[str]:
        try:
            return [d async for d in provider.stream(MESSAGES)]
        finally:
            await provider.inner.aclose()

    live = asyncio.run(collect(rec))
    assert live == ["The", " plan:", " ship", " it", " on", " Friday."]  # real deltas from the server
    server.stop()
    replayed = asyncio.run(collect(ReplayProvider(http(server.url), mode="replay", directory=tmp_path)))
    assert "".join(replayed) == "".join(live)


def test_keys_are_stable_across_processes_and_dict_order() -> None:
    params = {"temperature": 0.2, "max_tokens": 5, "stop": ["\n"]}
    key = replay_key("primary", "m", MESSAGES, params)
    assert len(key) == 64 and int(key, 16) >= 0
    assert replay_key("primary", "m", MESSAGES, dict(reversed(params.items()))) == key
    assert replay_key("primary", "m", [{"content": MESSAGES[0]["content"], "role": "user"}], params) == key
    assert (
        len(
            {
                key,
                replay_key("fallback", "m", MESSAGES, params),
                replay_key("primary", "m2", MESSAGES, params),
                replay_key("primary", "m", MESSAGES, {**params, "max_tokens": 6}),
                replay_key("primary", "m", MESSAGES + MESSAGES, params),
            }
        )
        == 5
    )
    code = (
        "import json,sys; from sibyl_nb.providers.replay import replay_key; "
        "a=json.loads(sys.argv[1]); print(replay_key('primary','m',a['m'],a['p']))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps({"m": MESSAGES, "p": params})],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert out.stdout.strip() == key
    with pytest.raises(ProviderError, match="not JSON-serialisable"):
        replay_key("primary", "m", MESSAGES, {"callback": object()})


def test_store_holds_json_never_pickle(server: StubServer, tmp_path: Path) -> None:
    rec = ReplayProvider(http(server.url), mode="record", directory=tmp_path)
    call(rec)
    call(rec, [{"role": "user", "content": os.urandom(40_000).hex()}])  # big: stored as a value file
    rec.close()

    with sqlite3.connect(tmp_path / "cache.db") as db:
        rows = db.execute("SELECT key, raw, value, mode, filename FROM Cache").fetchall()
    assert len(rows) == 2 and sum(1 for row in rows if row[4]) == 1  # one inline, one value file
    for key, raw, value, mode, filename in rows:
        assert raw == 1 and mode != 4  # 4 = diskcache MODE_PICKLE
        blob = (tmp_path / filename).read_bytes() if filename else bytes(value)
        assert not bytes(key).startswith(PICKLE_HEADS) and not blob.startswith(PICKLE_HEADS)
        assert len(json.loads(zlib.decompress(bytes(key)))) == 64
        record = json.loads(zlib.decompress(blob))
        assert record["completion"]["text"] and record["request"]["model"] == "stub-model"
    for path in tmp_path.rglob("*.val"):
        assert json.loads(zlib.decompress(path.read_bytes()))["v"] == 1


def test_a_planted_pickled_row_is_refused(server: StubServer, tmp_path: Path) -> None:
    rec = ReplayProvider(http(server.url), mode="auto", directory=tmp_path)
    call(rec)
    rec.close()
    # Overwrite the stored value with pickle bytes (protocol 4 for ``None``) marked MODE_PICKLE,
    # as an attacker with write access to the cache folder could.
    with sqlite3.connect(tmp_path / "cache.db") as db:
        db.execute("UPDATE Cache SET value = ?, mode = 4", (b"\x80\x04N.",))
    with pytest.raises(SibylError, match="refusing a pickled value"):
        call(ReplayProvider(http(server.url), mode="replay", directory=tmp_path))


def test_default_directory_is_under_sibyl_home(server: StubServer) -> None:
    rec = ReplayProvider(http(server.url))
    call(rec)
    assert rec.directory == Path(os.environ["SIBYL_HOME"]) / "replay"
    assert (rec.directory / "cache.db").exists()
    rec.close()
    assert clear_replay() == 1


def test_enable_replay_wraps_named_providers_and_yaml_kinds(
    server: StubServer, tmp_path: Path, clean_registry: None
) -> None:
    registry.register_provider("primary", http(server.url))
    wrapped = enable_replay("auto", tmp_path)
    assert set(wrapped) >= {"primary"}
    primary = registry.get_provider("primary")
    assert isinstance(primary, ReplayProvider) and primary.mode == "auto"
    assert call(primary) == call(primary) and len(server.requests) == 1

    # Calling again switches the mode in place, without double wrapping.
    enable_replay("replay", tmp_path)
    again = registry.get_provider("primary")
    assert isinstance(again, ReplayProvider) and isinstance(again.inner, OpenAICompatibleProvider)

    # Providers built later from YAML kinds get the active setting too.
    built = registry.make_provider(
        "research", {"kind": "vllm", "base_url": server.url, "model": "stub-model"}
    )
    assert isinstance(built, ReplayProvider) and built.mode == "replay" and built.directory == tmp_path

    assert "primary" in disable_replay()
    assert isinstance(registry.get_provider("primary"), OpenAICompatibleProvider)
    assert not isinstance(
        registry.make_provider("x", {"kind": "vllm", "base_url": server.url, "model": "m"}), ReplayProvider
    )

    assert clear_replay(tmp_path) == 1
    with pytest.raises(ProviderError, match="replay miss"):
        call(ReplayProvider(http(server.url), mode="replay", directory=tmp_path))


def test_yaml_replay_key_and_env_switch(
    server: StubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = registry.make_provider(
        "p",
        {
            "kind": "ollama",
            "base_url": server.url,
            "model": "m",
            "replay": "record",
            "replay_dir": str(tmp_path),
        },
    )
    assert isinstance(built, ReplayProvider) and built.mode == "record"
    monkeypatch.setenv("SIBYL_REPLAY", "replay")
    monkeypatch.setenv("SIBYL_REPLAY_DIR", str(tmp_path / "ci"))
    from_env = registry.make_provider("p", {"kind": "ollama", "base_url": server.url, "model": "m"})
    assert isinstance(from_env, ReplayProvider) and from_env.mode == "replay"
    assert from_env.directory == tmp_path / "ci"
    opted_out = registry.make_provider(
        "p", {"kind": "ollama", "base_url": server.url, "model": "m", "replay": False}
    )  # YAML ``replay: off``
    assert isinstance(opted_out, OpenAICompatibleProvider)
    with pytest.raises(SibylError, match="replay mode must be one of"):
        ReplayProvider(built.inner, mode="sometimes")  # type: ignore[arg-type]


def test_wraps_providers_that_do_not_stream(tmp_path: Path) -> None:
    class Plain:
        name = "plain"
        model = "rules-v1"
        calls = 0

        async def complete(self, messages: list[dict[str, Any]]) -> Completion:  # no **params at all
            Plain.calls += 1
            return Completion(text="42", fields={"score": 0.5}, provider=self.name, model=self.model)

    rep = ReplayProvider(Plain(), mode="auto", directory=tmp_path)
    seen: list[str] = []
    first = asyncio.run(rep.complete(MESSAGES, on_token=seen.append))
    second = asyncio.run(rep.complete(MESSAGES))
    assert first == second and first.fields == {"score": 0.5}
    assert seen == ["42"] and Plain.calls == 1
    with open_replay_store(tmp_path) as store:
        assert len(store) == 1
