"""An autoscaling Ray cluster on this machine: Ray's fake multi-node provider, as
``ray.cluster_utils.AutoscalingCluster`` drives it, with a CPU-less head and one worker node type
shaped like the RayService's worker pod. The autoscaler (the head's monitor process) starts and
stops worker nodes, each a raylet of its own on this machine, as Serve's replicas ask for them.

Not ``AutoscalingCluster`` itself, for three reasons measured with Ray 2.60 here:

- its constructor reads ``ray/autoscaler/_private/fake_multi_node/example.yaml``, which the wheel
  does not ship (``FileNotFoundError``); the same base config is written out below;
- its ``start()`` and ``shutdown()`` run ``ray stop --force``, which kills every Ray on the
  machine (``make run``, a benchmark, another test session), and it uses the default ports
  (GCS 6379, dashboard 8265): here the head gets ports of its own (``provider.gcs_address``
  points the provider's nodes at it) and the cluster is stopped by killing its own processes;
- the provider starts nodes on the address Ray finds for this machine (its network interface):
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the monitor's environment keeps them on loopback,
  where the head is.

What the fake provider cannot shape: a node type's ``memory`` (it passes the type's resources to
``RayParams(resources=...)``, which refuses ``memory`` as a custom resource), so each worker node
reports the memory Ray finds on this machine, and the autoscaler learns it from the first worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.support.cluster import LocalCluster

FAKE_HEAD_TYPE = "ray.head.default"
WORKER_TYPE = "cpu-workers"  # the RayService's worker group


@dataclass(frozen=True)
class WorkerShape:
    """A worker node type: k8s/rayservice.yaml's worker pod (3 CPUs, a 512 MiB object store)."""

    cpus: int = 3
    object_store_bytes: int = 512 * 1024 * 1024
    min_workers: int = 2
    max_workers: int = 4


def autoscaling_config(gcs_address: str, worker: WorkerShape, idle_timeout_s: float) -> dict[str, Any]:
    """The fake provider's cluster config: Ray's fake_multi_node/example.yaml with our node types."""
    return {
        "cluster_name": "zhserve-fake",
        "max_workers": worker.max_workers,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            FAKE_HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                "resources": {"CPU": worker.cpus, "object_store_memory": worker.object_store_bytes},
                "node_config": {},
                "min_workers": worker.min_workers,
                "max_workers": worker.max_workers,
            },
        },
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


class AutoscalingLocalCluster(LocalCluster):
    """A CPU-less head whose autoscaler adds and removes worker nodes of one type. Every process
    of the cluster (the worker nodes are started by the head's monitor) carries the head's marker,
    so ``shutdown()`` ends them all and nothing else."""

    def __init__(
        self, environment: dict[str, str], worker: WorkerShape | None = None, idle_timeout_s: float = 20
    ) -> None:
        super().__init__(
            {
                **environment,
                "RAY_FAKE_CLUSTER": "1",  # the fake provider refuses to start without it
                "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # as AutoscalingCluster.start sets it
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # provider nodes on 127.0.0.1 (module docstring)
            }
        )
        self.worker = worker or WorkerShape()
        self.idle_timeout_s = idle_timeout_s

    def start_head(self, *extra: str) -> None:
        config = self.workdir / "autoscaling.json"
        config.write_text(json.dumps(autoscaling_config(self.address, self.worker, self.idle_timeout_s)))
        super().start_head(f"--autoscaling-config={config}", *extra)

    def add_worker(self, name: str, cpus: int = 2) -> None:
        raise NotImplementedError("the autoscaler adds the worker nodes")
