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
