"""Growing by nodes (README "Growing by nodes"): zhserve's cluster config on an autoscaling Ray
cluster on this machine (Ray's fake multi-node provider: tests/support/autoscaling.py), driven
by load_tests/grow_by_nodes.py in a process of its own. Under sustained load the models want more
replicas than the worker nodes hold, the autoscaler adds nodes, the replicas run there; after the
load, replicas and then nodes go away while a trickle of requests is in flight, and none is cut.

Cluster-marked and slow (6–10 minutes here, up to five raylets on two cores): run it with
``pytest -m cluster --slow``; CI skips it (its budget is the serve tests')."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_replicas_wait_for_nodes_the_autoscaler_adds_and_both_go_away_after(tmp_path: Path) -> None:
    out = tmp_path / "timeline.json"
    script = subprocess.Popen(
        [sys.executable, "-m", "load_tests.grow_by_nodes", "--json", str(out)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = script.communicate(timeout=650)
    except subprocess.TimeoutExpired:
        script.terminate()  # on SIGTERM the script stops its cluster
        stdout, stderr = script.communicate(timeout=60)
        pytest.fail(f"no timeline within 650 s:\n{stdout}\n{stderr[-4000:]}")
    print(stdout)
    assert script.returncode == 0, stderr[-4000:]
    timeline = json.loads(out.read_text(encoding="utf-8"))
    events = timeline["events"]
    order = [
        "load start",
        "replica wanted beyond the nodes",
        "worker node added",
        "replica running on it",
        "load stopped",
        "replicas back to minimum",
        "nodes back to minimum",
    ]
    missing = [name for name in order if events.get(name) is None]
    assert not missing, f"never happened: {missing}\n{stdout}"
    times = [events[name] for name in order]
    assert times == sorted(times), f"out of order: {dict(zip(order, times, strict=True))}"
    assert timeline["peak_workers"] > 2 and max(timeline["peak_running"][m] for m in ("NER", "Sentiment")) > 2
    requests = timeline["requests"]
    assert requests["during scale-down"] > 0
    assert not timeline["failures"], timeline["failures"][:5]  # nothing cut, under load or while shrinking
    # Admission control may refuse a few of 16 clients' documents at once (503 + Retry-After) at the peak.
    assert requests["refused at admission (503 overloaded)"] <= 0.1 * requests["heavy"], requests
