"""The processes a stack spawns find the devkit, which is not installed: the repository's root is on
their PYTHONPATH, and the sandbox runs as the devkit's command."""

from __future__ import annotations

import os
import subprocess
import sys

from devkit.stack import ROOT, Stack


def test_children_have_the_repository_on_their_path_and_import_the_devkit_from_anywhere(tmp_path):
    env = Stack(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0").child_env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    done = subprocess.run([sys.executable, "-c", "import devkit.sandbox, devkit.stack"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_sandbox_is_the_devkits_command_and_the_rest_the_orchestrators(tmp_path):
    stack = Stack(data_dir=tmp_path)
    assert stack.command("sandbox")[1:4] == ["-m", "devkit", "sandbox"]
    assert stack.command("worker")[1:] == ["-m", "orchestrator.entrypoints.cli", "worker"]
