"""The model deployments' autoscaling policy: replicas wanted = the compute in hand over the busy
share each replica should carry.

Serve's default policy scales on ongoing requests per replica. That does not fit the model
deployments: the ingress spreads each document's windows over every model replica and keeps one call
on each (``model_calls_per_replica``), so while any document is in flight every replica shows one
ongoing request, whether it computes 2 % or 100 % of the time. A steady trickle of documents then
holds every replica (and every node it runs on) for ever (README "Growing by nodes", measured).

Each model replica reports the share of wall time it spent computing
(``deployments.server.ModelServerBase.record_autoscaling_stats``, Serve's custom autoscaling
metrics); Serve averages each replica's reports over ``look_back_period_s``. The policy adds the
shares up and divides by the target share. Serve's wrapper then applies the bounds, the up/down
scaling factors and ``upscale_delay_s``/``downscale_delay_s`` as for its own policy.

The controller loads this class by value (cloudpickle), so the module imports nothing of zhserve's.
"""

from __future__ import annotations

from typing import Any

BUSY_SHARE_METRIC = "busy_share"  # deployments.server.BUSY_SHARE_METRIC: what the replicas report


class BusyShare:
    """``autoscaling_config.policy``: ``{policy_function: serve_app.autoscaling_policy:BusyShare,
    policy_kwargs: {target_busy_share: 0.6}}``."""

    def __init__(self, target_busy_share: float = 0.6) -> None:
        if not 0.0 < target_busy_share <= 1.0:
            raise ValueError(f"target_busy_share must be in (0, 1], got {target_busy_share}")
        self.target_busy_share = target_busy_share

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        """The replicas wanted (a float; Serve rounds, bounds and delays it) and no policy state."""
        running = ctx.current_num_replicas
        shares: dict[Any, float] = (ctx.aggregated_metrics or {}).get(BUSY_SHARE_METRIC, {})
        if running == 0 or not shares:
            # Nothing reported yet (replicas starting): hold the current target.
            return ctx.target_num_replicas, {}
        # A replica still starting has not reported: count it at the reporting replicas' mean.
        busy = sum(shares.values()) / len(shares) * running
        return busy / self.target_busy_share, {}
