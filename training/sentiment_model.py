"""The sentiment network: char + hashed n-gram embeddings → dilated gated CNN → masked pooling → logits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from training.layers import CharNgramEmbedding, ConvEncoder

_NEG_INF = -1e4


@dataclass
class SentimentConfig:
    vocab_size: int
    num_labels: int = 2
    char_dim: int = 128
    bigram_buckets: int = 150001
    bigram_dim: int = 64
    trigram_buckets: int = 100003
    trigram_dim: int = 32
    hidden: int = 128
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class SentimentNet(nn.Module):
    """``(input_ids, attention_mask) → logits`` [batch, num_labels]; pads never reach the pooling."""

    def __init__(self, config: SentimentConfig) -> None:
        super().__init__()
        self.config = config
        embedding = CharNgramEmbedding(
            config.vocab_size,
            char_dim=config.char_dim,
            bigram_buckets=config.bigram_buckets,
            bigram_dim=config.bigram_dim,
            trigram_buckets=config.trigram_buckets,
            trigram_dim=config.trigram_dim,
            dropout=config.dropout,
        )
        self.encoder = ConvEncoder(embedding, hidden=config.hidden, dilations=config.dilations, dropout=config.dropout)
        self.attention = nn.Linear(config.hidden, 1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(3 * config.hidden, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)  # zero at pads
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        penalty = (1.0 - mask) * _NEG_INF
        max_pool = (hidden + penalty).max(dim=1).values
        mean_pool = hidden.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        weights = torch.softmax(self.attention(hidden) + penalty, dim=1)
        attention_pool = (weights * hidden).sum(dim=1)
        features = torch.cat([max_pool, mean_pool, attention_pool], dim=-1)
        return self.classifier(self.dropout(features))
