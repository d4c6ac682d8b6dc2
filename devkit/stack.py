"""The whole system as processes: Redis, the sandbox, the API, a worker and beat.

``python -m devkit up`` runs a ``Stack`` in the foreground; the end-to-end tests run one too, and can
kill and restart any of its processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from devkit.redis_server import EmbeddedRedis, dies_with_parent, env_with

LABEL_WIDTH = 7
#: the repository's root: ``devkit`` is not installed (it stays out of the production wheel), so the
#: processes a stack spawns find it here, on their PYTHONPATH
ROOT = Path(__file__).resolve().parents[1]


def with_root(pythonpath: str | None) -> str:
    """``PYTHONPATH`` with the repository's root first (so ``python -m devkit`` runs from anywhere)."""
    parts = [p for p in (pythonpath or "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    return os.pathsep.join([str(ROOT), *parts])


def _label(name: str, stream: IO[bytes] | None) -> None:
    """Copy a child's output to ours, each line prefixed with the child's name."""
    if stream is None:
        return
    prefix = f"{name:<{LABEL_WIDTH}}| ".encode()
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.buffer.flush()


@dataclass
class Stack:
    data_dir: Path
    api_port: int = 8000
    sandbox_port: int = 8700
    redis_port: int = 6390
    host: str = "127.0.0.1"
    redis_url: str | None = None
    with_sandbox: bool = True
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None  # None: children write to this process's stdout/stderr
    components: tuple[str, ...] = ("sandbox", "api", "worker", "beat")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[str, dict[str, str] | None]] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.host}:{self.sandbox_port}"

    def child_env(self) -> dict[str, str]:
        self.data_dir = Path(self.data_dir).resolve()
        values: dict[str, str | None] = {
            "DATA_DIR": str(self.data_dir),
            "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{self.data_dir / 'orchestrator.store'}",
            "REDIS_URL": self.redis_url,
            "PUBLIC_BASE_URL": self.api_url,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": with_root(os.environ.get("PYTHONPATH")),
            # every process counts into its own file here; the API's /metrics adds them up
            "PROMETHEUS_MULTIPROC_DIR": str(self.data_dir / "metrics"),
        }
        if self.with_sandbox:
            values.update({
                "PLURAL_API_BASE": self.sandbox_url,
                "PLURAL_TOKEN_URL": f"{self.sandbox_url}/api/auth/v1/token",
                "SANDBOX_WEBHOOK_URL": f"{self.api_url}/webhooks/plural",
                "SANDBOX_PUBLIC_URL": self.sandbox_url,
            })
        env = env_with(**values)
        env.update(self.env)
        return env

    def start(self, timeout: float = 30.0) -> None:
        from config import load_settings
        from orchestrator.store.migrate import upgrade

        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.log_dir:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        import shutil

        shutil.rmtree(self.data_dir / "metrics", ignore_errors=True)  # counts of an earlier run
        (self.data_dir / "metrics").mkdir()
        if self.redis_url is None:
            log = Path(self.log_dir) / "redis.log" if self.log_dir else None
            self.redis = EmbeddedRedis(self.redis_port, self.data_dir / "redis", log_file=log)
            self.redis_url = self.redis.start()
        env = self.child_env()
        upgrade(load_settings(data_dir=env["DATA_DIR"], database_url=env["DATABASE_URL"]).sqlalchemy_url)
        for name in self.components:
            if name == "sandbox" and not self.with_sandbox:
                continue
            self.spawn(name)
        self.wait_ready(timeout)

    def command(self, name: str) -> list[str]:
        if name == "sandbox":  # a development tool: the devkit's command
            return [sys.executable, "-m", "devkit", "sandbox", "--host", self.host, "--port", str(self.sandbox_port)]
        base = [sys.executable, "-m", "orchestrator.entrypoints.cli"]
        if name == "api":
            return base + ["api", "--host", self.host, "--port", str(self.api_port)]
        return base + [name]

    def spawn(self, name: str, *, command: str | None = None, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """Start one process; ``command`` and ``env`` let a test add a second beat or worker."""
        out: Any = subprocess.PIPE  # the terminal: each line labelled with its process
        if self.log_dir:
            handle = open(Path(self.log_dir) / f"{name}.log", "ab")
            self._logs.append(handle)
            out = handle
        if command is None and name in self.commands:
            command, env = self.commands[name]
        proc = subprocess.Popen(self.command(command or name), env={**self.child_env(), **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=dies_with_parent())
        if out is subprocess.PIPE:
            threading.Thread(target=_label, args=(name, proc.stdout), name=f"log-{name}", daemon=True).start()
        self.processes[name] = proc
        self.commands[name] = (command or name, env)
        return proc

    def wait_ready(self, timeout: float = 30.0) -> None:
        checks = {"api": f"{self.api_url}/health", "sandbox": f"{self.sandbox_url}/sandbox/health"}
        deadline = time.time() + timeout
        for name, url in checks.items():
            if name not in self.processes:
                continue
            while True:
                proc = self.processes[name]
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}")
                try:
                    if requests.get(url, timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"{name} did not become ready")
                time.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.processes[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(15)

    def restart(self, name: str) -> None:
        if name in self.processes and self.processes[name].poll() is None:
            self.kill(name, signal.SIGTERM)
        self.spawn(name)
        if name in ("api", "sandbox"):
            self.wait_ready()

    def restart_redis(self, down_seconds: float = 0.0) -> None:
        """Stop the embedded Redis and start it again on the same port and data (AOF)."""
        assert self.redis is not None, "only the embedded Redis can be restarted"
        self.redis.stop()
        time.sleep(down_seconds)
        self.redis.start()

    #: processes a supervisor restarts when they exit (they hold no state of their own)
    RESTARTABLE = ("worker", "beat")

    def supervise(self, restarts: dict[str, list[float]], budget: int = 5, window: float = 60.0) -> str | None:
        """One look at the children: restart a worker or beat that exited (at most ``budget`` times
        in ``window`` seconds). Returns why the stack must stop, or None while all is well."""
        if self.redis is not None and not self.redis.alive():
            return "the embedded Redis exited"
        for name, proc in list(self.processes.items()):
            if proc.poll() is None:
                continue
            recent = [t for t in restarts.get(name, []) if t > time.monotonic() - window]
            if self.commands.get(name, (name, None))[0] not in self.RESTARTABLE or len(recent) >= budget:
                return f"{name} exited with {proc.returncode}"
            restarts[name] = recent + [time.monotonic()]
            print(f"{name} exited with {proc.returncode}; restarting it", file=sys.stderr, flush=True)
            self.spawn(name)
        return None

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.time() + 15
        for proc in self.processes.values():
            try:
                proc.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self.redis:
            self.redis.stop()
        for handle in self._logs:
            handle.close()

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
