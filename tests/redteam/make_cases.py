"""Writes the red-team corpus (one YAML document per case, its expectation in the leading comments).

The expected line of each case is computed from the ``@@`` marker on the offending line, so editing
a case cannot leave a stale line number behind. Regenerate with ``python tests/redteam/make_cases.py``.
"""

import json
import textwrap
from pathlib import Path

ROOT = Path(__file__).parent


def case(cat, name, expect, path, match, body, run=None, trust=False):
    body = textwrap.dedent(body).lstrip("\n")
    hdr = [f"# expect: {expect}"]
    if path is not None:
        hdr.append(f"# path: {path}")
    lines = body.splitlines()
    marks = [i for i, text in enumerate(lines) if "@@" in text]
    if match:
        hdr.append(f"# match: {match}")
    if run is not None:
        hdr.append(f"# run: {json.dumps(run)}")
    if trust:
        hdr.append("# trust: true")
    if marks and (run is None or expect == "TemplateError"):
        hdr.append("# line: X")
    n = len(hdr)
    if marks and (run is None or expect == "TemplateError"):
        hdr[-1] = f"# line: {n + marks[0] + 1}"
    body = "\n".join(text.replace("  @@", "").replace("@@", "") for text in lines) + "\n"
    (ROOT / cat / f"{name}.yaml").write_text("\n".join(hdr) + "\n" + body)


def pipe(steps):
    return (
        "pipelines:\n  p:\n    steps:\n"
        + textwrap.indent(textwrap.dedent(steps).strip("\n"), "      ")
        + "\n"
    )


V = "values"
P = "pipelines.p.steps[0]"


def config_case(cat, name, expect, key, match, technique, config):
    """A one-step pipeline whose ``config`` (YAML lines, the offending one marked ``@@``) is the case;
    the error is expected at ``config.<key>`` of that step."""
    body = f"- use: {technique}\n  config:\n" + textwrap.indent(textwrap.dedent(config).strip("\n"), "    ")
    case(cat, name, expect, f"{P}.config.{key}", match, pipe(body))


def section_case(cat, name, expect, path, match, section):
    """A document whose top-level ``section`` (YAML, the offending line marked ``@@``) is the case,
    with a one-step pipeline to load."""
    case(cat, name, expect, path, match, textwrap.dedent(section).lstrip("\n") + pipe("- use: rag.search"))


def ctx(extra, key, match, name, sub="window"):
    config = f"subtechnique: {sub}\n" + textwrap.dedent(extra).strip("\n")
    config_case(V, name, "SpecError", key, match, "workflow_orchestration.context_management", config)


case(
    V,
    "max_concurrent_zero_pipeline",
    "SpecError",
    "pipelines.p.max_concurrent",
    "at least 1",
    """
pipelines:
  p:
    max_concurrent: 0  @@
    steps:
      - use: rag.search
""",
)
config_case(
    V,
    "max_concurrent_zero_parallel",
    "SpecError",
    "max_concurrent",
    "at least 1",
    "workflow_orchestration.orchestration",
    """
subtechnique: parallel
max_concurrent: 0  @@
steps:
  - {name: a, technique: rag.search}
""",
)


