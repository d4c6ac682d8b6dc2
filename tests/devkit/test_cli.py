"""The development commands are the devkit's (``python -m devkit``), not the production command's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devkit.stack import ROOT

DEV_COMMANDS = ("up", "sandbox", "chaos", "demo")


def test_the_sandbox_command_refuses_to_start_outside_the_sandbox(monkeypatch, capsys):
    from devkit.cli import main

    for name, value in {"PLURAL_ENV": "production", "PLURAL_CLIENT_ID": "cid", "PLURAL_CLIENT_SECRET": "x" * 20,
                        "PLURAL_WEBHOOK_SECRET": "w" * 20, "PLURAL_CALLBACK_SECRET": "ab12",
                        "ORCHESTRATOR_API_KEY": "k" * 20,
                        "CARD_ENCRYPTION_KEY": "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="}.items():
        monkeypatch.setenv(name, value)
    assert main(["sandbox", "--port", "0"]) == 2
    assert "PLURAL_ENV=sandbox" in capsys.readouterr().err


def test_up_shows_its_defaults(capsys):
    from devkit.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--help"])
    out = capsys.readouterr().out
    assert "(default: 6390)" in out and ":param" not in out and "``" not in out


@pytest.mark.parametrize("command", DEV_COMMANDS)
def test_the_production_command_has_no_development_commands(command, capsys):
    from orchestrator.entrypoints.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "invalid choice" in capsys.readouterr().err


def test_python_m_devkit_lists_the_development_commands():
    done = subprocess.run([sys.executable, "-m", "devkit", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert all(command in done.stdout for command in DEV_COMMANDS)
