"""The NER deployment: a thin Serve shim around :class:`NerModel`.

``serve.deployment`` is applied in ``serve_app.app.build_app``; only ``@serve.batch`` is bound
here, because batching is how this class is called.
"""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.batching import MemoryGuard, run_in_token_budget
from deployments.runtime.ner import NerModel
from deployments.runtime.spans import Entity
from deployments.server import ItemError, ModelServerBase


class NerServer(ModelServerBase[list[Entity]]):
    """Entities of one window per call; windows from all callers are batched together."""

    def __init__(self, model_dir: str, *, intra_op_threads: int = 1) -> None:
        self.model = NerModel.from_model_dir(model_dir, intra_op_threads=intra_op_threads)
        super().__init__(self.model.manifest, MemoryGuard(), health_probe="马云在杭州。")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def predict(self, groups: list[list[str]]) -> list[list[list[Entity]] | ItemError]:
        """Each call carries a group of windows (a list of texts); concurrent groups are batched."""
        return await asyncio.to_thread(self._predict_groups, groups)

    def _predict_sync(self, texts: list[str]) -> list[list[Entity]]:
        lengths = self.model.tokenizer.count_tokens(texts)
        return run_in_token_budget(texts, lengths, self.config.max_batch_tokens, self.model.predict)

    def _probe(self, text: str) -> None:
        self.model.predict([text])