ctx("max_tokens: 0  @@", "max_tokens", "at least 1", "context_max_tokens_zero")
ctx("max_tokens: -5  @@", "max_tokens", "at least 1", "context_max_tokens_negative")
ctx("max_tokens: true  @@", "max_tokens", "must be an integer", "context_max_tokens_bool")
ctx(
    "max_tokens: 1000\nreserve_tokens: 1000  @@",
    "reserve_tokens",
    "must be <",
    "context_reserve_not_below_max",
)
ctx("reserve_tokens: 9000  @@", "reserve_tokens", "must be <", "context_reserve_over_default_max")
ctx("window_size: 0  @@", "window_size", "at least 1", "context_window_size_zero")
ctx(
    "compression_ratio: 0  @@",
    "compression_ratio",
    "more than 0",
    "context_compression_ratio_zero",
    "compression",
)
ctx(
    "compression_ratio: 1.5  @@",
    "compression_ratio",
    "at most 1",
    "context_compression_ratio_big",
    "compression",
)
ctx(
    "compression_ratio: .nan  @@",
    "compression_ratio",
    "finite",
    "context_compression_ratio_nan",
    "compression",
)
ctx("summary_length: 0  @@", "summary_length", "at least 1", "context_summary_length_zero", "summary")
ctx(
    "window_size: 5  @@",
    "window_size",
    "does nothing for subtechnique 'hierarchical'",
    "context_unused_option",
    "hierarchical",
)
config_case(
    V,
    "context_levels_negative",
    "SpecError",
    "levels[0].messages",
    "at least 0",
    "workflow_orchestration.context_management",
    """
subtechnique: hierarchical
levels:
  - {name: full, messages: -1}  @@
""",
)
config_case(
    V,
    "context_levels_unknown_name",
    "SpecError",
    "levels[0].name",
    "is not one of",
    "workflow_orchestration.context_management",
    """
subtechnique: hierarchical
levels:
  - {name: fulll, messages: 3}  @@
""",
)
config_case(
    V,
    "context_levels_mapping_bad_value",
    "SpecError",
    "levels.full",
    "must be an integer",
    "workflow_orchestration.context_management",
    """
subtechnique: hierarchical
levels: {full: many, summary: 3}  @@
""",
)
config_case(
    V,
    "context_levels_no_name",
    "SpecError",
    "levels[0]",
    "needs 'name'",
    "workflow_orchestration.context_management",
    """
subtechnique: hierarchical
levels:
  - {messages: 3}  @@
""",
)
case(
    V,
    "retry_initial_delay_inf",
    "SpecError",
    f"{P}.retry.initial_delay",
    "finite",
    pipe("""
- use: rag.search
  retry:
    max_attempts: 3
    initial_delay: .inf  @@
"""),
)
case(
    V,
    "retry_max_delay_huge",
    "SpecError",
    f"{P}.retry.max_delay",
    "at most",
    pipe("""
- use: rag.search
  retry:
    max_delay: 1.0e+300  @@
"""),
)
case(
    V,
    "retry_max_attempts_billion",
    "SpecError",
    f"{P}.retry.max_attempts",
    "at most 100",
    pipe("""
- use: rag.search
  retry: {max_attempts: 1000000000}  @@
"""),
)
case(
    V,
    "retry_jitter_negative",
    "SpecError",
    f"{P}.retry.jitter",
    "at least 0",
    pipe("""
- use: rag.search
  retry:
    jitter: -0.5  @@
"""),
)
case(
    V,
    "step_timeout_zero",
    "SpecError",
    f"{P}.timeout",
    "more than 0",
    pipe("""
- use: rag.search
  timeout: 0  @@
"""),
)
case(
    V,
    "step_max_iterations_zero",
    "SpecError",
    f"{P}.max_iterations",
    "at least 1",
    pipe("""
- use: rag.search
  max_iterations: 0  @@
"""),
)
config_case(
    V,
    "graph_max_iterations_huge",
    "SpecError",
    "max_iterations",
    "at most",
    "workflow_orchestration.graph",
    """
subtechnique: cyclic
max_iterations: 1000000000000  @@
graph_definition:
  nodes:
    - {id: a, technique: rag.search}
""",
)
config_case(
    V,
    "state_ttl_zero",
    "SpecError",
    "ttl",
    "more than 0",
    "workflow_orchestration.state_management",
    """
backend: memory
ttl: 0  @@
""",
)
config_case(
    V,
    "web_search_max_results_zero",
    "SpecError",
    "max_results",
    "at least 1",
    "external.web_search",
    """
max_results: 0  @@
""",
)
config_case(
    V,
    "consensus_num_candidates_1e8",
    "SpecError",
    "num_candidates",
    "at most 64",
    "ai_generation.consensus",
    """
num_candidates: 100000000  @@
""",
)
config_case(
    V,
    "query_processing_num_queries_1e8",
    "SpecError",
    "num_queries",
    "at most 50",
    "rag.query_processing",
    """
subtechnique: expansion
num_queries: 100000000  @@
""",
)
config_case(
    V,
    "query_processing_unused_num_queries",
    "SpecError",
    "num_queries",
    "does nothing",
    "rag.query_processing",
    """
subtechnique: decomposition
num_queries: 4  @@
""",
)
config_case(
    V,
    "generation_temperature_high",
    "SpecError",
    "temperature",
    "at most 2",
    "ai_generation.generation",
    """
temperature: 7  @@
""",
)
config_case(
    V,
    "generation_unknown_key",
    "SpecError",
    "temprature",
    "did you mean 'temperature'",
    "ai_generation.generation",
    """
temprature: 0.2  @@
""",
)
config_case(
    V,
    "ranking_k_unused_by_score",
    "SpecError",
    "k",
    "does nothing",
    "rag.ranking",
    """
subtechnique: score
k: 10  @@
""",
)
config_case(
    V,
    "chunking_overlap_not_below_size",
    "SpecError",
    "chunk_overlap",
    "must be <",
    "rag.chunking",
    """
chunk_size: 50
chunk_overlap: 50  @@
""",
)
config_case(
    V,
    "session_persistent_max_tokens",
    "SpecError",
    "max_tokens",
    "does nothing for subtechnique 'persistent'",
    "workflow_orchestration.session_management",
    """
subtechnique: persistent
max_tokens: 100  @@
""",
)
config_case(
    V,
    "session_stateless_window_size",
    "SpecError",
    "window_size",
    "does nothing for subtechnique 'stateless'",
    "workflow_orchestration.session_management",
    """
subtechnique: stateless
window_size: 3  @@
""",
)
config_case(
    V,
    "session_window_size_zero",
    "SpecError",
    "window_size",
    "at least 1",
    "workflow_orchestration.session_management",
    """
subtechnique: sliding_window
window_size: 0  @@
""",
)
config_case(
    V,
    "session_storage_unknown",
    "SpecError",
    "storage",
    "is not one of",
    "workflow_orchestration.session_management",
    """
storage: floppy  @@
""",
)


