"""Redis under many threads, over a real Redis: the broker's transport (kombu's, sharing one
client per channel: messages go and come as before, a replaced pool gets a client of its own) and
the runtime's client (a thread beyond its pool waits for a connection)."""

from __future__ import annotations

from kombu import Connection

from workers.broker import TRANSPORT


def test_celery_uses_it_for_a_redis_broker():
    from workers.celery_app import app

    assert app.conf.broker_transport == TRANSPORT


def test_messages_are_published_consumed_and_acknowledged(real_redis):
    with Connection(real_redis.url, transport=TRANSPORT) as conn:
        queue = conn.SimpleQueue("t")
        for n in range(3):
            queue.put({"n": n})
        got = []
        for _ in range(3):
            message = queue.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
        assert got == [0, 1, 2]
        channel = conn.default_channel
        assert channel._create_client().zcard(channel.unacked_index_key) == 0  # every ack landed
        queue.close()


def test_one_client_per_pool(real_redis):
    with Connection(real_redis.url, transport=TRANSPORT) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        channel._pool = None  # what kombu does after a connection error
        again = channel._create_client()
        assert again is not first and again.connection_pool is channel.pool
        assert again.ping()



def test_the_runtimes_redis_client_makes_threads_beyond_its_pool_wait_not_fail(real_redis):
    from config import Settings
    from orchestrator.entrypoints.runtime import redis_client
    from tests.conftest import at_once

    client = redis_client(Settings(redis_url=real_redis.url, worker_concurrency=8))
    bound = client.connection_pool.max_connections
    # more threads than connections, each holding one for a moment (a blocking pop on nothing)
    got = at_once(lambda: client.blpop(["nothing"], timeout=0.3), bound + 16)
    assert got == [None] * (bound + 16)


def test_a_worker_survives_redis_restarts_and_keeps_running_tasks(tmp_path):
    """Issue 22, finding 14: kombu rebuilds a closing channel's pool to give back its
    unacknowledged messages after the connection has dropped its client; that crashed the worker
    (``'NoneType' object has no attribute 'hostname'``). Redis restarted under a real worker with
    tasks in flight, ten times: the worker lives, and runs the task sent after each restart."""
    import subprocess
    import sys
    import time

    from devkit.redis_server import EmbeddedRedis, env_with, free_port
    from tests.broker_worker import probe

    redis_server = EmbeddedRedis(free_port(), tmp_path / "redis", persistent=True)
    redis_server.start()
    out, log = tmp_path / "ran", tmp_path / "worker.log"
    env = env_with(REDIS_URL=redis_server.url, DATA_DIR=str(tmp_path))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.broker_worker", "worker", "--pool=threads", "--concurrency=4",
         "-Q", "probe", "--without-gossip", "--without-mingle", "--loglevel=INFO"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    sender = probe.app.connection_for_write(redis_server.url)

    def ran(tag: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.poll() is None:
            if out.exists() and tag in out.read_text().split():
                return True
            time.sleep(0.1)
        return False

    def send(tag: str, seconds: float = 0.0) -> None:
        for _ in range(100):  # the sender's own connection may meet the restart too
            try:
                probe.apply_async((str(out), tag, seconds), queue="probe", connection=sender, retry=False)
                return
            except Exception:
                sender.collect()
                time.sleep(0.1)
        raise AssertionError(f"could not send {tag}")

    try:
        send("ready")
        assert ran("ready", 60), log.read_text()[-3000:]
        for n in range(10):
            for k in range(3):  # in flight, unacknowledged, when Redis goes away
                send(f"slow-{n}-{k}", 1.5)
            time.sleep(0.5)
            redis_server.stop()
            time.sleep(0.5)
            redis_server.start()
            send(f"after-{n}")
            assert ran(f"after-{n}"), f"restart {n}: worker exit code {worker.poll()}\n" + log.read_text()[-3000:]
        assert worker.poll() is None
        assert "Unrecoverable error" not in log.read_text()
    finally:
        sender.release()
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        redis_server.stop()
