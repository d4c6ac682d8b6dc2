"""CPU per gateway call: the project's transport against a plain ``requests.Session``, in one run.

Both post the same JSON to the same local HTTP server (keep-alive, one connection reused), in
alternating rounds; it prints each one's CPU per call (client and server together) and the ratio.

    .venv/bin/python bench/transport.py [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.plural.transport import PooledTransport, Request  # noqa: E402


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # headers and body leave in one write (two small ones stall on delayed ACKs)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"card_details": [{"card_network": "VISA"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def per_call(call: Callable[[], Any], calls: int) -> float:
    call()
    started = cpu()
    for _ in range(calls):
        call()
    return (cpu() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/pay/v1/getCardDetails"
    body = b'{"card_details": [{"payment_identifier": "4012001037141112"}]}'
    headers = {"Content-Type": "application/json", "Authorization": "Bearer t", "accept": "application/json"}
    session = requests.Session()
    transport = PooledTransport()
    baseline = lambda: session.post(url, data=body, headers=headers, timeout=(5, 30), allow_redirects=False).content  # noqa: E731
    ours = lambda: transport.send(Request("POST", url, headers, body)).body  # noqa: E731
    base_cpu, our_cpu = [], []
    for _ in range(args.rounds):
        base_cpu.append(per_call(baseline, args.calls))
        our_cpu.append(per_call(ours, args.calls))
    b, o = min(base_cpu), min(our_cpu)
    print(f"requests.Session {b * 1e3:.3f} ms CPU per call   PooledTransport {o * 1e3:.3f} ms   ratio {o / b:.2f} "
          f"(client and server, best of {args.rounds} rounds of {args.calls})")
    server.shutdown()


if __name__ == "__main__":
    main()
