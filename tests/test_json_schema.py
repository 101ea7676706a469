"""Issue 17: the exported JSON Schema, the generated reference, and ``sibyl validate`` reporting every problem.

The schema is checked with the off-the-shelf ``jsonschema`` package against the loader over the seed's
documents and the project's malformed-document corpus (tests/test_spec_errors.py and tests/redteam/).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
from seed_examples import pipeline_blocks
from test_spec_errors import CASES

import sibyl_nb as sb
from sibyl_nb.cli import main
from sibyl_nb.document import compile as compile_mod
from sibyl_nb.document.json_schema import NOT_EXPRESSED, STRUCTURE, builtin_techniques, json_schema
from sibyl_nb.document.reference import reference_markdown
from sibyl_nb.document.schema import ConfigSchema, Field
from sibyl_nb.document.yaml_lines import load_yaml_with_lines
from sibyl_nb.techniques.registry import register_technique, unregister_technique

ROOT = Path(__file__).resolve().parent.parent
REDTEAM = Path(__file__).parent / "redteam"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "sibyl.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# -- one source of truth: the committed files are what the loader's objects generate ------------------


def test_committed_schema_is_current():
    expected = json.dumps(json_schema(builtin_techniques()), indent=2, ensure_ascii=False) + "\n"
    assert (ROOT / "sibyl.schema.json").read_text(encoding="utf-8") == expected, (
        "sibyl.schema.json is stale: run `sibyl schema > sibyl.schema.json`"
    )


def test_committed_reference_is_current():
    assert (ROOT / "docs" / "reference.md").read_text(encoding="utf-8") == reference_markdown(
        builtin_techniques()
    ), "docs/reference.md is stale: run `python -m sibyl_nb.document.reference > docs/reference.md`"


def test_structure_table_has_exactly_the_loaders_keys():
    lists = {
        "pipeline": compile_mod.PIPELINE_KEYS,
        "step": compile_mod.STEP_KEYS,
        "graph_config": compile_mod.GRAPH_CONFIG_KEYS,
        "graph_node": compile_mod.GRAPH_NODE_KEYS,
        "edge": compile_mod.EDGE_KEYS,
        "orchestration_config": compile_mod.ORCH_CONFIG_KEYS,
        "orchestration_step": compile_mod.ORCH_STEP_KEYS,
    }
    for kind, keys in lists.items():
        assert set(STRUCTURE[kind]) == set(keys), kind


def test_schema_says_what_it_cannot_express(validator):
    description = validator.schema["description"]
    for item in NOT_EXPRESSED:
        assert item in description
    assert "reserve_tokens < max_tokens" in json.dumps(
        validator.schema["$defs"]["workflow_orchestration.context_management"]
    )


def test_every_technique_and_subtechnique_is_in_schema_and_reference(validator):
    ref = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    for name, info in builtin_techniques().items():
        if info.compiles:
            continue
        assert name in validator.schema["$defs"], name
        assert f"### `{name}`" in ref
        for sub in info.config_schema.subtechniques or ():
            assert f"subtechnique `{sub}`" in ref, (name, sub)
            for key in info.config_schema.subtechniques[sub]:
                assert f"| `{key}` |" in ref


def test_sb_json_schema_and_cli_print_the_same(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(sb.json_schema()))
    assert main(["schema", "--markdown"]) == 0
    assert capsys.readouterr().out == reference_markdown()


# -- the seed's documents validate ------------------------------------------------------------------

SEEDS = pipeline_blocks()


@pytest.mark.parametrize("heading,text", SEEDS, ids=[f"{i}-{h}" for i, (h, _) in enumerate(SEEDS)])
def test_seed_document_validates_against_exported_schema(validator, heading, text):
    data, _ = load_yaml_with_lines(text)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]
    assert errors == []


# -- the malformed corpus: the schema refuses what the loader refuses for shape or range --------------

REFERENCE = (
    "references (edge ends, depends_on, cycles) are checked by the loader, not expressible in JSON Schema"
)
EXPRESSION = "condition / template / builder_code syntax and bounds are parsed by the loader only"
TRUST = "trust depends on how the document is loaded (trust_code) and where paths/URLs lead"
RULE = "a relation between two keys (Rule), not expressible in JSON Schema"
FINITE = "JSON has no NaN/Infinity; YAML's .nan is refused by the loader only"
UNIQUE = "uniqueness by a key (node ids, level names) is not expressible in JSON Schema"

LOADER_ONLY = {
    "edge-to-missing-node": REFERENCE,
    "edge-typo-did-you-mean": REFERENCE,
    "cycle-in-dag": REFERENCE,
    "cycle-in-conditional": REFERENCE,
    "duplicate-node-id": UNIQUE,
    "bad-condition-syntax": EXPRESSION,
    "condition-with-call": EXPRESSION,
    "unknown-ref-did-you-mean": EXPRESSION,
    "orchestration-bad-depends": REFERENCE,
    "template-typo": EXPRESSION,
    "builder-code-syntax": EXPRESSION,
    "bad-reference-syntax": EXPRESSION,
    **{
        f"redteam/expressions/{n}.yaml": EXPRESSION
        for n in [
            "bytes",
            "call",
            "comprehension",
            "deep_nesting",
            "deep_not",
            "dunder_attribute",
            "dunder_ref",
            "edge_condition_bomb",
            "lambda",
            "long_text",
            "percent_star_width",
            "percent_width",
            "placeholder_name",
            "pow",
            "repeat_count_first",
            "repeat_nested_list",
            "repeat_str_product",
            "repeat_str_thousand_cubed",
            "repeat_tuple",
            "runtime_divide_zero",
            "slice",
            "template_dunder_in_prompt",
            "template_dunder_nested",
            "unbalanced",
        ]
    },
    **{
        f"redteam/security/{n}.yaml": TRUST
        for n in [
            "checkpoint_path_outside",
            "dask_executor_mapping",
            "dask_graph_executor",
            "dask_scheduler_address",
            "dask_tcp_executor",
            "files_dotdot_escape",
            "files_etc_passwd",
            "files_home",
            "files_json_etc",
            "files_proc_environ",
            "files_root_escape",
            "postgres_host_in_query",
            "postgres_remote_cache",
            "provider_remote_base_url",
            "provider_replay_dir_outside",
            "redis_remote_checkpoint",
            "session_directory_pseudo_fs",
            "session_remote_database",
            "session_sqlite_pseudo_fs",
            "state_remote_redis",
        ]
    },
    "redteam/values/chunking_overlap_not_below_size.yaml": RULE,
    "redteam/values/context_compression_ratio_nan.yaml": FINITE,
    "redteam/values/context_levels_duplicate.yaml": UNIQUE,
    "redteam/values/context_reserve_not_below_max.yaml": RULE,
    "redteam/values/context_reserve_over_default_max.yaml": RULE,
}


def _corpus() -> list[tuple[str, str]]:
    docs = [(case[0], case[1]) for case in CASES]
    docs += [(f"redteam/{p.relative_to(REDTEAM)}", p.read_text()) for p in sorted(REDTEAM.glob("*/*.yaml"))]
    return docs


CORPUS = _corpus()


@pytest.mark.parametrize("name,text", CORPUS, ids=[n for n, _ in CORPUS])
def test_schema_and_loader_agree_on_the_corpus(validator, name, text):
    try:
        data, _ = load_yaml_with_lines(text)
    except sb.SpecError:
        pytest.skip("not YAML the loader parses (syntax, limits): no instance to give a JSON Schema")
    trusted = "# trust: true" in text
    try:
        sb.load_document(text, trust_code=trusted)
        loader_refuses = False
    except sb.SibylError:
        loader_refuses = True
    schema_refuses = any(True for _ in validator.iter_errors(data))
    if name in LOADER_ONLY:
        # excluded with a reason; still checked, so the list is updated when the schema learns the rule
        assert loader_refuses and not schema_refuses, LOADER_ONLY[name]
    else:
        assert schema_refuses == loader_refuses, (
            f"the loader {'refuses' if loader_refuses else 'accepts'} {name} and sibyl.schema.json does not "
            "agree: teach sibyl_nb/document/json_schema.py the rule (then `sibyl schema > sibyl.schema.json`), or, "
            "when JSON Schema cannot express it, add the case to LOADER_ONLY with the reason"
        )


def test_corpus_has_shape_and_range_refusals_the_schema_catches(validator):
    caught = 0
    for name, text in CORPUS:
        if name in LOADER_ONLY:
            continue
        try:
            data, _ = load_yaml_with_lines(text)
        except sb.SpecError:
            continue
        caught += any(True for _ in validator.iter_errors(data))
    assert caught >= 66  # 66 of the 78 parsed, not excluded documents when written (the other 12 load)


def test_out_of_range_and_unused_keys_are_refused_at_their_path(validator):
    doc = {
        "pipelines": {
            "p": {
                "steps": [
                    {
                        "use": "workflow_orchestration.session_management",
                        "config": {"subtechnique": "persistent", "max_tokens": 100},
                    },
                    {"use": "workflow_orchestration.context_management", "config": {"window_size": 0}},
                ]
            }
        }
    }

    def leaves(errors):  # the anyOf at the top wraps them: the errors inside say where
        for e in errors:
            yield list(e.absolute_path)
            yield from leaves(e.context or ())

    flat = list(leaves(validator.iter_errors(doc)))
    assert ["pipelines", "p", "steps", 0, "config"] in flat  # max_tokens: 'persistent' does not use it
    assert ["pipelines", "p", "steps", 1, "config", "window_size"] in flat


# -- a user technique's declared schema is exported --------------------------------------------------


def test_user_technique_with_a_config_schema_is_in_the_export():
    schema = ConfigSchema(
        {
            "size": Field(int, "how many", default=3, minimum=1, maximum=10),
            "mode_word": Field(("a", "b"), "a word"),
        },
        subtechniques={"small": ("size",), "words": ("mode_word",)},
        default_subtechnique="small",
    )
    register_technique("userland.counter", lambda ctx: {"n": 1}, config_schema=schema)
    try:
        v = jsonschema.Draft202012Validator(sb.json_schema())

        def doc(config):
            return {"steps": [{"use": "userland.counter", "config": config}]}

        assert not list(v.iter_errors(doc({"size": 4})))
        assert not list(v.iter_errors(doc({"subtechnique": "words", "mode_word": "b"})))
        assert list(v.iter_errors(doc({"size": 11})))  # range
        assert list(v.iter_errors(doc({"subtechnique": "words", "size": 4})))  # key 'words' does not use
        assert list(v.iter_errors(doc({"subtechnique": "huge"})))  # unknown subtechnique
        assert "userland.counter" in reference_markdown()
        for config in ({"size": 11}, {"subtechnique": "words", "size": 4}, {"subtechnique": "huge"}):
            with pytest.raises(sb.SpecError):
                sb.load_document(json.dumps(doc(config)) + "\n")
    finally:
        unregister_technique("userland.counter")


# -- sibyl validate: every problem, path:line:col: message -------------------------------------------

MULTI = textwrap.dedent(
    """\
    pipelines:
      p:
        max_concurrent: 0
        steps:
          - use: workflow_orchestration.context_management
            config:
              subtechnique: window
              max_tokens: 0
              window_size: 0
          - use: ai_generation.generation
            config:
              temprature: 0.3
    observability:
      logging:
        level: LOUD
    """
)


def test_validate_reports_every_problem_with_line_and_column(tmp_path, capsys):
    (tmp_path / "multi.yaml").write_text(MULTI)
    assert main(["validate", str(tmp_path / "multi.yaml")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    f = tmp_path / "multi.yaml"
    assert [line.split(": ", 2)[0] for line in lines] == [
        f"{f}:3:5",
        f"{f}:8:11",
        f"{f}:9:11",
        f"{f}:12:11",
        f"{f}:15:5",
    ]
    assert "pipelines.p.max_concurrent: max_concurrent must be at least 1" in lines[0]
    assert "'max_tokens' must be at least 1" in lines[1]
    assert "'window_size' must be at least 1" in lines[2]
    assert "unknown key 'temprature'" in lines[3] and "did you mean 'temperature'" in lines[3]
    assert "'LOUD' is not one of" in lines[4]


def test_each_reported_problem_is_the_loaders_own_error(tmp_path, capsys):
    """The first problem is exactly the loader's error; fixing it makes the second the loader's next."""
    f = tmp_path / "multi.yaml"
    f.write_text(MULTI)
    with pytest.raises(sb.SpecError) as first:
        sb.load_document(f)
    assert main(["validate", str(f)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"{f}:{first.value.line}:5: {first.value.path}: {first.value.message}"
    f.write_text(MULTI.replace("max_concurrent: 0", "max_concurrent: 2"))
    with pytest.raises(sb.SpecError) as second:
        sb.load_document(f)
    assert main(["validate", str(f)]) == 1
    again = capsys.readouterr().err.strip().splitlines()
    assert again == lines[1:]
    assert again[0].endswith(f"{second.value.path}: {second.value.message}")


def test_validate_takes_folders_and_exits_zero_only_when_all_load(tmp_path, capsys):
    good = pipeline_blocks()[0][1]
    (tmp_path / "docs" / "nested").mkdir(parents=True)
    (tmp_path / "docs" / "a.yaml").write_text(good)
    (tmp_path / "docs" / "nested" / "b.yml").write_text(good)
    (tmp_path / "docs" / "notes.txt").write_text("not yaml: [")
    assert main(["validate", str(tmp_path / "docs")]) == 0
    out = capsys.readouterr().out
    assert out.count("ok: ") == 2 and "a.yaml" in out and "b.yml" in out
    (tmp_path / "docs" / "nested" / "c.yaml").write_text("steps:\n  - use: rag.retrival\n")
    assert main(["validate", str(tmp_path / "docs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 'docs' / 'nested' / 'c.yaml'}:2:5: ")
    assert "did you mean 'rag.retrieval'" in err


def test_validate_a_syntax_error_and_a_missing_file(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("pipelines:\n  p:\n    steps: [\n")
    assert main(["validate", str(tmp_path / "s.yaml"), str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{tmp_path / 'nope.yaml'}:1:1: no such file")
    assert err[1].startswith(f"{tmp_path / 's.yaml'}:3:1: ") and "never closed" in err[1]


def test_a_removed_list_item_keeps_its_siblings_paths_and_lines(tmp_path, capsys):
    f = tmp_path / "bare.yaml"
    f.write_text(
        "- use: rag.retrieval\n"
        "  config:\n"
        "    top_k: 0\n"
        "- config: {}\n"
        "- use: ai_generation.generation\n"
        "  config:\n"
        "    temprature: 1\n"
    )
    assert main(["validate", str(f)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        [f"{f}:3:5", "steps[0].config.top_k"],
        [f"{f}:4:3", "steps[1]"],
        [f"{f}:7:5", "steps[2].config.temprature"],
    ]
    assert "a step needs 'use: shop.technique'" in lines[1]


@pytest.mark.parametrize("name,text", CORPUS, ids=[n for n, _ in CORPUS])
def test_collected_problems_start_with_the_loaders_error(name, text):
    """Over the whole corpus: no problems exactly when the document loads, else the first is the loader's."""
    from sibyl_nb.document.problems import document_problems

    trusted = "# trust: true" in text
    problems = document_problems(text, "<yaml>", trusted=trusted)
    try:
        sb.load_document(text, trust_code=trusted)
    except sb.SibylError as exc:
        assert problems, "the loader refuses it, the collector found nothing"
        assert (problems[0].line, problems[0].message) == (exc.line or 1, exc.message)
        assert problems[0].path == (exc.path or "")
    else:
        assert problems == []


def test_cell_completion_offers_the_schemas_keys_for_the_chosen_subtechnique():
    from sibyl_nb.notebook.completion import complete

    cell = (
        "%%sibyl_pipeline\n"
        "steps:\n"
        "  - use: workflow_orchestration.session_management\n"
        "    config:\n"
        "      subtechnique: sliding_window\n"
        "      win"
    )
    assert complete(cell, 5, len("      win")) == ["window_size"]
    stateless = cell.replace("sliding_window", "stateless").replace("      win", "      ")
    from sibyl_nb.techniques.registry import get_technique

    expected = sorted(
        get_technique("workflow_orchestration.session_management").config_schema.keys_for("stateless")
    )
    assert complete(stateless, 5, len("      ")) == expected
    assert "window_size" not in expected
