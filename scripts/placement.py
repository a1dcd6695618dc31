"""Do a serve config's replicas fit a RayService's worker pods? A bin-packing check, no cluster.

    python -m scripts.placement                      # k8s/rayservice.yaml: a table of pods, min and max

Each deployment asks, per replica, the CPUs and memory of its ``ray_actor_options`` and at most
``max_replicas_per_node`` replicas on one node. A worker pod offers its container's resources less
what Ray keeps for itself (``object-store-memory``) and less a per-node overhead: the processes
every node runs whatever it holds (Serve's proxy, with ``proxy_location: EveryNode``; HAProxy on
Serve's fast path; the raylet and its agents). Replicas are packed first-fit decreasing (largest
CPU ask first) at every deployment's ``min_replicas`` onto the group's ``minReplicas`` pods, and at
``max_replicas`` onto ``maxReplicas`` pods; a replica that finds no room is reported as unplaced,
which on a real cluster is a replica Serve wants and Ray can never start.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
EPSILON = 1e-9


@dataclass(frozen=True)
class Ask:
    """What one replica of a deployment needs, and how many of them there are."""

    deployment: str
    replicas: int
    cpus: float
    memory_bytes: int
    max_per_node: int | None = None


@dataclass(frozen=True)
class Overhead:
    """A process every node runs whatever replicas it holds (an estimate: see the callers)."""

    name: str
    cpus: float
    memory_bytes: int


@dataclass(frozen=True)
class NodeShape:
    """What one node offers replicas: its resources less Ray's object store and the overheads."""

    cpus: float
    memory_bytes: int


@dataclass
class Node:
    shape: NodeShape
    replicas: list[Ask] = field(default_factory=list)

    def room_for(self, ask: Ask) -> bool:
        count = sum(1 for held in self.replicas if held.deployment == ask.deployment)
        if ask.max_per_node is not None and count >= ask.max_per_node:
            return False
        cpus = sum(held.cpus for held in self.replicas) + ask.cpus
        memory = sum(held.memory_bytes for held in self.replicas) + ask.memory_bytes
        return cpus <= self.shape.cpus + EPSILON and memory <= self.shape.memory_bytes


@dataclass
class Placement:
    nodes: list[Node]
    unplaced: list[Ask]

    @property
    def fits(self) -> bool:
        return not self.unplaced

    def describe(self) -> str:
        lines = [
            f"  pod {index}: "
            + ", ".join(ask.deployment for ask in node.replicas)
            + f"  ({sum(a.cpus for a in node.replicas):g} of {node.shape.cpus:g} CPUs,"
            f" {sum(a.memory_bytes for a in node.replicas) // MIB} of {node.shape.memory_bytes // MIB} MiB)"
            for index, node in enumerate(self.nodes)
        ]
        lines += [f"  unplaced: {ask.deployment}" for ask in self.unplaced]
        return "\n".join(lines)


def pack(asks: list[Ask], shape: NodeShape, max_nodes: int) -> Placement:
    """First-fit decreasing: each replica on the first node with room, a new node when none has."""
    nodes: list[Node] = []
    unplaced: list[Ask] = []
    for ask in sorted(asks, key=lambda a: (a.cpus, a.memory_bytes), reverse=True):
        for _ in range(ask.replicas):
            node = next((n for n in nodes if n.room_for(ask)), None)
            if node is None and len(nodes) < max_nodes:
                node = Node(shape)
                if not node.room_for(ask):
                    node = None
                else:
                    nodes.append(node)
            if node is None:
                unplaced.append(ask)
            else:
                node.replicas.append(ask)
    return Placement(nodes, unplaced)


def asks(serve_config: dict[str, Any], which: Literal["min", "max"]) -> list[Ask]:
    """Every deployment's replicas at its ``which`` (min or max) replicas, from a serve config."""
    result = []
    for application in serve_config["applications"]:
        for deployment in application.get("deployments", []):
            scaling = deployment.get("autoscaling_config")
            replicas = scaling[f"{which}_replicas"] if scaling else deployment.get("num_replicas", 1)
            options = deployment.get("ray_actor_options") or {}
            result.append(
                Ask(
                    deployment=deployment["name"],
                    replicas=int(replicas),
                    cpus=float(options.get("num_cpus", 1)),  # Serve's default is one CPU a replica
                    memory_bytes=int(options.get("memory", 0)),
                    max_per_node=deployment.get("max_replicas_per_node"),
                )
            )
    return result


_QUANTITY = re.compile(r"^(?P<number>[0-9.]+)(?P<unit>m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1 << 10, "Mi": MIB, "Gi": 1 << 30}
_UNITS["Ti"] = 1 << 40


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("500m", "3", "5Gi") as a number (cores or bytes)."""
    match = _QUANTITY.match(str(value))
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match["number"]) * _UNITS[match["unit"]]


def worker_shape(group: dict[str, Any], overheads: list[Overhead]) -> NodeShape:
    """What a worker group's pod offers replicas: Ray's num-cpus (the container's CPU limit unless
    rayStartParams says otherwise) and its memory, less the object store and ``overheads``."""
    (container,) = [c for c in group["template"]["spec"]["containers"] if c["name"].startswith("ray")]
    limits = container["resources"]["limits"]
    params = group.get("rayStartParams", {})
    cpus = float(params.get("num-cpus", math.floor(quantity(limits["cpu"]))))
    memory = quantity(limits["memory"]) - float(params.get("object-store-memory", 0.3 * quantity(limits["memory"])))
    return NodeShape(
        cpus=cpus - sum(o.cpus for o in overheads),
        memory_bytes=int(memory) - sum(o.memory_bytes for o in overheads),
    )


def check_rayservice(rayservice: dict[str, Any], overheads: list[Overhead]) -> dict[str, Placement]:
    """Pack the RayService's serveConfigV2 onto its one worker group at min and at max replicas."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    if str(cluster["headGroupSpec"]["rayStartParams"].get("num-cpus")) != "0":
        raise ValueError("the head must have num-cpus 0 (this check places replicas on workers only)")
    (group,) = cluster["workerGroupSpecs"]
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    shape = worker_shape(group, overheads)
    return {
        "min": pack(asks(serve_config, "min"), shape, int(group["minReplicas"])),
        "max": pack(asks(serve_config, "max"), shape, int(group["maxReplicas"])),
    }


# Per-node processes on a worker pod, estimated (not measured on a Kubernetes cluster): Serve's
# proxy and HAProxy carry every request the pod receives; the raylet, dashboard agent and
# runtime-env agent are Ray's own.
WORKER_OVERHEADS = [
    Overhead("Serve proxy", cpus=0.25, memory_bytes=512 * MIB),
    Overhead("HAProxy", cpus=0.25, memory_bytes=128 * MIB),
    Overhead("raylet and agents", cpus=0.25, memory_bytes=1024 * MIB),
]


def main(argv: list[str] | None = None) -> int:
    path = Path((argv if argv is not None else sys.argv[1:] or ["k8s/rayservice.yaml"])[0])
    rayservice = yaml.safe_load((REPO_ROOT / path).read_text(encoding="utf-8"))
    ok = True
    for which, placement in check_rayservice(rayservice, WORKER_OVERHEADS).items():
        print(f"{which} replicas: {len(placement.nodes)} pods, {'fits' if placement.fits else 'DOES NOT FIT'}")
        print(placement.describe())
        ok = ok and placement.fits
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