section_case(
    V,
    "checkpoint_keep_zero",
    "SpecError",
    "shops.infrastructure.config.checkpointing.keep",
    "at least 1",
    """
shops:
  infrastructure:
    config:
      checkpointing:
        storage: memory
        keep: 0  @@
""",
)
section_case(
    V,
    "checkpoint_frequency_zero",
    "SpecError",
    "shops.infrastructure.config.checkpointing.frequency",
    "at least 1",
    """
shops:
  infrastructure:
    config:
      checkpointing:
        frequency: 0  @@
""",
)
section_case(
    V,
    "caching_ttl_negative",
    "SpecError",
    "shops.infrastructure.config.caching.ttl",
    "more than 0",
    """
shops:
  infrastructure:
    config:
      caching:
        ttl: -5  @@
""",
)
section_case(
    V,
    "shops_unknown_section",
    "SpecError",
    "shops.infrastucture",
    "did you mean 'infrastructure'",
    """
shops:
  infrastucture:  @@
    config: {}
""",
)
section_case(
    V,
    "logging_level_unknown",
    "SpecError",
    "observability.logging.level",
    "is not one of",
    """
observability:
  logging:
    level: LOUD  @@
""",
)
section_case(
    V,
    "logging_format_unknown",
    "SpecError",
    "observability.logging.format",
    "is not one of",
    """
observability:
  logging:
    format: xml  @@
""",
)
section_case(
    V,
    "prometheus_port_out_of_range",
    "SpecError",
    "observability.metrics.prometheus_port",
    "at most 65535",
    """
observability:
  metrics:
    export: prometheus
    prometheus_port: 70000  @@
""",
)
section_case(
    V,
    "prometheus_port_without_export",
    "SpecError",
    "observability.metrics.prometheus_port",
    "does nothing without export",
    """
observability:
  metrics:
    prometheus_port: 9100  @@
""",
)
section_case(
    V,
    "provider_timeout_string",
    "SpecError",
    "providers.primary.timeout",
    "must be an integer or a number",
    """
providers:
  primary:
    kind: vllm
    timeout: soon  @@
""",
)
section_case(
    V,
    "provider_timeout_inf",
    "SpecError",
    "providers.primary.timeout",
    "finite",
    """
providers:
  primary:
    kind: vllm
    timeout: .inf  @@
""",
)
section_case(
    V,
    "provider_max_retries_negative",
    "SpecError",
    "providers.primary.max_retries",
    "at least 0",
    """
providers:
  primary:
    kind: ollama
    max_retries: -1  @@
""",
)
section_case(
    V,
    "provider_headers_not_mapping",
    "SpecError",
    "providers.primary.headers",
    "must be a mapping",
    """
providers:
  primary:
    kind: vllm
    headers: "X-Token: 1"  @@
""",
)
section_case(
    V,
    "provider_header_value_not_string",
    "SpecError",
    "providers.primary.headers.X-Count",
    "must be a string",
    """
providers:
  primary:
    kind: vllm
    headers:
      X-Count: 3  @@
""",
)
section_case(
    V,
    "provider_kind_typo",
    "SpecError",
    "providers.primary.kind",
    "did you mean 'ollama'",
    """
providers:
  primary:
    kind: olama  @@
""",
)
section_case(
    V,
    "provider_unknown_key",
    "SpecError",
    "providers.primary.base_ur",
    "did you mean 'base_url'",
    """
providers:
  primary:
    kind: vllm
    base_ur: http://127.0.0.1:8000/v1  @@
""",
)
section_case(
    V,
    "provider_local_http_option",
    "SpecError",
    "providers.primary.timeout",
    "does nothing for subtechnique 'local'",
    """
providers:
  primary:
    kind: local
    timeout: 3  @@
""",
)
case(
    V,
    "ok_seed_like_context",
    "ok",
    None,
    None,
    pipe("""
- use: workflow_orchestration.context_management
  config:
    subtechnique: window
    max_tokens: 4000
    reserve_tokens: 500
    window_size: 10
- use: ai_generation.generation
"""),
    run={"query": "What is Python?"},
)

