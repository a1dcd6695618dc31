"""A plain BERT encoder (post-LayerNorm, GELU) in torch, loaded from the converted e5 weights.

Written out instead of using ``transformers.BertModel`` so that the ONNX graph is exactly the ops
below (explicit attention with an additive mask, no SDPA dispatch) and a pruned vocabulary is just
a smaller embedding table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from training.encoder.convert import E5Config, E5File

MASKED_SCORE = -1e4  # added to attention scores of padding; finite so a fully padded row stays finite
# The encoder's weights are in its MatMuls: INT8 weights for every MatMul and the embedding Gather, activations
# quantised at run time (so the runtime serves these graphs one row per call: ``quantization: int8-dynamic``).
QUANTIZED_OPS = ("MatMul", "Gather")


def export_example(pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(input_ids, attention_mask)`` an e5 graph is traced with: two ``<s> … </s>`` rows, one padded."""
    input_ids = torch.tensor([[0, 10, 11, 12, 2], [0, 13, 2, pad_id, pad_id]], dtype=torch.int64)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.int64)
    return input_ids, attention_mask


class Layer(nn.Module):
    def __init__(self, config: E5Config) -> None:
        super().__init__()
        h = config.hidden
        self.heads = config.heads
        self.q = nn.Linear(h, h)
        self.k = nn.Linear(h, h)
        self.v = nn.Linear(h, h)
        self.ao = nn.Linear(h, h)
        self.aln = nn.LayerNorm(h, eps=config.eps)
        self.fi = nn.Linear(h, config.ffn)
        self.fo = nn.Linear(config.ffn, h)
        self.oln = nn.LayerNorm(h, eps=config.eps)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        head_dim = hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (head_dim**-0.5) + additive_mask
        context = torch.matmul(self.dropout(scores.softmax(dim=-1)), v)
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        x = self.aln(x + self.dropout(self.ao(context)))
        return self.oln(x + self.dropout(self.fo(nn.functional.gelu(self.fi(x)))))


class Encoder(nn.Module):
    """Token ids [B, T] + attention mask [B, T] → hidden states [B, T, H]."""

    def __init__(self, config: E5Config, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.word = nn.Embedding(vocab_size, h)
        self.pos = nn.Embedding(config.max_positions, h)
        self.token_type = nn.Parameter(torch.zeros(h))  # token type 0 only
        self.ln = nn.LayerNorm(h, eps=config.eps)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.layers))
        self.dropout = nn.Dropout(0.1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.ln(self.word(input_ids) + self.pos(positions) + self.token_type)
        x = self.dropout(x)
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * MASKED_SCORE
        for layer in self.layers:
            x = layer(x, additive)
        return x

    @classmethod
    def from_e5(cls, e5: E5File, *, rows: Sequence[int] | None = None) -> Encoder:
        """The converted weights; ``rows`` keeps only those embedding rows, in that order (a pruned
        vocabulary: new id ``i`` is old id ``rows[i]``)."""
        t = e5.tensors
        word = t["emb.word"] if rows is None else t["emb.word"][np.asarray(rows, dtype=np.int64)]
        model = cls(e5.config, vocab_size=word.shape[0])
        state: dict[str, np.ndarray] = {
            "word.weight": word,
            "pos.weight": t["emb.pos"],
            "token_type": t["emb.type"][0],
            "ln.weight": t["emb.ln.w"],
            "ln.bias": t["emb.ln.b"],
        }
        for i in range(e5.config.layers):
            for name in ("q", "k", "v", "ao", "fi", "fo"):
                state[f"layers.{i}.{name}.weight"] = t[f"l{i}.{name}.w"]
                state[f"layers.{i}.{name}.bias"] = t[f"l{i}.{name}.b"]
            for name in ("aln", "oln"):
                state[f"layers.{i}.{name}.weight"] = t[f"l{i}.{name}.w"]
                state[f"layers.{i}.{name}.bias"] = t[f"l{i}.{name}.b"]
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
        return model


def unpruned_embeddings(pruned: torch.Tensor, decayed: torch.Tensor, keep: Sequence[int]) -> torch.Tensor:
    """The word embeddings a fine-tune over the full vocabulary would have ended with, from one over the
    pruned vocabulary ``keep`` (new id ``i`` is old id ``keep[i]``).

    The two runs are one computation: the training texts segment the same way (their pieces are all
    kept), so every kept row gets the same gradients; a row outside ``keep`` never occurs in a batch and
    only shrinks by AdamW's weight decay: ``decayed`` is the full pretrained table put through that
    decay (:func:`training.encoder.fit.decayed`)."""
    word = decayed.detach().to(torch.float32).clone()
    word[torch.as_tensor(list(keep), dtype=torch.int64)] = pruned.detach().to(torch.float32)
    return word


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the hidden states of real tokens (e5's sentence embedding, before L2 norm)."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class SentimentClassifier(nn.Module):
    """Encoder → mean pool → dropout → linear: logits [B, num_labels]."""

    def __init__(self, encoder: Encoder, num_labels: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = mean_pool(self.encoder(input_ids, attention_mask), attention_mask)
        return self.head(self.dropout(pooled))
