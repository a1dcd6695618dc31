"""The watcher of the models' running replicas: it sizes the model clients to them as they scale,
and fails requests fast for a model that has had none for too long.

The counts come from what each DeploymentHandle's router already knows: Serve's controller pushes
every change of a deployment's running replicas to the routers (a long poll), and a router drops a
replica it finds dead at once. Reading that costs nothing. Asking the controller instead
(``serve.status()``, as this module did before) cost ~9 % of the Ingress replica's CPU under
load, most of it cloudpickling each deployment's router config for every call, and kept the
controller busy (``load_tests/cpu_budget.py``). ``serve.status()`` is asked only while a router
has not yet heard of any replica (just after start, or a model that never got one placed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

logger = logging.getLogger("ray.serve")
Task = TypeVar("Task", bound=str)

POLL_S = 0.5
"""How often the counts are read (from memory: the routers are kept current by the controller)."""


def router_replicas(handle: Any) -> int | None:
    """Running replicas of ``handle``'s deployment as its router knows them, or None when the
    router has not been told of any replica yet (or is not there: a handle outside a replica).

    Reads Serve 2.60's router (``DeploymentHandle._router._asyncio_router.request_router``); the
    serve tests run this against a real cluster, so a Ray upgrade that moves it fails there.
    """
    router = getattr(getattr(handle, "_router", None), "_asyncio_router", None)
    if router is None or not router.running_replicas_populated():
        return None
    return len(router.request_router.curr_replicas)


def status_replicas(app_name: str, deployments: Mapping[Task, str]) -> dict[Task, int]:
    """Running replicas per task from the controller (``serve.status()``): the slow way."""
    from ray import serve
    from ray.serve._private.common import ReplicaState

    application = serve.status().applications[app_name]
    return {
        task: int(application.deployments[name].replica_states.get(ReplicaState.RUNNING, 0))
        for task, name in deployments.items()
    }


class ReplicaWatcher(Generic[Task]):
    """Follows the running replicas of each model (``counts``) and reports changes.

    ``on_counts(counts)`` is called after every poll (the ingress sizes its model clients);
    ``on_down(task, reason)`` when a model has had no running replica for ``no_replica_wait_s()``
    seconds, ``on_up(task)`` when it has one again.
    """

    def __init__(
        self,
        handles: Mapping[Task, Any],
        *,
        no_replica_wait_s: Callable[[], float],
        on_counts: Callable[[dict[Task, int]], None],
        on_down: Callable[[Task, str], None],
        on_up: Callable[[Task], None],
        count: Callable[[Any], int | None] = router_replicas,
        ask_controller: Callable[[], dict[Task, int]] | None = None,
    ) -> None:
        self.handles = dict(handles)
        self.counts: dict[Task, int] = {}
        self._no_replica_wait_s = no_replica_wait_s
        self._on_counts = on_counts
        self._on_down = on_down
        self._on_up = on_up
        self._count = count
        self._ask_controller = ask_controller or self._controller_counts
        self._down_since: dict[Task, float] = {}
        self._down: set[Task] = set()
        self._task: asyncio.Future[None] | None = None

    def _controller_counts(self) -> dict[Task, int]:
        first = next(iter(self.handles.values()))
        names = {task: handle.deployment_name for task, handle in self.handles.items()}
        return status_replicas(first.app_name, names)

    def ensure_running(self) -> None:
        """Start following (once, from a request: the replica's event loop is running then)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._follow())

    async def poll(self, now: float | None = None) -> None:
        """Read the counts once and act on them."""
        counts: dict[Task, int | None] = {task: self._count(handle) for task, handle in self.handles.items()}
        if any(count is None for count in counts.values()):
            try:
                asked = await asyncio.to_thread(self._ask_controller)
            except Exception:  # the controller busy or restarting: keep the last counts
                logger.debug("replica counts unavailable", exc_info=True)
                asked = {}
            counts = {task: asked.get(task) if count is None else count for task, count in counts.items()}
        for task, count in counts.items():
            if count is not None:
                self.counts[task] = count
        self._on_counts(dict(self.counts))
        moment = time.monotonic() if now is None else now
        for task in self.counts:
            self._check(task, moment)

    def _check(self, task: Task, now: float) -> None:
        if self.counts[task] > 0:
            self._down_since.pop(task, None)
            if task in self._down:
                self._down.discard(task)
                logger.warning("%s has a running replica again", self.handles[task].deployment_name)
                self._on_up(task)
            return
        since = self._down_since.setdefault(task, now)
        if task not in self._down and now - since >= self._no_replica_wait_s():
            deployment = self.handles[task].deployment_name
            logger.error("%s has had no running replica for %.0f s; failing its requests fast", deployment, now - since)
            self._down.add(task)
            self._on_down(task, f"the {deployment} model has no running replica")

    async def _follow(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:
                logger.exception("following the model replicas failed; retrying")
            await asyncio.sleep(POLL_S)