# ---------------- expressions
E = "expressions"


def cond(name, text, match, expect="ExpressionError", run=None):
    case(
        E,
        name,
        expect,
        f"{P}.condition" if expect in ("ExpressionError", "TemplateError") else None,
        match,
        pipe(f"""
- use: rag.search
  condition: {json.dumps(text)}  @@
"""),
        run=run,
    )


cond("repeat_str_product", "'a' * 10000 * 10000 == 'b'", "repetition")
cond("repeat_str_thousand_cubed", "'a' * 1000 * 1000 * 1000", "repetition")
cond("repeat_tuple", "(1, 2) * 10000 * 10000 == ()", "repetition")
cond("repeat_nested_list", "[[1] * 10000] * 10000 == []", "repetition")
cond("repeat_count_first", "10000 * 10000 * 'a' == 'a'", "repetition")
cond("percent_width", "'%999999999d' % 1 == ''", "formatting")
cond("percent_star_width", "'%*d' % (999999999, 1) == ''", "formatting")
cond("deep_nesting", "[" * 150 + "]" * 150, "nested too deeply")
cond("deep_not", "not " * 2000 + "true", "")
cond("long_text", "1 + " * 4000 + "1", "characters")
cond("call", "len(${query}) > 3", "Call is not allowed")
cond("lambda", "(lambda: 1)", "Lambda is not allowed")
cond("pow", "2 ** 100000000 > 1", "Pow is not allowed")
cond("comprehension", "[x for x in [1, 2]]", "ListComp is not allowed")
cond("dunder_attribute", "${query}.__class__", "not allowed")
cond("dunder_ref", "${query.__class__} == 1", "not allowed")
cond("placeholder_name", "__ref0 == 1", "not allowed")
cond("slice", "${query}[0:3] == 'abc'", "Slice is not allowed")
cond("unbalanced", "${query == 1", "")
cond("bytes", "b'x' == b'x'", "bytes")
cond(
    "runtime_repeat_from_input",
    "${query} * 100000000 == 'x'",
    "repetition",
    expect="TemplateError",
    run={"query": "abc"},
)
cond("runtime_negate_string", "-${query} < 0", "negate", expect="TemplateError", run={"query": "abc"})
cond("runtime_compare_types", "${query} < 3", "cannot compare", expect="TemplateError", run={"query": "abc"})
cond("runtime_divide_zero", "1 / 0 == 1", "division", expect="ExpressionError")
cond("runtime_concat_huge", "${query} + ${query} == 'x'", "", expect="ok", run={"query": "abc"})
config_case(
    E,
    "template_dunder_in_prompt",
    "ExpressionError",
    "prompt",
    "not allowed",
    "ai_generation.generation",
    """
prompt: "Answer ${query.__init__} now"  @@
""",
)
config_case(
    E,
    "template_dunder_nested",
    "ExpressionError",
    "prompt[1].content",
    "not allowed",
    "ai_generation.generation",
    """
prompt:
  - {role: system, content: hi}
  - {role: user, content: "${query.__globals__}"}  @@
""",
)
config_case(
    E,
    "edge_condition_bomb",
    "ExpressionError",
    "graph_definition.edges[0].condition",
    "repetition",
    "workflow_orchestration.graph",
    """
subtechnique: conditional
graph_definition:
  nodes:
    - {id: a, technique: rag.search}
    - {id: b, technique: rag.ranking}
  edges:
    - {from: a, to: b, condition: "'x' * 100000 * 100000 == ''"}  @@
""",
)

