"""The NER deployment: a thin Serve shim around :class:`NerModel`.

``serve.deployment`` is applied in ``serve_app.app.build_app``; only ``@serve.batch`` is bound
here, because batching is how this class is called.
"""

from __future__ import annotations

import numpy as np
from ray import serve

from deployments.memory import MemoryBudget
from deployments.runtime.answers import ModelAnswer, TagRow, TagRows
from deployments.runtime.ner import NerModel
from deployments.runtime.rows import TokenRows
from deployments.server import ModelServerBase


class NerServer(ModelServerBase[TagRow]):
    """Tags of each row of token ids; the calls of all callers are batched together."""

    def __init__(self, model_dir: str, *, intra_op_threads: int = 1, row_threads: int = 1) -> None:
        self.model = NerModel.from_model_dir(model_dir, intra_op_threads=intra_op_threads, row_threads=row_threads)
        super().__init__(self.model.manifest, MemoryBudget(), health_probe="马云在杭州。")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def predict(self, groups: list[TokenRows]) -> list[ModelAnswer]:
        """Each call carries a group of rows (windows); concurrent calls are batched.

        Computed on the event loop, not in a thread: while a batch runs, the calls that arrive
        queue up and form the next batch whole (see ModelServerBase.compute_in_thread).
        """
        return await self._run(self._answer_groups, groups)

    def _infer(self, rows: list[np.ndarray]) -> list[TagRow]:
        return self.model.tag(rows)

    def _pack(self, results: list[TagRow]) -> TagRows:
        return TagRows.pack(results)

    def _probe(self, text: str) -> None:
        self.model.predict([text])
