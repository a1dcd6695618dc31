"""Packed rows: what the ingress and the model replicas exchange.

The ingress tokenises each text once and sends a replica the token ids of a group of windows;
the replica answers with one compact array per output. Packing the rows of a group into one
array each keeps the serialised call small and cheap, whatever the number of windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _split(values: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    bounds = np.cumsum(lengths)[:-1]
    return list(np.split(values, bounds)) if len(lengths) else []


@dataclass(frozen=True)
class TokenRows:
    """Rows of token ids (no special tokens): ``ids`` holds them end to end, ``lengths`` their sizes."""

    ids: np.ndarray  # int32 [sum(lengths)]
    lengths: np.ndarray  # int32 [rows]

    @classmethod
    def pack(cls, rows: Sequence[np.ndarray]) -> TokenRows:
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int32, count=len(rows))
        ids = np.concatenate(rows).astype(np.int32, copy=False) if rows else np.empty(0, dtype=np.int32)
        return cls(ids=ids, lengths=lengths)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def rows(self) -> list[np.ndarray]:
        return _split(self.ids, self.lengths)


@dataclass(frozen=True)
class TagRows:
    """NER answers for packed rows: per token its tag id and that tag's marginal probability."""

    tags: np.ndarray  # int16 [sum(lengths)], indices into the manifest's labels
    confidences: np.ndarray  # float64 [sum(lengths)]
    lengths: np.ndarray  # int32 [rows]

    @classmethod
    def pack(cls, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> TagRows:
        lengths = np.fromiter((len(tags) for tags, _ in rows), dtype=np.int32, count=len(rows))
        if not rows:
            return cls(np.empty(0, dtype=np.int16), np.empty(0), lengths)
        tags = np.concatenate([tags for tags, _ in rows]).astype(np.int16, copy=False)
        confidences = np.concatenate([confidences for _, confidences in rows]).astype(np.float64, copy=False)
        return cls(tags=tags, confidences=confidences, lengths=lengths)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def rows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(zip(_split(self.tags, self.lengths), _split(self.confidences, self.lengths), strict=True))