# ---------------- security
S = "security"
case(
    S,
    "dask_tcp_executor",
    "TrustError",
    "pipelines.p.executor",
    "code execution",
    """
pipelines:
  p:
    executor: tcp://203.0.113.5:8786  @@
    steps:
      - use: rag.search
""",
)
case(
    S,
    "dask_scheduler_address",
    "TrustError",
    "pipelines.p.scheduler_address",
    "code execution",
    """
pipelines:
  p:
    executor: dask
    scheduler_address: tcp://203.0.113.5:8786  @@
    steps:
      - use: rag.search
""",
)
case(
    S,
    "dask_executor_mapping",
    "TrustError",
    "pipelines.p.executor.scheduler_address",
    "code execution",
    """
pipelines:
  p:
    executor:
      kind: dask
      scheduler_address: tls://203.0.113.5:8786  @@
    steps:
      - use: rag.search
""",
)
config_case(
    S,
    "dask_graph_executor",
    "TrustError",
    "executor.address",
    "code execution",
    "workflow_orchestration.graph",
    """
subtechnique: dag
executor:
  kind: dask
  address: 203.0.113.5:8786  @@
graph_definition:
  nodes:
    - {id: a, technique: rag.search}
""",
)
case(
    S,
    "dask_trusted_loads",
    "ok",
    None,
    None,
    """
pipelines:
  p:
    executor: tcp://127.0.0.1:1
    steps:
      - use: rag.search
""",
    trust=True,
)
case(
    S,
    "builder_code_untrusted",
    "TrustError",
    None,
    "trust_code=True",
    pipe("""
- use: workflow_orchestration.graph
  config:
    subtechnique: dynamic
    builder_code: |
      import os
      def build_graph(input_data):
          os.system("echo pwned")
"""),
    run={"query": "x"},
)


def load_docs(name, path_value, match, run=None, extra="", expect="TrustError", at="path"):
    case(
        S,
        name,
        expect,
        f"{P}.config.{at}" if run is None else None,
        match,
        pipe(
            f"""
- use: data.load_documents
  config:
    source: markdown
    path: {json.dumps(path_value)}  @@
"""
            + extra
        ),
        run=run,
    )


load_docs("files_etc_passwd", "/etc/passwd", "outside the folders")
load_docs("files_proc_environ", "/proc/self/environ", "system file")
load_docs("files_dotdot_escape", "../../../etc", "outside the folders")
load_docs("files_home", "~/.ssh", "outside the folders")
config_case(
    S,
    "files_json_etc",
    "TrustError",
    "path",
    "outside the folders",
    "data.load_documents",
    """
source: json
path: /etc/hostname  @@
""",
)
config_case(
    S,
    "files_root_escape",
    "TrustError",
    "root",
    "outside the document's folder",
    "data.load_documents",
    """
source: markdown
root: /  @@
path: /etc
""",
)
case(
    S,
    "files_template_path_from_input",
    "TrustError",
    None,
    "outside the folders",
    pipe("""
- use: data.load_documents
  config:
    source: markdown
    path: "${doc_path}"
"""),
    run={"query": "x", "doc_path": "/etc"},
)
case(
    S,
    "files_pattern_escape",
    "TrustError",
    None,
    "may not leave",
    pipe("""
- use: data.load_documents
  config:
    source: markdown
    path: .
    pattern: "../../**/*.md"
"""),
    run={"query": "x"},
)
case(
    S,
    "files_inside_folder_ok",
    "ok",
    None,
    None,
    pipe("""
- use: data.load_documents
  config:
    source: markdown
    path: fixtures
"""),
    run={"query": "x"},
)


