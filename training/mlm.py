"""Masked-character pretraining of an encoder on unlabelled text (torch; training only).

BERT's recipe on characters: 15 % of the real tokens of each row ([CLS]/[SEP]/[PAD] never) are chosen;
of those, 80 % become [MASK], 10 % a random ordinary token, 10 % stay; the encoder must predict the
original token at every chosen position. The encoder sees only the corrupted ids — the hashed n-grams
of :class:`~training.layers.CharNgramEmbedding` are computed from them inside the graph — so a masked
character does not leak through its bigrams or trigram.

The head (a linear layer to the vocabulary) is thrown away after pretraining; the encoder's weights
initialise the classifier.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn


class TokenMasker:
    """The masking rule over one vocabulary: ``masker(input_ids, attention_mask, generator)`` →
    ``(corrupted ids, chosen)``; ``chosen`` marks the positions whose original id is to be predicted.

    Every row with a real token gets at least one chosen position. Random replacements are drawn from
    the ordinary tokens only (never a special one nor [MASK]), a table built once here.
    """

    def __init__(self, *, mask_id: int, special_ids: Collection[int], vocab_size: int, rate: float = 0.15) -> None:
        self.mask_id = mask_id
        self.special_ids = tuple(special_ids)
        self.rate = rate
        self.ordinary = torch.tensor(sorted(set(range(vocab_size)) - set(special_ids) - {mask_id}), dtype=torch.int64)

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        eligible = attention_mask.bool().clone()
        for special in self.special_ids:
            eligible &= input_ids != special
        draw = torch.rand(input_ids.shape, generator=generator)
        chosen = eligible & (draw < self.rate)
        # A row whose draw chose nothing predicts its eligible position with the smallest draw.
        empty = eligible.any(dim=1) & ~chosen.any(dim=1)
        if bool(empty.any()):
            fallback = torch.where(eligible, draw, torch.full_like(draw, 2.0)).argmin(dim=1)
            rows = torch.nonzero(empty).squeeze(1)
            chosen[rows, fallback[rows]] = True
        action = torch.rand(input_ids.shape, generator=generator)
        corrupted = input_ids.clone()
        corrupted[chosen & (action < 0.8)] = self.mask_id
        randomise = chosen & (action >= 0.8) & (action < 0.9)
        picks = torch.randint(len(self.ordinary), (int(randomise.sum()),), generator=generator)
        corrupted[randomise] = self.ordinary[picks].to(input_ids.dtype)
        return corrupted, chosen


class MaskedCharLM(nn.Module):
    """An encoder ``(input_ids, attention_mask) → [batch, time, hidden]`` with a vocabulary head."""

    def __init__(self, encoder: nn.Module, hidden: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, vocab_size)
        )

    def loss(self, corrupted: torch.Tensor, attention_mask: torch.Tensor, original: torch.Tensor, chosen: torch.Tensor):
        """Mean cross-entropy of the original ids at the chosen positions, and their accuracy."""
        hidden = self.encoder(corrupted, attention_mask)
        logits = self.head(hidden[chosen])
        targets = original[chosen]
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return loss, accuracy
