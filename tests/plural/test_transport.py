"""The real transport against a real local HTTP server: answers of every status come back as
they are; a call never sent and a call sent but unanswered raise different errors."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from orchestrator.plural.errors import ConnectionFailed, OutcomeUnknown
from orchestrator.plural.transport import PooledTransport, Request


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one write per answer

    def do_POST(self) -> None:
        got = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/hang-up":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = 500 if self.path == "/broken" else 200
        body = b'{"echo": ' + got + b', "auth": "' + self.headers["Authorization"].encode() + b'"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "3")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def post(path: str, base: str, timeout: tuple[float, float] = (2.0, 5.0)) -> Request:
    return Request("POST", base + path, {"Authorization": "Bearer t", "Content-Type": "application/json"},
                   b'{"a": 1}', timeout)


def test_an_answer_comes_back_with_its_status_body_and_headers(base):
    answer = PooledTransport().send(post("/ok", base))
    assert answer.status == 200
    assert answer.body == b'{"echo": {"a": 1}, "auth": "Bearer t"}'
    assert answer.header("retry-after") == "3"


def test_a_server_error_is_an_answer_not_an_exception(base):
    assert PooledTransport().send(post("/broken", base)).status == 500


def test_a_redirect_is_returned_not_followed(base):
    answer = PooledTransport().send(Request("GET", base + "/moved", {}))
    assert (answer.status, answer.header("Location")) == (302, "/elsewhere")


def test_connections_are_reused_across_calls(base):
    transport = PooledTransport()
    for _ in range(5):
        transport.send(post("/ok", base))
    pool = transport._pool.connection_from_url(base)
    assert pool.num_connections == 1


def test_a_refused_connection_was_never_sent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: a connect is refused
        with pytest.raises(ConnectionFailed):
            PooledTransport().send(post("/ok", f"http://127.0.0.1:{port}"))


def test_no_answer_in_time_is_an_unknown_outcome(base):
    with pytest.raises(OutcomeUnknown):
        PooledTransport().send(post("/slow", base, timeout=(2.0, 0.2)))


def test_a_connection_dropped_after_sending_is_an_unknown_outcome(base):
    with pytest.raises(OutcomeUnknown):
        PooledTransport().send(post("/hang-up", base))
