"""The layout is the architecture: import-linter's contracts (pyproject.toml) hold."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "5 kept, 0 broken" in done.stdout


def test_the_sandbox_contract_forbids_the_orchestrator_and_every_other_module_of_the_devkit():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    sandbox = next(c for c in contracts if c.get("source_modules") == ["devkit.sandbox"])
    devkit = {f"devkit.{p.stem}" for p in (ROOT / "devkit").iterdir()
              if (p.suffix == ".py" or (p / "__init__.py").exists())
              and p.stem not in ("__init__", "__main__", "sandbox")}
    assert set(sandbox["forbidden_modules"]) == {"orchestrator", "config", "workers", "tasks"} | devkit


def test_nothing_of_the_production_package_may_import_the_devkit():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert "devkit" in contracts["root_packages"]
    production = next(c for c in contracts["contracts"] if c.get("forbidden_modules") == ["devkit"])
    assert set(production["source_modules"]) == {"orchestrator", "config", "workers", "tasks"}
    assert not production.get("allow_indirect_imports")


def test_the_merchant_side_and_the_api_construct_no_engine_and_no_deps():
    """One bootstrap (entrypoints/runtime.py, or a test's harness) builds the saga's collaborators."""
    import re

    builders = re.compile(r"\b(Engine|Deps)\(")
    found = [f"{p.relative_to(ROOT)}:{n}" for folder in ("orchestrator/merchant", "orchestrator/entrypoints/api")
             for p in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if builders.search(line)]
    assert found == []


def test_the_checkout_service_uses_the_engine_it_is_given(harness):
    from orchestrator.merchant.service import CheckoutService

    engine = object()
    svc = CheckoutService(harness.deps, engine=engine)
    assert svc.engine is engine and svc.deps is harness.deps


def test_readiness_fails_on_what_the_runtime_names_required_defined_once():
    from orchestrator.entrypoints.api.routes import ops
    from orchestrator.entrypoints.runtime import Runtime

    assert ops.REQUIRED is Runtime.REQUIRED
    assert "REQUIRED = (" not in (ROOT / "orchestrator/entrypoints/api/routes/ops.py").read_text()
