"""The NER network (char + hashed n-gram embeddings → dilated gated CNN → emissions) and its CRF.

Only the emissions network is exported to ONNX; the CRF's transitions go to ``crf.npz``, decoded
by serving over the real tokens (positions ``1..n``, without [CLS]/[SEP]) — which is also the span
the CRF is trained on here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from training.layers import CharNgramEmbedding, ConvEncoder
from training.lexicon import LexiconFeatures

FORBIDDEN = -10000.0  # transition score of a tag pair BIOES does not allow


@dataclass
class NerConfig:
    vocab_size: int
    num_tags: int
    char_dim: int = 128
    bigram_buckets: int = 150001
    bigram_dim: int = 64
    trigram_buckets: int = 100003
    trigram_dim: int = 32
    hidden: int = 128
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 1])
    dropout: float = 0.2
    # Lexicon-match features (training.lexicon): word lengths looked up in-graph ([] = off) and the
    # size of the two uint8 hash tables (filled from jieba's dictionary by train.py).
    lexicon_lengths: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6, 7])
    lexicon_buckets: int = 2097143
    # Gazetteer: also mark the training set's entity strings with their type (PER/LOC/ORG) in the
    # same tables (0 = off, 3 = on); training hides a match's type with this probability.
    lexicon_entity_types: int = 3
    lexicon_entity_dropout: float = 0.3
    # BiLSTM over the CNN output (0 = off): hidden size per direction.
    lstm_hidden: int = 128

    def to_dict(self) -> dict:
        return asdict(self)


class LexiconCharNgramEmbedding(CharNgramEmbedding):
    """:class:`CharNgramEmbedding` with the 0/1 lexicon-role features concatenated (same dropout)."""

    def __init__(self, vocab_size: int, *, lexicon: LexiconFeatures, **kwargs) -> None:
        super().__init__(vocab_size, **kwargs)
        self.lexicon = lexicon
        self.output_dim += lexicon.output_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([super().forward(input_ids), self.dropout(self.lexicon(input_ids))], dim=-1)


class NerNet(nn.Module):
    """``(input_ids, attention_mask) → emissions`` [batch, seq, num_tags], zero-independent of pads."""

    def __init__(self, config: NerConfig) -> None:
        super().__init__()
        self.config = config
        kwargs: dict[str, Any] = dict(
            char_dim=config.char_dim,
            bigram_buckets=config.bigram_buckets,
            bigram_dim=config.bigram_dim,
            trigram_buckets=config.trigram_buckets,
            trigram_dim=config.trigram_dim,
            dropout=config.dropout,
        )
        embedding: CharNgramEmbedding
        if config.lexicon_lengths:
            lexicon = LexiconFeatures(
                config.lexicon_lengths,
                config.lexicon_buckets,
                entity_types=config.lexicon_entity_types,
                entity_dropout=config.lexicon_entity_dropout,
            )
            embedding = LexiconCharNgramEmbedding(config.vocab_size, lexicon=lexicon, **kwargs)
        else:
            embedding = CharNgramEmbedding(config.vocab_size, **kwargs)
        self.encoder = ConvEncoder(embedding, hidden=config.hidden, dilations=config.dilations, dropout=config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        # Two unidirectional LSTMs (not bidirectional=True): the backward one runs over each row
        # reversed within its own length, so no direction ever reads a pad before a real token.
        lstm = (lambda: nn.LSTM(config.hidden, config.lstm_hidden, batch_first=True)) if config.lstm_hidden else None
        self.lstm_forward = lstm() if lstm else None
        self.lstm_backward = lstm() if lstm else None
        self.classifier = nn.Linear(2 * config.lstm_hidden if config.lstm_hidden else config.hidden, config.num_tags)

    @property
    def lexicon(self) -> LexiconFeatures | None:
        return getattr(self.encoder.embedding, "lexicon", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.encoder(input_ids, attention_mask)
        if self.lstm_forward is not None:
            x = self._bilstm(x, attention_mask)
        return self.classifier(self.dropout(x))

    def _bilstm(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BiLSTM over real tokens only; pads zeroed, so a row's output does not depend on its batch."""
        assert self.lstm_forward is not None and self.lstm_backward is not None
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        forward, _ = self.lstm_forward(x)
        lengths = attention_mask.sum(1, keepdim=True)  # [B, 1]
        positions = torch.arange(x.shape[1], dtype=lengths.dtype).unsqueeze(0)  # [1, T]
        index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, T], an involution
        reversed_x = torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        backward, _ = self.lstm_backward(reversed_x)
        backward = torch.gather(backward, 1, index.unsqueeze(-1).expand(-1, -1, backward.shape[-1]))
        return torch.cat([forward, backward], dim=-1) * mask


