"""Declared config schemas from the outside: user techniques, templated values, what trust unlocks,
and that what the Python caller chooses is never refused as if a document had chosen it."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

import sibyl_nb as sb
from sibyl_nb.document.schema import ConfigSchema, Field, Rule
from sibyl_nb.techniques.registry import register_technique, unregister_technique
from sibyl_nb.testing import call_technique


@pytest.fixture
def shouter():
    calls: list[dict] = []

    def shout(ctx):
        calls.append(dict(ctx.config))
        return {"text": str(ctx.config.get("prefix", "")) * int(ctx.config.get("times", 1))}

    register_technique(
        "shop_strict.shout",
        shout,
        subtechniques=("loud", "quiet"),
        config_schema=ConfigSchema(
            {
                "prefix": Field(str, "what to shout"),
                "times": Field(int, "how often", default=1, minimum=1, maximum=5),
                "volume": Field(int, "how loud", minimum=0, maximum=11),
                "limit": Field(int, "upper bound of times", default=5, minimum=1),
            },
            subtechniques={"loud": ("prefix", "times", "volume", "limit"), "quiet": ("prefix",)},
            default_subtechnique="loud",
            rules=(Rule("times", "<=", "limit"),),
        ),
        outputs=("text",),
    )
    yield calls
    unregister_technique("shop_strict.shout")


def _doc(config: str) -> str:
    return "steps:\n  - use: shop_strict.shout\n    config:\n" + textwrap.indent(
        textwrap.dedent(config), "      "
    )


def test_user_technique_schema_is_enforced_at_the_key_line(shouter):
    with pytest.raises(sb.SpecError, match="at most 5") as err:
        sb.Pipeline.from_yaml(_doc("prefix: hey\ntimes: 9\n"))
    assert (err.value.path, err.value.line) == ("steps[0].config.times", 5)
    with pytest.raises(sb.SpecError, match="'volume' does nothing for subtechnique 'quiet'") as err:
        sb.Pipeline.from_yaml(_doc("subtechnique: quiet\nvolume: 3\n"))
    assert err.value.line == 5
    with pytest.raises(sb.SpecError, match=r"times \(4\) must be <= limit \(2\)"):
        sb.Pipeline.from_yaml(_doc("times: 4\nlimit: 2\n"))
    with pytest.raises(sb.SpecError, match="unknown key 'colour'"):
        sb.Pipeline.from_yaml(_doc("colour: red\n"))
    assert shouter == []  # nothing ran


def test_user_technique_schema_accepts_what_it_declares(shouter):
    out = sb.Pipeline.from_yaml(_doc("prefix: 'ab'\ntimes: 3\nvolume: 11\n")).run({"query": "x"})
    assert out.output == {"text": "ababab"}
    assert shouter == [{"prefix": "ab", "times": 3, "volume": 11}]


def test_templated_values_are_left_for_run_time(shouter):
    pipe = sb.Pipeline.from_yaml(_doc("prefix: '${query}'\ntimes: '${n}'\n"))
    assert pipe.run({"query": "yo", "n": 2}).output == {"text": "yoyo"}


def test_plain_dict_schema_of_a_user_technique_stays_open():
    register_technique(
        "shop_strict.legacy", lambda ctx: {"v": ctx.config.get("anything")}, config_schema={"top": int}
    )
    try:
        doc = "steps:\n  - use: shop_strict.legacy\n    config: {top: 1, anything: 2}\n"
        assert sb.Pipeline.from_yaml(doc).run({}).output == {"v": 2}
        with pytest.raises(sb.SpecError, match="must be an integer"):
            sb.Pipeline.from_yaml("steps:\n  - use: shop_strict.legacy\n    config: {top: x}\n")
    finally:
        unregister_technique("shop_strict.legacy")


def test_every_builtin_declares_a_closed_described_schema():
    from sibyl_nb.techniques.registry import registered_techniques

    checked = []
    for name, info in registered_techniques().items():
        builtin = getattr(info.fn, "__module__", "").startswith("sibyl_nb.")
        if not builtin or info.compiles or name == "workflow_orchestration.passthrough":
            continue  # other tests register their own techniques; only the built-ins are checked here
        schema = info.config_schema
        assert schema.closed, name
        assert schema.fields and all(f.description for f in schema.fields.values()), name
        if info.subtechniques and schema.subtechniques is not None:
            assert set(schema.subtechniques) == set(info.subtechniques), name
            assert all(set(keys) <= set(schema.fields) for keys in schema.subtechniques.values()), name
        checked.append(name)
    assert len(checked) >= 15, checked


def test_load_documents_reads_inside_the_documents_folder_only(tmp_path: Path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "a.md").write_text("# Alpha\n\nAlpha text.\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.md").write_text("# Secret\n")
    (folder / "docs" / "link.md").symlink_to(secret / "s.md")
    monkeypatch.chdir(tmp_path / "secret")  # the cwd is a root too: make it one without the docs
    doc = folder / "pipe.yaml"
    doc.write_text(
        "steps:\n  - use: data.load_documents\n    config: {source: markdown, path: '${where}', pattern: 'a.md'}\n"
    )
    pipe = sb.Pipeline.from_yaml(str(doc))
    out = pipe.run({"where": str(folder / "docs")})
    assert [d["title"] for d in out.output["documents"]] == ["Alpha"]
    # a symlink inside the folder that leads out of it is refused when it is read
    doc.write_text("steps:\n  - use: data.load_documents\n    config: {source: markdown, path: '${where}'}\n")
    monkeypatch.chdir(folder)
    with pytest.raises(sb.NodeExecutionError) as err:
        sb.Pipeline.from_yaml(str(doc)).run({"where": str(folder / "docs")})
    assert isinstance(err.value.cause, sb.TrustError) and "leads outside" in str(err.value.cause)
    # trusted, the same document may read it
    out = sb.Pipeline.from_yaml(str(doc), trust_code=True).run({"where": str(folder / "docs")})
    assert sorted(d["title"] for d in out.output["documents"]) == ["Alpha", "Secret"]


def test_python_callers_are_trusted(tmp_path: Path):
    (tmp_path / "x.md").write_text("# X\n")
    out = call_technique("data.load_documents", {"source": "markdown", "path": str(tmp_path)})
    assert out["count"] == 1


def test_trusted_document_may_read_absolute_paths(tmp_path: Path):
    (tmp_path / "y.md").write_text("# Y\n")
    text = f"steps:\n  - use: data.load_documents\n    config: {{source: markdown, path: '{tmp_path}'}}\n"
    with pytest.raises(sb.TrustError, match="outside the folders"):
        sb.Pipeline.from_yaml(text)
    assert sb.Pipeline.from_yaml(text, trust_code=True).run({}).output["count"] == 1


def test_prometheus_endpoint_listens_on_loopback_only():
    from sibyl_nb.observe import metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.start_prometheus_server(port)
    server = metrics._SERVERS[port]
    httpd = server[0] if isinstance(server, tuple) else server
    try:
        assert httpd.server_address[0] == "127.0.0.1"
    finally:
        httpd.shutdown()
        metrics._SERVERS.pop(port, None)
