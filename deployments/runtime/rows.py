"""Packed rows: what the ingress and the model replicas exchange.

The ingress tokenises each text once and sends a replica the token ids of a group of windows;
packing the rows of a group into one array keeps the serialised call small and cheap, whatever
the number of windows. The answers travel back packed the same way (``deployments.runtime.answers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


def _split(values: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """``values`` cut into consecutive rows of ``lengths`` (views, not copies)."""
    return [values[start:end] for start, end in pairwise([0, *np.cumsum(lengths).tolist()])]


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
