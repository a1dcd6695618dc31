"""Torch batches of pre-tokenised examples (``data.Example``) for the loop and the teachers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from deployments.runtime.tokenizer import BertChineseTokenizer
from training import data as D


def ner_token_batch(
    examples: Sequence[D.Example], indices: Sequence[int], tokenizer: BertChineseTokenizer
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, tags, tag_mask)``: the padded ids with [CLS]/[SEP], and the tags of the
    real tokens (``tags``/``tag_mask`` [B, longest target])."""
    sequences = [examples[i].ids for i in indices]
    input_ids, mask = D.pad_batch(sequences, tokenizer)
    longest = max(len(s) for s in sequences)
    tags = np.zeros((len(indices), longest), dtype=np.int64)
    tag_mask = np.zeros((len(indices), longest), dtype=bool)
    for row, i in enumerate(indices):
        target = examples[i].target
        assert isinstance(target, list)
        tags[row, : len(target)] = target
        tag_mask[row, : len(target)] = True
    return torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(tags), torch.from_numpy(tag_mask)


def sentiment_batch(
    examples: Sequence[D.Example], indices: Sequence[int], tokenizer: BertChineseTokenizer
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, labels)``."""
    input_ids, mask = D.pad_batch([examples[i].ids for i in indices], tokenizer)
    targets = torch.tensor([examples[i].target for i in indices], dtype=torch.int64)
    return torch.from_numpy(input_ids), torch.from_numpy(mask), targets