def bioes_constraints(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks of allowed ``(start [K], end [K], transitions [K, K] as [prev, next])``."""
    k = len(labels)
    parts = [(tag, "") if tag == "O" else tuple(tag.split("-", 1)) for tag in labels]
    start = np.array([p in ("O", "B", "S") for p, _ in parts])
    end = np.array([p in ("O", "E", "S") for p, _ in parts])
    trans = np.zeros((k, k), dtype=bool)
    for i, (prev, prev_type) in enumerate(parts):
        for j, (nxt, nxt_type) in enumerate(parts):
            if prev in ("B", "I"):
                trans[i, j] = nxt in ("I", "E") and nxt_type == prev_type
            else:  # O, E, S: an entity is closed
                trans[i, j] = nxt in ("O", "B", "S")
    return start, end, trans


class CRF(nn.Module):
    """Linear-chain CRF (pytorch-crf convention) with the BIOES-forbidden moves pinned at -10000."""

    start_penalty: torch.Tensor  # buffers (register_buffer)
    end_penalty: torch.Tensor
    trans_penalty: torch.Tensor

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__()
        k = len(labels)
        start, end, trans = bioes_constraints(labels)
        self.start_transitions = nn.Parameter(torch.zeros(k))
        self.end_transitions = nn.Parameter(torch.zeros(k))
        self.transitions = nn.Parameter(torch.zeros(k, k))
        self.register_buffer("start_penalty", torch.tensor(np.where(start, 0.0, FORBIDDEN), dtype=torch.float32))
        self.register_buffer("end_penalty", torch.tensor(np.where(end, 0.0, FORBIDDEN), dtype=torch.float32))
        self.register_buffer("trans_penalty", torch.tensor(np.where(trans, 0.0, FORBIDDEN), dtype=torch.float32))

    def effective(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        allowed_start = torch.where(self.start_penalty < 0, self.start_penalty, self.start_transitions)
        allowed_end = torch.where(self.end_penalty < 0, self.end_penalty, self.end_transitions)
        allowed_trans = torch.where(self.trans_penalty < 0, self.trans_penalty, self.transitions)
        return allowed_start, allowed_end, allowed_trans

    def neg_log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean NLL over the batch (each sequence's NLL times ``weights`` [B], if given). ``emissions`` [B, T, K],
        ``tags`` [B, T], ``mask`` [B, T] bool, left-aligned."""
        start, end, trans = self.effective()
        batch, length, _ = emissions.shape
        maskf = mask.to(emissions.dtype)
        rows = torch.arange(batch)
        # Gold path score.
        score = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, length):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            score = score + step * maskf[:, t]
        last = mask.sum(1).long() - 1
        score = score + end[tags[rows, last]]
        nll = self._log_partition(emissions, mask, start, end, trans) - score
        return (nll if weights is None else nll * weights).mean()

    def soft_neg_log_likelihood(
        self, emissions: torch.Tensor, mask: torch.Tensor, marginals: torch.Tensor, pairs: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy over the batch from a target distribution over tag paths to this CRF, given the
        target's tag marginals ``marginals`` [B, T, K] (zero at pads) and its expected tag-pair counts ``pairs``
        [B, K, K] (:meth:`posterior`). The path score is linear in its unary and pair terms, so this is exact
        for any target, a mixture of CRFs included: log Z − E_target[score]."""
        start, end, trans = self.effective()
        batch = emissions.shape[0]
        last = mask.sum(1).long() - 1
        zero = torch.zeros((), dtype=emissions.dtype)
        expected = (marginals * emissions * mask.unsqueeze(-1).to(emissions.dtype)).sum((1, 2))
        expected = expected + (pairs * torch.where(self.trans_penalty < 0, zero, trans)).sum((1, 2))
        expected = expected + (marginals[:, 0] * torch.where(self.start_penalty < 0, zero, start)).sum(-1)
        at_end = marginals[torch.arange(batch), last]
        expected = expected + (at_end * torch.where(self.end_penalty < 0, zero, end)).sum(-1)
        return (self._log_partition(emissions, mask, start, end, trans) - expected).mean()

    def posterior(
        self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tag marginals [B, T, K] (zero at pads) and expected tag-pair counts [B, K, K] of each sequence
        under this CRF with every score divided by ``temperature``: the gradients of log Z."""
        start, end, trans = (p.detach() / temperature for p in self.effective())
        with torch.enable_grad():
            scaled = (emissions.detach() / temperature).requires_grad_()
            each = trans.expand(emissions.shape[0], -1, -1).clone().requires_grad_()
            log_z = self._log_partition(scaled, mask, start, end, each)
            marginals, pairs = torch.autograd.grad(log_z.sum(), [scaled, each], allow_unused=True)
        return marginals, torch.zeros_like(each) if pairs is None else pairs  # one-token sequences: no pairs

    @staticmethod
    def _log_partition(
        emissions: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor, trans: torch.Tensor
    ) -> torch.Tensor:
        """log Z [B] by the forward algorithm; ``trans`` [K, K] or per sequence [B, K, K]."""
        pair = trans if trans.dim() == 3 else trans.unsqueeze(0)
        alpha = start.unsqueeze(0) + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            candidate = torch.logsumexp(alpha.unsqueeze(2) + pair, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], candidate, alpha)
        return torch.logsumexp(alpha + end.unsqueeze(0), dim=1)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi paths (lists of length ``mask.sum()``) for a batch."""
        start, end, trans = self.effective()
        batch, length, _ = emissions.shape
        score = start.unsqueeze(0) + emissions[:, 0]
        history = []
        for t in range(1, length):
            candidate = score.unsqueeze(2) + trans.unsqueeze(0)  # [B, prev, next]
            best, index = candidate.max(dim=1)
            history.append(index)
            score = torch.where(mask[:, t : t + 1], best + emissions[:, t], score)
        score = score + end.unsqueeze(0)
        lengths = mask.sum(1).tolist()
        paths = []
        for b in range(batch):
            n = int(lengths[b])
            best_tag = int(score[b].argmax())
            path = [best_tag]
            for t in range(n - 1, 0, -1):
                best_tag = int(history[t - 1][b, best_tag])
                path.append(best_tag)
            path.reverse()
            paths.append(path)
        return paths

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``crf.npz`` contents: the effective (constraint-pinned) parameters as float32."""
        start, end, trans = self.effective()
        return {
            "start_transitions": start.detach().numpy().astype(np.float32),
            "end_transitions": end.detach().numpy().astype(np.float32),
            "transitions": trans.detach().numpy().astype(np.float32),
        }
