"""The application builder: the one place the deployments are bound together.

``serve run serve_config.yaml`` (``import_path: serve_app.app:build_app``) or
``serve run serve_app.app:build_app ner_model=DIR sentiment_model=DIR``.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.ner import NerServer
from deployments.sentiment import SentimentServer
from serve_app.config import AppArgs
from serve_app.ingress import Ingress, make_fastapi_ingress

# Defaults for `serve run serve_app.app:build_app` without a config file; serve_config.yaml
# overrides any of them per deployment.
MODEL_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "max_ongoing_requests": 64,  # must be ≥ max_batch_size or batches never fill
    # One replica of each model: on one 2-core machine a second one only competes for the cores
    # (serve_config.yaml says more); raise max_replicas where there are cores to spare.
    "autoscaling_config": {
        "min_replicas": 1,
        "max_replicas": 1,
        # On the share of time the replicas compute (serve_app/autoscaling_policy.py).
        "policy": {"policy_function": "serve_app.autoscaling_policy:BusyShare"},
    },
    "ray_actor_options": {"num_cpus": 0.4, "memory": 1 << 30},
    "health_check_period_s": 2,
    "health_check_timeout_s": 10,
}


def build_app(args: dict[str, Any]) -> Application:
    """Build the zhserve application from typed arguments (see :class:`AppArgs`)."""
    settings = AppArgs.model_validate(args)
    threads = {"intra_op_threads": settings.intra_op_threads, "row_threads": settings.row_threads}
    ner = serve.deployment(name="NER")(NerServer).options(
        **MODEL_DEPLOYMENT_DEFAULTS,
        user_config=settings.ner_config.model_dump(),
    )
    sentiment = serve.deployment(name="Sentiment")(SentimentServer).options(
        **MODEL_DEPLOYMENT_DEFAULTS,
        user_config=settings.sentiment_config.model_dump(),
    )
    # The ingress class Serve runs builds its FastAPI app in each replica from that replica's own
    # state (serve_app.ingress.make_fastapi_ingress): no app object is shared or pickled.
    ingress = serve.deployment(name="Ingress")(make_fastapi_ingress(Ingress)).options(
        max_ongoing_requests=256,
        max_queued_requests=256,
        autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8},
        ray_actor_options={"num_cpus": 0.2},
        user_config=settings.ingress_config.model_dump(),
    )
    return ingress.bind(
        ner.bind(str(settings.ner_model), **threads),
        sentiment.bind(str(settings.sentiment_model), **threads),
        settings,
    )
