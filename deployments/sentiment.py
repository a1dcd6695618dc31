"""The sentiment deployment: a thin Serve shim around :class:`SentimentModel`."""

from __future__ import annotations

import numpy as np
from ray import serve

from deployments.memory import MemoryBudget
from deployments.runtime.answers import ModelAnswer, ProbabilityRows
from deployments.runtime.rows import TokenRows
from deployments.runtime.sentiment import SentimentModel
from deployments.server import ModelServerBase


class SentimentServer(ModelServerBase[np.ndarray]):
    """Class probabilities of each row of token ids; the calls of all callers are batched together."""

    def __init__(self, model_dir: str, *, intra_op_threads: int = 1, row_threads: int = 1) -> None:
        self.model = SentimentModel.from_model_dir(
            model_dir, intra_op_threads=intra_op_threads, row_threads=row_threads
        )
        super().__init__(self.model.manifest, MemoryBudget(), health_probe="服务很好。")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def predict(self, groups: list[TokenRows]) -> list[ModelAnswer]:
        """Each call carries a group of rows (text units); concurrent calls are batched."""
        return await self._run(self._answer_groups, groups)

    def _infer(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.model.probabilities_of_rows(rows))

    def _pack(self, results: list[np.ndarray]) -> ProbabilityRows:
        return ProbabilityRows.pack(results)

    def _probe(self, text: str) -> None:
        self.model.predict([text])
