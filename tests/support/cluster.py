"""A multi-node Ray cluster on this machine, started the way users start one: ``ray start
--head`` with no CPUs, then ``ray start --address=...`` per worker node, each node its own set of
processes. A node is "lost" by SIGKILL to every process it started (found by a marker in their
environment), as a machine that dies would lose them. Never ``ray stop``: it would stop every
Ray on the machine, the test session's own cluster included."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve_app.launch import haproxy_state_environment
from tests.conftest import REPO_ROOT, free_port, own_serve_ports

# The test interpreter's own scripts (the venv's): a git worktree of the checkout has no .venv.
RAY = Path(sys.executable).parent / "ray"
SERVE = Path(sys.executable).parent / "serve"
MARKER = "ZHSERVE_TEST_NODE"


def with_checkout_on_path(env: dict[str, str]) -> dict[str, str]:
    """The cluster's processes import this checkout's code (a git worktree beside an editable
    install of another checkout would otherwise serve that one's)."""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _bin(path: Path, name: str) -> str:
    return str(path) if path.exists() else name


def processes_marked(value: str) -> list[int]:
    """Processes whose environment carries ``MARKER=value`` (a node's raylet, agents, workers)."""
    wanted = f"{MARKER}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def with_descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(pids), list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


@dataclass
class LocalCluster:
    """A head (0 CPUs: controller and HTTP proxy only) and named worker nodes."""

    environment: Mapping[str, str]
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="zhmn-")))
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: list[str] = field(default_factory=list)
    serve_ports: dict[str, str] = field(default_factory=own_serve_ports)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _env(self, node: str) -> dict[str, str]:
        env = {**os.environ, **self.environment, MARKER: f"{self.tag}-{node}", "RAY_AUTH_MODE": "token"}
        env.update(haproxy_state_environment(str(self.workdir / "haproxy")))  # not the session cluster's
        env.update(self.serve_ports)
        env["RAY_ADDRESS"] = self.address
        return with_checkout_on_path(env)

    def _start(self, node: str, arguments: list[str]) -> None:
        log = (self.workdir / f"{node}.log").open("wb")
        # Ports of their own: the defaults (the dashboard agent's 52365, ...) may be taken by
        # another Ray on this machine, such as the test session's own cluster.
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
        subprocess.Popen(
            [_bin(RAY, "ray"), "start", "--block", "--disable-usage-stats", *ports, *arguments],
            env=self._env(node),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.nodes.append(node)

    def start_head(self, *extra: str) -> None:
        """The CPU-less head node; ``extra``: more ``ray start`` arguments. The token first, as a
        user makes it: ``ray start --head`` with token auth refuses to start without one, and
        only ``ray.init`` (the session cluster) would otherwise have written it."""
        self.cli(RAY, "get-auth-token", "--generate")
        self._start(
            "head",
            [
                "--head",
                "--num-cpus=0",
                f"--port={self.gcs_port}",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.workdir / 'ray'}",
                *extra,
            ],
        )
        self.wait_nodes(1)

    def add_worker(self, name: str, cpus: int = 2) -> None:
        """One worker node; started one at a time (two raylets starting at once race for a port)."""
        count = len(self.alive_nodes())
        self._start(name, [f"--address={self.address}", f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1"])
        self.wait_nodes(count + 1)

    def alive_nodes(self) -> list[dict[str, Any]]:
        result = self.cli(RAY, "list", "nodes", "--format", "json", "--filter", "state=ALIVE", check=False)
        try:
            return list(json.loads(result.stdout)) if result.returncode == 0 else []
        except ValueError:  # the head not answering yet: not JSON
            return []

    def wait_nodes(self, count: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.alive_nodes()) >= count:
                return
            time.sleep(1)
        logs = "\n".join((self.workdir / f"{node}.log").read_text(errors="replace")[-1500:] for node in self.nodes)
        raise TimeoutError(f"{count} Ray nodes not alive after {timeout_s} s:\n{logs}")

    def cli(self, program: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        name = program.name
        return subprocess.run(
            [_bin(program, name), *arguments],
            env=self._env("cli"),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=180,
            check=check,
        )

    def serve_deploy(self, config: Path, timeout_s: float = 120) -> None:
        """`serve deploy CONFIG` against the head's dashboard, repeated while the dashboard is
        still coming up."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.cli(SERVE, "deploy", "--address", self.dashboard, str(config), check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve deploy failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
            time.sleep(2)

    def replica_nodes(self) -> dict[str, list[str]]:
        """Node id of every live Serve replica, by deployment."""
        result = self.cli(RAY, "list", "actors", "--format", "json", "--filter", "state=ALIVE", "--limit", "1000")
        by_deployment: dict[str, list[str]] = {}
        for actor in json.loads(result.stdout):
            name = actor.get("name") or ""
            if name.startswith("SERVE_REPLICA::"):
                deployment = name.split("#")[1]
                by_deployment.setdefault(deployment, []).append(actor["node_id"])
        return by_deployment

    def node_id(self, node: str) -> str:
        """The Ray node id of one of our nodes (matched through its raylet's process)."""
        for pid in processes_marked(f"{self.tag}-{node}"):
            try:
                command = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for part in command:
                if part.startswith(b"--node_id="):
                    return part.split(b"=", 1)[1].decode()
        raise LookupError(f"no raylet of node {node}")

    def kill_node(self, node: str) -> int:
        """SIGKILL every process of ``node`` (marked, or started by a marked one: agents that
        rename themselves overwrite their environment); returns how many there were."""
        pids = with_descendants(processes_marked(f"{self.tag}-{node}"))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def shutdown(self) -> None:
        for _ in range(3):  # a dying raylet may start nothing more, but look again
            for node in [*self.nodes, "cli"]:
                self.kill_node(node)
            time.sleep(0.5)
        shutil.rmtree(self.workdir, ignore_errors=True)
