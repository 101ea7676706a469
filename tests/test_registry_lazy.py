"""Built-in techniques load on first use, one module at a time; the table that says where each lives
matches what the modules really register."""

from __future__ import annotations

import json
import subprocess
import sys

import sibyl_nb as sb
from sibyl_nb.techniques import registry


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_table_names_every_builtin_and_the_module_that_registers_it():
    found = _child(
        "import importlib, json\n"
        "from sibyl_nb.techniques import registry\n"
        "import pkgutil, sibyl_nb.techniques.builtins as b\n"
        "mods = sorted(set(registry.BUILTIN_MODULES.values())\n"
        "    | {b.__name__ + '.' + m.name for m in pkgutil.iter_modules(b.__path__)})\n"
        "where = {}\n"
        "for m in mods:\n"
        "    before = set(registry._REGISTRY)\n"
        "    importlib.import_module(m)\n"
        "    where.update({n: m for n in set(registry._REGISTRY) - before})\n"
        "print(json.dumps(where))"
    )
    assert found == registry.BUILTIN_MODULES


def test_a_pipeline_of_user_techniques_loads_no_builtin_and_no_yaml():
    loaded = _child(
        "import json, sys\n"
        "import sibyl_nb as sb\n"
        "@sb.technique('mine.step', blocking=False)\n"
        "def step(ctx): return {'ok': True}\n"
        "out = sb.Pipeline.from_dict({'steps': [{'use': 'mine.step'}]}).run().output\n"
        "assert out == {'ok': True}\n"
        "print(json.dumps(sorted(m for m in sys.modules if '.builtins.' in m or m.startswith('yaml')\n"
        "    or m.endswith(('sessions.technique', 'context.technique', 'state.technique')))))"
    )
    assert loaded == []


def test_one_builtin_step_loads_only_its_own_module():
    loaded = _child(
        "import json, sys\n"
        "import sibyl_nb as sb\n"
        "sb.Pipeline.from_dict({'steps': [{'use': 'workflow_orchestration.passthrough'}]}).run({'q': 1})\n"
        "print(json.dumps(sorted(m for m in sys.modules if '.builtins.' in m)))"
    )
    assert loaded == ["sibyl_nb.techniques.builtins.workflow"]


def test_a_user_technique_under_a_builtin_name_survives_the_builtin_module_loading():
    loaded = _child(
        "import json\n"
        "import sibyl_nb as sb\n"
        "@sb.technique('rag.search', blocking=False)\n"
        "def mine(ctx): return {'mine': True}\n"
        "from sibyl_nb.techniques.registry import get_technique\n"
        "get_technique('rag.retrieval')  # loads the rag module, which registers rag.search too\n"
        "print(json.dumps(get_technique('rag.search').fn.__name__))"
    )
    assert loaded == "mine"


def test_unknown_names_still_get_a_suggestion_and_listing_loads_everything():
    try:
        registry.get_technique("rag.retreival")
    except sb.UnknownTechniqueError as exc:
        assert "did you mean 'rag.retrieval'" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("no error")
    assert set(registry.BUILTIN_MODULES) <= set(registry.registered_techniques())
    assert registry.has_technique("ai_generation.generation")
