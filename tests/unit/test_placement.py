"""scripts/placement.py: replicas bin-packed onto pods, one per node where asked; the RayService
that issue 27 found would not come up fails it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts import placement
from scripts.placement import Ask, NodeShape, Overhead

GIB = 1 << 30
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_replicas_share_a_node_while_cpu_and_memory_last() -> None:
    result = placement.pack([Ask("A", 4, cpus=0.5, memory_bytes=GIB)], NodeShape(2, 4 * GIB), max_nodes=1)
    assert result.fits and len(result.nodes) == 1
    result = placement.pack([Ask("A", 4, cpus=0.5, memory_bytes=2 * GIB)], NodeShape(2, 4 * GIB), max_nodes=1)
    assert [ask.deployment for ask in result.unplaced] == ["A", "A"]  # memory, not CPU, ran out


def test_max_replicas_per_node_opens_a_node_per_replica() -> None:
    asks = [Ask("A", 3, cpus=0.1, memory_bytes=0, max_per_node=1)]
    assert len(placement.pack(asks, NodeShape(2, GIB), max_nodes=3).nodes) == 3
    assert len(placement.pack(asks, NodeShape(2, GIB), max_nodes=2).unplaced) == 1


def test_the_per_node_overhead_takes_its_share_of_every_node() -> None:
    group = {
        "rayStartParams": {"object-store-memory": str(GIB)},
        "template": {
            "spec": {"containers": [{"name": "ray-worker", "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}}]}
        },
    }
    shape = placement.worker_shape(group, [Overhead("proxy", cpus=0.5, memory_bytes=GIB)])
    assert shape == NodeShape(cpus=1.5, memory_bytes=2 * GIB)


@pytest.mark.parametrize(("text", "value"), [("500m", 0.5), ("3", 3), ("5Gi", 5 * GIB), ("512Mi", 512 << 20)])
def test_kubernetes_quantities(text: str, value: float) -> None:
    assert placement.quantity(text) == value


def old_rayservice() -> dict:
    """The numbers of k8s/rayservice.yaml before issue 27: 2-CPU / 4 GiB worker pods, 1..8 of them;
    Ingress 0.25 CPU 2..4, NER and Sentiment 1 CPU and 1 GiB 2..7, one replica of each per node."""

    def deployment(name: str, cpus: float, memory: int, low: int, high: int) -> dict:
        return {
            "name": name,
            "max_replicas_per_node": 1,
            "autoscaling_config": {"min_replicas": low, "max_replicas": high},
            "ray_actor_options": {"num_cpus": cpus, **({"memory": memory} if memory else {})},
        }

    serve_config = {
        "applications": [
            {
                "deployments": [
                    deployment("Ingress", 0.25, 0, 2, 4),
                    deployment("NER", 1, GIB, 2, 7),
                    deployment("Sentiment", 1, GIB, 2, 7),
                ]
            }
        ]
    }
    container = {"name": "ray-worker", "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}}
    return {
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config),
            "rayClusterConfig": {
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}},
                "workerGroupSpecs": [
                    {
                        "replicas": 2,
                        "minReplicas": 1,
                        "maxReplicas": 8,
                        "template": {"spec": {"containers": [container]}},
                    }
                ],
            },
        }
    }


def test_the_old_manifest_fails_at_minimum_and_at_maximum_even_without_overhead() -> None:
    """What the totals test missed: 15 CPUs at max_replicas ≤ 8 pods × 2 CPUs, but one pod holds
    NER + Sentiment (2 CPUs) and the Ingress replicas need pods of their own."""
    result = placement.check_rayservice(old_rayservice(), overheads=[])
    assert not result["min"].fits  # 2 of each on 1 pod
    assert not result["max"].fits  # 7 pods of NER + Sentiment, and 4 Ingress replicas on the 8th and beyond
    assert {ask.deployment for ask in result["max"].unplaced} == {"Ingress"}


def test_the_shipped_rayservice_fits_with_its_overheads() -> None:
    rayservice = yaml.safe_load((REPO_ROOT / "k8s" / "rayservice.yaml").read_text(encoding="utf-8"))
    for which, result in placement.check_rayservice(rayservice, placement.WORKER_OVERHEADS).items():
        assert result.fits, f"{which}:\n{result.describe()}"
    assert placement.main(["k8s/rayservice.yaml"]) == 0
