"""Building blocks shared by the NER and sentiment networks (torch; training only).

Both networks take exactly the serving inputs ``input_ids`` and ``attention_mask`` and compute every
feature inside the graph, so the ONNX interface stays the BERT one:

* :class:`CharNgramEmbedding` — a character embedding plus hashed character bigrams (left and right
  of each position) and an optional hashed centred trigram, all derived from ``input_ids``.
* :class:`GatedConvBlock` — a dilated gated convolution written as shift-and-concatenate plus one
  ``Linear`` (so dynamic INT8 quantisation turns it into an integer MatMul). Padded positions are
  zeroed after every block, which makes each text's output independent of the batch it is in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Multipliers for the n-gram hashes; ids are < 2**17, so no product overflows int64.
_HASH_A, _HASH_B, _HASH_C = 92821, 68917, 30011


def shift_ids(ids: torch.Tensor, offset: int) -> torch.Tensor:
    """``ids`` moved by ``offset`` along time, filled with 0 ([PAD]): result[t] = ids[t - offset]."""
    if offset > 0:
        return F.pad(ids[:, :-offset], (offset, 0))
    return F.pad(ids[:, -offset:], (0, -offset))


def ngram_ids(
    input_ids: torch.Tensor, bigram_buckets: int, trigram_buckets: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Hashed ``(left bigram, right bigram, centred trigram)`` ids per position (trigram ``None`` if off).

    Neighbours beyond the text are [PAD] (0) — the same whether or not the batch pads the row — so
    a text's n-gram ids do not depend on its batch.
    """
    previous = shift_ids(input_ids, 1)
    following = shift_ids(input_ids, -1)
    left = (previous * _HASH_A + input_ids * _HASH_B) % bigram_buckets
    right = (input_ids * _HASH_A + following * _HASH_B) % bigram_buckets
    centred = None
    if trigram_buckets:
        centred = (previous * _HASH_A + input_ids * _HASH_B + following * _HASH_C) % trigram_buckets
    return left, right, centred


