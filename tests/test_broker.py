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
    from orchestrator.runtime import redis_client
    from tests.conftest import at_once

    client = redis_client(Settings(redis_url=real_redis.url, worker_concurrency=8))
    bound = client.connection_pool.max_connections
    # more threads than connections, each holding one for a moment (a blocking pop on nothing)
    got = at_once(lambda: client.blpop(["nothing"], timeout=0.3), bound + 16)
    assert got == [None] * (bound + 16)
