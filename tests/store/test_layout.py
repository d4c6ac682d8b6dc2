"""The store is split by job: no module of it is a long file, and it hides no import in a function."""

import ast
from pathlib import Path

STORE = Path(__file__).resolve().parents[2] / "orchestrator" / "store"


def modules():
    return sorted(p for p in STORE.glob("*.py"))


def test_no_module_of_the_store_is_longer_than_450_lines():
    long = {p.name: n for p in modules() if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_the_store_imports_its_own_modules_at_the_top_only():
    hidden = []
    for p in modules():
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [f"{p.name}:{n.lineno}" for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert hidden == []


def test_sqlalchemys_engine_factory_is_the_database_module():
    assert (STORE / "database.py").exists() and not (STORE / "engine.py").exists()
