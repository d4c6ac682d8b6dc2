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


#: what of SQLAlchemy and SQLModel a module outside the store may import: none of it builds SQL.
#: Exceptions (``sqlalchemy.exc``: the runner, the API's error handler and the CLI tell a database
#: outage by them) and type hints (a ``Connection`` or ``Engine`` handed to a store function, the
#: ``Session`` the outbox writes its event in).
NOT_SQL = {"sqlalchemy.exc": None, "sqlalchemy.engine": {"Connection", "Engine"}, "sqlmodel": {"Session"}}


def sql_imports(package: Path) -> list[str]:
    """Imports of SQLAlchemy or SQLModel, outside ``package``/store, that ``NOT_SQL`` does not allow."""
    found = []
    for p in sorted(package.rglob("*.py")):
        if (package / "store") in p.parents:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [(node.module, a.name) for a in node.names]
            else:
                continue
            for module, name in names:
                if module.split(".")[0] not in ("sqlalchemy", "sqlmodel"):
                    continue
                allowed = module in NOT_SQL and (NOT_SQL[module] is None or name in NOT_SQL[module])
                if not allowed:
                    found.append(f"{p.relative_to(package)}:{node.lineno} {module} {name or ''}".strip())
    return found


def test_no_module_outside_the_store_imports_sqlalchemys_or_sqlmodels_query_builders():
    assert sql_imports(STORE.parent) == []