section_case(
    S,
    "redis_remote_checkpoint",
    "TrustError",
    "shops.infrastructure.config.checkpointing.redis_url",
    "not this machine",
    """
shops:
  infrastructure:
    config:
      checkpointing:
        storage: redis
        redis_url: redis://attacker.example.com:6379/0  @@
""",
)
section_case(
    S,
    "postgres_remote_cache",
    "TrustError",
    "shops.infrastructure.config.caching.redis_url",
    "not this machine",
    """
shops:
  infrastructure:
    config:
      caching:
        storage: redis
        redis_url: redis://:secret@198.51.100.7:6379  @@
""",
)
section_case(
    S,
    "checkpoint_path_outside",
    "TrustError",
    "shops.infrastructure.config.checkpointing.path",
    "pseudo-filesystem",
    """
shops:
  infrastructure:
    config:
      checkpointing:
        path: /proc/self/fd  @@
""",
)
section_case(
    S,
    "provider_remote_base_url",
    "TrustError",
    "providers.primary.base_url",
    "not this machine",
    """
providers:
  primary:
    kind: openai_compatible
    base_url: http://exfil.example.com/v1  @@
""",
)
section_case(
    S,
    "provider_replay_dir_outside",
    "TrustError",
    "providers.primary.replay_dir",
    "pseudo-filesystem",
    """
providers:
  primary:
    kind: vllm
    replay: record
    replay_dir: /sys/kernel  @@
""",
)
config_case(
    S,
    "session_remote_database",
    "TrustError",
    "database_url",
    "not this machine",
    "workflow_orchestration.session_management",
    """
subtechnique: persistent
database_url: postgresql://u:p@db.attacker.example/x  @@
""",
)
config_case(
    S,
    "session_sqlite_pseudo_fs",
    "TrustError",
    "database_url",
    "pseudo-filesystem",
    "workflow_orchestration.session_management",
    """
subtechnique: persistent
database_url: sqlite:////proc/self/planted.db  @@
""",
)
config_case(
    S,
    "session_directory_pseudo_fs",
    "TrustError",
    "directory",
    "pseudo-filesystem",
    "workflow_orchestration.session_management",
    """
subtechnique: memory
directory: /dev/shm/x  @@
""",
)
config_case(
    S,
    "state_remote_redis",
    "TrustError",
    "redis_url",
    "not this machine",
    "workflow_orchestration.state_management",
    """
backend: redis
redis_url: redis://203.0.113.9:6379  @@
""",
)
section_case(
    S,
    "local_urls_ok",
    "ok",
    None,
    None,
    """
shops:
  infrastructure:
    config:
      checkpointing:
        storage: memory
        path: /tmp/sibyl-redteam-checkpoints
providers:
  primary:
    kind: vllm
    base_url: http://127.0.0.1:8000/v1
""",
)
config_case(
    V,
    "context_levels_duplicate",
    "SpecError",
    "levels[1].name",
    "repeats",
    "workflow_orchestration.context_management",
    """
subtechnique: hierarchical
levels:
  - {name: full, messages: 3}
  - {name: full, messages: 4}  @@
""",
)
config_case(
    V,
    "context_levels_too_many",
    "SpecError",
    "levels",
    "at most 3",
    "workflow_orchestration.context_management",
    """
subtechnique: hierarchical
levels:  @@
  - {name: full, messages: 3}
  - {name: compressed, messages: 4}
  - {name: summary, messages: 4}
  - {name: recent, messages: 4}
""",
)
config_case(
    S,
    "postgres_host_in_query",
    "TrustError",
    "database_url",
    "names its server in the query",
    "workflow_orchestration.session_management",
    """
subtechnique: persistent
database_url: postgresql://u@localhost/x?host=db.attacker.example  @@
""",
)
section_case(
    S,
    "redis_ipv6_loopback_ok",
    "ok",
    None,
    None,
    """
shops:
  infrastructure:
    config:
      checkpointing:
        storage: memory
        redis_url: redis://[::1]:6379/0
""",
)
