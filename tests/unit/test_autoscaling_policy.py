"""The model deployments' autoscaling policy and the busy clock it reads, without Ray."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from deployments.server import BUSY_SHARE_METRIC, BusyClock
from serve_app.autoscaling_policy import BUSY_SHARE_METRIC as POLICY_METRIC
from serve_app.autoscaling_policy import BusyShare


@dataclass
class Context:
    """The fields of Serve's AutoscalingContext the policy reads."""

    current_num_replicas: int
    target_num_replicas: int
    shares: dict[str, float] = field(default_factory=dict)

    @property
    def aggregated_metrics(self) -> dict[str, dict[str, float]]:
        return {BUSY_SHARE_METRIC: self.shares} if self.shares else {}


def test_the_policy_reads_the_metric_the_replicas_report() -> None:
    assert POLICY_METRIC == BUSY_SHARE_METRIC


def test_busy_replicas_ask_for_more_and_idle_ones_for_fewer() -> None:
    policy = BusyShare(target_busy_share=0.5)
    wanted, state = policy(Context(2, 2, {"a": 1.0, "b": 0.9}))
    assert wanted == pytest.approx(3.8) and state == {}
    wanted, _ = policy(Context(4, 4, {"a": 0.05, "b": 0.02, "c": 0.0, "d": 0.03}))
    assert wanted == pytest.approx(0.2)  # Serve's wrapper bounds it to min_replicas
    wanted, _ = policy(Context(2, 2, {"a": 0.5, "b": 0.5}))
    assert wanted == pytest.approx(2.0)


def test_a_replica_that_has_not_reported_counts_at_the_mean_and_no_report_holds() -> None:
    policy = BusyShare(target_busy_share=0.5)
    wanted, _ = policy(Context(3, 3, {"a": 1.0, "b": 0.5}))
    assert wanted == pytest.approx(0.75 * 3 / 0.5)
    assert policy(Context(2, 3))[0] == 3  # nothing reported yet: the current target stays


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_a_target_outside_0_to_1_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match="target_busy_share"):
        BusyShare(target_busy_share=target)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_busy_clock_gives_the_busy_share_between_reads() -> None:
    clock = FakeClock()
    busy = BusyClock(clock=clock)
    assert busy.share_since_last_read() == 0.0  # the first read only starts the interval
    busy.start()
    clock.now += 3
    busy.stop()
    clock.now += 1
    assert busy.share_since_last_read() == pytest.approx(0.75)
    clock.now += 2
    busy.start()
    clock.now += 2  # a batch still computing counts so far ...
    assert busy.share_since_last_read() == pytest.approx(0.5)
    clock.now += 1
    busy.stop()  # ... and only its rest in the next interval
    clock.now += 1
    assert busy.share_since_last_read() == pytest.approx(0.5)
    clock.now += 5
    assert busy.share_since_last_read() == 0.0


def test_model_servers_report_the_busy_share() -> None:
    from deployments.server import ModelServerBase

    server: Any = ModelServerBase.__new__(ModelServerBase)
    server._busy = BusyClock()
    assert set(server.record_autoscaling_stats()) == {BUSY_SHARE_METRIC}
