"""A corpus of malformed pipelines: each gets a sibyl_nb error naming the YAML path and line."""

from __future__ import annotations

import textwrap

import pytest

import sibyl_nb as sb

BASE_GRAPH = """\
pipelines:
  research_workflow:
    steps:
      - use: workflow_orchestration.graph
        config:
          subtechnique: {mode}
          graph_definition:
            nodes:
              - id: a
                technique: workflow_orchestration.passthrough
              - id: b
                technique: workflow_orchestration.passthrough
{extra_nodes}            edges:
              - from: a
                to: b
{extra_edges}"""


def g(mode="dag", extra_nodes="", extra_edges=""):
    return BASE_GRAPH.format(mode=mode, extra_nodes=extra_nodes, extra_edges=extra_edges)


CASES = [
    # (id, yaml, error class, message fragment, path fragment, line)
    (
        "edge-to-missing-node",
        g(extra_edges="              - from: b\n                to: c\n"),
        sb.SpecError,
        "no node with that id",
        "graph_definition.edges[1].to",
        17,
    ),
    (
        "edge-typo-did-you-mean",
        g(extra_edges="              - from: b\n                to: aa\n"),
        sb.SpecError,
        "did you mean 'a'",
        "edges[1].to",
        17,
    ),
    (
        "cycle-in-dag",
        g(extra_edges="              - from: b\n                to: a\n"),
        sb.SpecError,
        "a -> b -> a",
        "edges[1]",
        16,
    ),
    (
        "cycle-in-conditional",
        g(mode="conditional", extra_edges="              - from: b\n                to: a\n"),
        sb.SpecError,
        "cannot have cycles",
        "edges[1]",
        16,
    ),
    ("unknown-graph-mode", g(mode="dagg"), sb.SpecError, "did you mean 'dag'", "config.subtechnique", 6),
    (
        "unknown-technique",
        g(extra_nodes="              - id: c\n                technique: rag.serch\n"),
        sb.UnknownTechniqueError,
        "unknown technique 'rag.serch'",
        "nodes[2].technique",
        14,
    ),
    (
        "unknown-key-in-node",
        g(extra_nodes="              - id: c\n                tecnique: x\n"),
        sb.SpecError,
        "did you mean 'technique'",
        "nodes[2].tecnique",
        14,
    ),
    (
        "duplicate-node-id",
        g(
            extra_nodes="              - id: a\n                technique: workflow_orchestration.passthrough\n"
        ),
        sb.SpecError,
        "duplicate node id 'a'",
        "nodes[2].id",
        13,
    ),
    (
        "edge-missing-to",
        g(extra_edges="              - from: b\n"),
        sb.SpecError,
        "needs 'to'",
        "edges[1]",
        16,
    ),
    (
        "bad-condition-syntax",
        g(
            extra_edges="              - from: b\n                to: a\n                condition: ${a.x} <\n"
        ).replace("dag", "cyclic"),
        sb.ExpressionError,
        "cannot parse condition",
        "edges[1].condition",
        18,
    ),
    (
        "condition-with-call",
        g(
            mode="cyclic",
            extra_edges="              - from: b\n                to: a\n                condition: open('x')\n",
        ),
        sb.ExpressionError,
        "Call is not allowed",
        "edges[1].condition",
        18,
    ),
    (
        "unknown-ref-did-you-mean",
        g(
            mode="cyclic",
            extra_edges="              - from: b\n                to: a\n                condition: ${aa.score} < 1\n",
        ),
        sb.ExpressionError,
        "did you mean 'a'",
        "edges[1].condition",
        18,
    ),
    (
        "max-iterations-type",
        g().replace("subtechnique: dag", "subtechnique: cyclic\n          max_iterations: many"),
        sb.SpecError,
        "must be an integer",
        "config.max_iterations",
        7,
    ),
    (
        "nodes-not-a-list",
        "steps:\n  - use: workflow_orchestration.graph\n    config:\n      graph_definition:\n        nodes: {a: 1}\n",
        sb.SpecError,
        "must be a list",
        "graph_definition.nodes",
        5,
    ),
    ("step-without-use", "steps:\n  - config: {}\n", sb.SpecError, "needs 'use", "steps[0]", 2),
    (
        "steps-not-list",
        "pipelines:\n  p:\n    steps: nope\n",
        sb.SpecError,
        "must be a list",
        "pipelines.p.steps",
        3,
    ),
    (
        "unknown-pipeline-key",
        "pipelines:\n  p:\n    stepz: []\n",
        sb.SpecError,
        "did you mean 'steps'",
        "pipelines.p.stepz",
        3,
    ),
    (
        "unknown-subtechnique",
        "steps:\n  - use: workflow_orchestration.session_management\n    config:\n      subtechnique: memroy\n",
        sb.UnknownTechniqueError,
        "did you mean 'memory'",
        "steps[0].config.subtechnique",
        4,
    ),
    (
        "orchestration-bad-depends",
        "steps:\n  - use: workflow_orchestration.orchestration\n    config:\n      subtechnique: sequential\n      steps:\n        - name: load\n          technique: workflow_orchestration.passthrough\n        - name: chunk\n          technique: workflow_orchestration.passthrough\n          depends_on: [lod]\n",
        sb.SpecError,
        "did you mean 'load'",
        "steps[1].depends_on[0]",
        10,
    ),
    (
        "retry-bad-backoff",
        "steps:\n  - use: workflow_orchestration.passthrough\n    retry:\n      max_attempts: 3\n      backoff: exponentail\n",
        sb.SpecError,
        "did you mean 'exponential'",
        "steps[0].retry.backoff",
        5,
    ),
    (
        "retry-zero-attempts",
        "steps:\n  - use: workflow_orchestration.passthrough\n    retry: {max_attempts: 0}\n",
        sb.SpecError,
        "at least 1",
        "steps[0].retry.max_attempts",
        3,
    ),
    (
        "config-not-mapping",
        "steps:\n  - use: workflow_orchestration.passthrough\n    config: [1, 2]\n",
        sb.SpecError,
        "must be a mapping",
        "steps[0].config",
        3,
    ),
    ("yaml-syntax", "steps:\n  - use: x\n   config: {\n", sb.YAMLSyntaxError, "indented 3 spaces", "", 3),
    (
        "duplicate-key",
        "steps:\n  - use: workflow_orchestration.passthrough\n    use: x\n",
        sb.SpecError,
        "duplicate key",
        "steps[0].use",
        3,
    ),
    (
        "checkpoint-type",
        "shops:\n  infrastructure:\n    config:\n      checkpointing:\n        enabled: yes\n        frequency: often\nsteps:\n  - use: workflow_orchestration.passthrough\n",
        sb.SpecError,
        "must be an integer",
        "checkpointing.frequency",
        6,
    ),
    (
        "observability-typo",
        "observability:\n  loging:\n    level: INFO\nsteps:\n  - use: workflow_orchestration.passthrough\n",
        sb.SpecError,
        "did you mean 'logging'",
        "observability.loging",
        2,
    ),
    ("empty-document", "", sb.SpecError, "empty", "", None),
    (
        "template-typo",
        "pipelines:\n  p:\n    steps:\n      - use: workflow_orchestration.passthrough\n        id: classify\n      - use: workflow_orchestration.passthrough\n        config:\n          x: ${clasify.type}\n",
        sb.ExpressionError,
        "did you mean 'classify'",
        "pipelines.p.steps[1].config.x",
        8,
    ),
    (
        "builder-code-syntax",
        "steps:\n  - use: workflow_orchestration.graph\n    config:\n      subtechnique: dynamic\n      builder_code: |\n        def build_graph(d)\n            return 1\n",
        sb.SpecError,
        "does not parse",
        "builder_code",
        6,
    ),
    (
        "bad-reference-syntax",
        "steps:\n  - use: workflow_orchestration.passthrough\n    condition: ${a b} == 1\n",
        sb.ExpressionError,
        "is not a reference",
        "steps[0].condition",
        3,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_pipeline_gives_located_error(case):
    _id, text, cls, fragment, path, line = case
    with pytest.raises(cls) as err:
        sb.Pipeline.from_yaml(textwrap.dedent(text))
    e = err.value
    assert isinstance(e, sb.SibylError)
    assert fragment in str(e), str(e)
    if path:
        assert e.path is not None and path in e.path, (e.path, str(e))
    if line is not None:
        assert e.line == line, (e.line, str(e))


def test_errors_are_never_bare_python_errors():
    """Random structural garbage must still come back as a SibylError."""
    garbage = [
        "steps: 3",
        "steps:\n  - 3",
        "pipelines: [1]",
        "pipelines:\n  p: 3",
        "- use: 3",
        "steps:\n  - use: workflow_orchestration.graph\n    config: {graph_definition: {nodes: [3]}}",
        "steps:\n  - use: workflow_orchestration.graph\n    config: {graph_definition: {nodes: [{id: a, technique: workflow_orchestration.passthrough}], edges: [3]}}",
        "steps:\n  - use: workflow_orchestration.orchestration\n    config: {steps: [{technique: x}]}",
        "steps:\n  - use: workflow_orchestration.orchestration\n    config: {steps: [3]}",
        "steps:\n  - use: workflow_orchestration.passthrough\n    depends_on: 3",
    ]
    for text in garbage:
        with pytest.raises(sb.SibylError):
            sb.Pipeline.from_yaml(text)


def test_error_line_shows_in_one_line_form():
    with pytest.raises(sb.SpecError) as err:
        sb.Pipeline.from_yaml(g(extra_edges="              - from: b\n                to: c\n"))
    one = err.value.one_line()
    assert one.startswith(
        "SpecError: <yaml>:17: pipelines.research_workflow.steps[0].config.graph_definition.edges[1].to"
    )
    assert err.value._render_traceback_() == [one]
