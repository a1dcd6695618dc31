"""Admission decisions and the measured rate, without the model client."""

from __future__ import annotations

import pytest

from serve_app.admission import SECONDS_PER_TOKEN_PRIOR, RateMeter, decide
from serve_app.errors import OverloadedError, PayloadTooLargeError


def meter(seconds_per_token: float = 0.001) -> RateMeter:
    rate = RateMeter()
    rate.calibrate(tokens=1000, seconds=1000 * seconds_per_token)
    return rate


def test_the_prior_holds_until_a_call_is_measured_then_the_calls_move_it() -> None:
    rate = RateMeter()
    assert rate.seconds_per_token == SECONDS_PER_TOKEN_PRIOR and not rate.calibrated
    rate.observe(tokens=100, seconds=0.01)  # the first measured call replaces the prior
    assert rate.seconds_per_token == pytest.approx(0.0001) and rate.calibrated
    rate.observe(tokens=100, seconds=0.02)
    assert 0.0001 < rate.seconds_per_token < 0.0002
    rate.observe(tokens=0, seconds=1.0)  # nothing computed: ignored
    rate.observe(tokens=10, seconds=0.0)
    assert rate.calls == 2


def test_work_that_cannot_finish_alone_is_413_naming_the_estimate_and_the_limit() -> None:
    with pytest.raises(PayloadTooLargeError) as refused:
        decide(model="NER", own_tokens=200_000, backlog_tokens=0, slots=2, meter=meter(), horizon_s=96, limit_s=120)
    assert refused.value.status_code == 413
    assert "about 100 s of NER model time" in refused.value.message
    assert "200,000 tokens" in refused.value.message and "is 120 s" in refused.value.message


def test_a_full_backlog_refuses_long_work_with_503_and_a_retry_after() -> None:
    rate = meter()
    decide(model="NER", own_tokens=10_000, backlog_tokens=0, slots=1, meter=rate, horizon_s=96, limit_s=120)
    with pytest.raises(OverloadedError) as refused:
        decide(model="NER", own_tokens=10_000, backlog_tokens=90_000, slots=1, meter=rate, horizon_s=96, limit_s=120)
    assert refused.value.status_code == 503 and int(refused.value.headers["Retry-After"]) == 4  # 100 s - 96 s


def test_a_short_request_fits_behind_a_backlog_that_refuses_long_ones() -> None:
    """The short one goes first in the next call: it is admitted while the backlog fits 95 % of
    the limit, and what it goes ahead of still finishes in time."""
    rate = meter()
    backlog = 100_000  # 100 s: over 0.8 × 120, under 0.95 × 120
    with pytest.raises(OverloadedError):
        decide(model="NER", own_tokens=30, backlog_tokens=backlog, slots=1, meter=rate, horizon_s=96, limit_s=120)
    decide(
        model="NER", own_tokens=30, backlog_tokens=backlog, slots=1, meter=rate, horizon_s=96, limit_s=120, short=True
    )
    with pytest.raises(OverloadedError):
        decide(
            model="NER",
            own_tokens=30,
            backlog_tokens=120_000,
            slots=1,
            meter=rate,
            horizon_s=96,
            limit_s=120,
            short=True,
        )


def test_a_busy_spell_does_not_refuse_work_that_fits_the_models_alone() -> None:
    """Calls timed under load (queued behind others, waiting for a replica) raise the rate the
    backlog is judged by, not the estimate of a request's own work with the models to itself."""
    rate = meter(0.0001)  # calibrated on the idle service: 0.1 ms per token
    for _ in range(30):
        rate.observe(tokens=100, seconds=0.1)  # 1 ms per token while busy
    assert rate.seconds_per_token > 0.0009 and rate.alone_seconds_per_token == pytest.approx(0.0001)
    decide(model="NER", own_tokens=200_000, backlog_tokens=0, slots=1, meter=rate, horizon_s=96, limit_s=120)
    with pytest.raises(OverloadedError):
        decide(model="NER", own_tokens=100, backlog_tokens=100_000, slots=1, meter=rate, horizon_s=96, limit_s=120)


def test_the_alone_rate_is_the_fastest_measured_so_a_slow_calibration_is_corrected_by_the_calls() -> None:
    """A calibration timed while something else held the cores overstates the models' cost; the
    first faster call corrects what a request's own work is estimated at, and slower calls never
    raise it again (they move the load rate, which judges the backlog)."""
    rate = meter(0.001)  # calibrated while the cores were busy: 1 ms per token
    with pytest.raises(PayloadTooLargeError):
        decide(model="NER", own_tokens=100_000, backlog_tokens=0, slots=1, meter=rate, horizon_s=96, limit_s=120)
    rate.observe(tokens=1000, seconds=0.3)  # the idle models: 0.3 ms per token
    assert rate.alone_seconds_per_token == pytest.approx(0.0003)
    for _ in range(30):
        rate.observe(tokens=1000, seconds=2.0)  # a busy spell: 2 ms per token
    assert rate.alone_seconds_per_token == pytest.approx(0.0003) and rate.seconds_per_token > 0.0015
    decide(model="NER", own_tokens=100_000, backlog_tokens=0, slots=1, meter=rate, horizon_s=96, limit_s=120)