def drop_positions(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole feature vectors (one n-gram at one position) with probability ``p`` in training."""
    if not training or p <= 0:
        return x
    keep = torch.rand(x.shape[:-1], device=x.device).ge(p).unsqueeze(-1).to(x.dtype)
    return x * keep / (1.0 - p)


class CharNgramEmbedding(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        *,
        char_dim: int,
        bigram_buckets: int,
        bigram_dim: int,
        trigram_buckets: int = 0,
        trigram_dim: int = 0,
        dropout: float = 0.1,
        ngram_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.ngram_dropout = ngram_dropout
        # Sparse gradients: an update touches only the rows in the batch (most of the parameters).
        self.char = nn.Embedding(vocab_size, char_dim, padding_idx=0, sparse=True)
        self.bigram_buckets = bigram_buckets
        self.bigram = nn.Embedding(bigram_buckets, bigram_dim, sparse=True)
        self.trigram_buckets = trigram_buckets
        self.trigram = nn.Embedding(trigram_buckets, trigram_dim, sparse=True) if trigram_buckets else None
        self.dropout = nn.Dropout(dropout)
        self.output_dim = char_dim + 2 * bigram_dim + (trigram_dim if trigram_buckets else 0)
        nn.init.normal_(self.bigram.weight, std=0.05)
        if self.trigram is not None:
            nn.init.normal_(self.trigram.weight, std=0.05)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        left, right, centred = ngram_ids(input_ids, self.bigram_buckets, self.trigram_buckets)
        p, training = self.ngram_dropout, self.training
        parts = [
            self.char(input_ids),
            drop_positions(self.bigram(left), p, training),
            drop_positions(self.bigram(right), p, training),
        ]
        if self.trigram is not None and centred is not None:
            parts.append(drop_positions(self.trigram(centred), p, training))
        return self.dropout(torch.cat(parts, dim=-1))


class GatedConvBlock(nn.Module):
    """Residual dilated gated convolution (kernel 3) with LayerNorm; pads zeroed on the way out."""

    def __init__(self, hidden: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.dilation = dilation
        self.proj = nn.Linear(3 * hidden, 2 * hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        before = F.pad(x, (0, 0, d, 0))[:, :-d]  # x[t - d]
        after = F.pad(x, (0, 0, 0, d))[:, d:]  # x[t + d]
        value, gate = self.proj(torch.cat([before, x, after], dim=-1)).chunk(2, dim=-1)
        return self.norm(x + self.dropout(value * torch.sigmoid(gate))) * mask


class SelfAttentionBlock(nn.Module):
    """Residual multi-head self-attention over the real positions, then a feed-forward layer (post-LN).

    Written with Linear / MatMul / Softmax only so it exports to plain ONNX ops. No position embedding:
    it sits on top of the convolutions, whose features already encode the local order. Pads are never
    attended to and are zeroed on the way out.
    """

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # [batch, time, hidden] → [batch, heads, time, head_dim] for q, k and v.
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        scores = q @ k.transpose(-1, -2) / float(q.shape[-1]) ** 0.5
        scores = scores + (1.0 - mask.transpose(1, 2).unsqueeze(1)) * -1e4  # keys at pads
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).flatten(2)
        x = self.norm1(x + self.dropout(self.out(attended)))
        return self.norm2(x + self.dropout(self.ff(x))) * mask


class ConvEncoder(nn.Module):
    """Embedding → Linear to ``hidden`` → a stack of :class:`GatedConvBlock` → optional
    :class:`SelfAttentionBlock` layers; output zero at pads."""

    def __init__(
        self,
        embedding: CharNgramEmbedding,
        *,
        hidden: int,
        dilations: list[int],
        dropout: float,
        attention_layers: int = 0,
        attention_heads: int = 4,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.input = nn.Linear(embedding.output_dim, hidden)
        self.blocks = nn.ModuleList(GatedConvBlock(hidden, d, dropout) for d in dilations)
        self.attention = nn.ModuleList(
            SelfAttentionBlock(hidden, attention_heads, dropout) for _ in range(attention_layers)
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        x = self.input(self.embedding(input_ids)) * mask
        for block in self.blocks:
            x = block(x, mask)
        for layer in self.attention:
            x = layer(x, mask)
        return x


class SplitOptimizer:
    """SparseAdam for the (sparse-gradient) embedding tables, AdamW for everything else."""

    def __init__(self, groups: list[tuple[list[nn.Parameter], float]], *, weight_decay: float = 0.0) -> None:
        sparse, dense = [], []
        for params, lr in groups:
            embedding_ids = set()
            for p in params:
                if getattr(p, "_zh_sparse", False):
                    embedding_ids.add(id(p))
            sparse_params = [p for p in params if id(p) in embedding_ids]
            dense_params = [p for p in params if id(p) not in embedding_ids]
            if sparse_params:
                sparse.append({"params": sparse_params, "lr": lr})
            if dense_params:
                dense.append({"params": dense_params, "lr": lr})
        self.optimizers: list[torch.optim.Optimizer] = []
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse))
        if dense:
            self.optimizers.append(torch.optim.AdamW(dense, weight_decay=weight_decay))

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, state: list[dict]) -> None:
        for optimizer, saved in zip(self.optimizers, state, strict=True):
            optimizer.load_state_dict(saved)


def mark_sparse(module: nn.Module) -> None:
    """Tag the weights of sparse embeddings so :class:`SplitOptimizer` can route them."""
    for sub in module.modules():
        if isinstance(sub, nn.Embedding) and sub.sparse:
            sub.weight._zh_sparse = True  # type: ignore[attr-defined]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class WeightAverage:
    """Exponential moving average of the parameters of some modules (Polyak averaging).

    ``update()`` after every optimiser step; the decay ramps up as ``min(decay, (1 + t) / (10 + t))``
    so the first steps do not leave the initial weights in the average. ``swapped()`` puts the
    averaged weights into the modules for evaluation or export and restores the trained ones after.
    """

    def __init__(self, modules: Sequence[nn.Module], decay: float) -> None:
        self.params = [p for module in modules for p in module.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained, strict=True):
                    p.copy_(t)
