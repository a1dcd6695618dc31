"""What the models finish per second, measured, and the decision to accept a request's work.

Pure Python: no Ray, no asyncio. Work is counted in tokens (a window's rows of token ids), the
unit a model's cost follows; the rate is seconds of one call slot per token.

- **Measured, not guessed.** Until the ingress has calibrated the rate on the served model (the
  fastest of a few timed calls at start-up, ``RateMeter.calibrate``) a conservative prior holds;
  after it, every successful call moves the estimate (an exponential moving average). Retries and
  back-off waits are not calls that computed anything, so they are never timed.
- **Alone, the fastest seen.** What a request's own work costs with the models to itself is the
  fastest rate any timing has shown: work elsewhere on the cores (a replica starting, another
  application) only ever slows a call, so one slow calibration must not refuse, for the replica's
  life, documents the models finish in time (CI: a calibration taken while replicas were being
  replaced estimated 9 s for a document the idle models finish in 4).
- **Admission.** A request whose own work could not finish within the horizon even with every
  call slot to itself is refused at once (413, the message names the estimate and the limit),
  whatever is queued; otherwise it is refused with 503 + Retry-After when the work already
  accepted plus its own could not be finished within the horizon at the measured rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serve_app.errors import EstimatedTooLargeError, OverloadedError

SECONDS_PER_TOKEN_PRIOR = 0.0005
"""What a token costs one call slot before calibration: about a BERT-base INT8 row (measured
~20 ms for 40 tokens on one core), so a cold service refuses too much rather than too little;
the embedded models cost ~20x less, and calibration replaces this within a second of start."""

SHORT_SHARE = 0.95
"""A short request (one that goes first in the next call, ``serve_app.model_client.SHORT_ROWS``)
is admitted while the backlog with it fits this share of the time limit, more than a long one's:
it finishes in the next call, and the work it goes ahead of is delayed by its few tokens only,
within the margin between the two shares."""

SMOOTHING = 0.2
"""Weight of each new call in the moving average."""


@dataclass
class RateMeter:
    """Seconds of one call slot per token of work."""

    seconds_per_token: float = SECONDS_PER_TOKEN_PRIOR
    # What a token costs with the models to itself: the fastest rate measured, by the start-up
    # calibration or by any call since. The moving average above follows the load (calls that
    # queued behind others, or waited for a replica that was starting), which is right for the
    # backlog but would refuse a request's own work for a while after a busy spell.
    alone_seconds_per_token: float = SECONDS_PER_TOKEN_PRIOR
    calibrated: bool = False
    calls: int = 0

    def calibrate(self, tokens: int, seconds: float) -> None:
        """The rate of a timed call on the served model: the first replaces the prior; a later one
        (a re-timing, ``serve_app.calibration``) can only lower the rates: a load rate left high by
        a busy spell, with no call since to bring it down, is what a timing now corrects; real load
        raises it again within a few calls."""
        if tokens <= 0 or seconds <= 0:
            return
        sample = seconds / tokens
        if not self.calibrated:
            self.seconds_per_token = self.alone_seconds_per_token = sample
            self.calibrated = True
            return
        self.alone_seconds_per_token = min(self.alone_seconds_per_token, sample)
        self.seconds_per_token = min(self.seconds_per_token, sample)

    def observe(self, tokens: int, seconds: float) -> None:
        """One successful call of ``tokens`` that took ``seconds`` (its last attempt only)."""
        if tokens <= 0 or seconds <= 0:
            return
        self.calls += 1
        sample = seconds / tokens
        if not self.calibrated:  # the first measured call replaces the prior outright
            self.seconds_per_token = self.alone_seconds_per_token = sample
            self.calibrated = True
            return
        self.seconds_per_token += SMOOTHING * (sample - self.seconds_per_token)
        self.alone_seconds_per_token = min(self.alone_seconds_per_token, sample)

    def seconds(self, tokens: int, slots: int) -> float:
        """Time to finish ``tokens`` with ``slots`` calls computing at once."""
        return tokens * self.seconds_per_token / max(slots, 1)


def decide(
    *,
    model: str,
    own_tokens: int,
    backlog_tokens: int,
    slots: int,
    meter: RateMeter,
    horizon_s: float,
    limit_s: float,
    short: bool = False,
) -> None:
    """Accept ``own_tokens`` more work or raise.

    413 when the request alone needs more than ``horizon_s`` at the rate measured with the models to
    itself (no wait would help); 503 with
    Retry-After when the accepted backlog plus this request would not finish within it (for a
    ``short`` request, within ``SHORT_SHARE`` of ``limit_s``: it goes ahead of the backlog).
    """
    # Alone: the fastest rate measured (never above the load rate, an average of such samples).
    own_s = own_tokens * meter.alone_seconds_per_token / max(slots, 1)
    if own_s > horizon_s:
        raise EstimatedTooLargeError(
            f"this request needs about {own_s:,.0f} s of {model} model time at the measured rate "
            f"({own_tokens:,} tokens); the time limit (request_timeout_s) is {limit_s:g} s: "
            "send shorter or fewer texts"
        )
    total_s = meter.seconds(backlog_tokens + own_tokens, slots)
    allowed_s = max(horizon_s, SHORT_SHARE * limit_s) if short else horizon_s
    if backlog_tokens and total_s > allowed_s:
        wait_s = max(1, math.ceil(total_s - allowed_s))
        raise OverloadedError(
            "the service is at capacity: the work already accepted fills what the models can "
            f"finish within the time limit; retry in {wait_s} s",
            retry_after_s=min(wait_s, 60),
        )
