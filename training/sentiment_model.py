"""The sentiment network: char + hashed n-gram embeddings → dilated gated CNN → masked pooling → logits,
optionally plus a fastText-style branch (mean of hashed char uni/bi/tri-gram embeddings → linear)
whose logits are added to the CNN's."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from training.layers import CharNgramEmbedding, ConvEncoder, drop_positions, ngram_ids

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
    attention_layers: int = 0  # self-attention layers on top of the convolutions
    attention_heads: int = 4
    dropout: float = 0.2
    ngram_dropout: float = 0.0  # drop whole hashed n-gram vectors (per position) in training
    fasttext_dim: int = 0  # 0: no fastText branch
    fasttext_dropout: float = 0.0  # dropout of single n-grams in the fastText bag (training only)
    # "sum": the branch's logits are added to the CNN's and trained through the sum; "ensemble": each
    # branch is trained with its own loss and the exported logits are the mean of the two.
    fasttext_mode: str = "sum"
    fasttext_bigram_buckets: int = 0  # 0: the CNN's bucket counts
    fasttext_trigram_buckets: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class FastTextBranch(nn.Module):
    """Mean of char unigram + hashed bigram + hashed centred-trigram embeddings over real positions → linear.

    Its own tables (``dim`` wide) over the same hashed ids as the CNN's embedding.
    """

    def __init__(self, config: SentimentConfig) -> None:
        super().__init__()
        dim = config.fasttext_dim
        self.bigram_buckets = config.fasttext_bigram_buckets or config.bigram_buckets
        self.trigram_buckets = config.fasttext_trigram_buckets or config.trigram_buckets
        self.char = nn.Embedding(config.vocab_size, dim, padding_idx=0, sparse=True)
        self.bigram = nn.Embedding(self.bigram_buckets, dim, sparse=True)
        self.trigram = nn.Embedding(self.trigram_buckets, dim, sparse=True)
        for table in (self.char, self.bigram, self.trigram):
            nn.init.normal_(table.weight, std=0.05)
        with torch.no_grad():
            self.char.weight[0].zero_()
        self.dropout = config.fasttext_dropout
        self.output = nn.Linear(dim, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        left, _, centred = ngram_ids(input_ids, self.bigram_buckets, self.trigram_buckets)
        assert centred is not None
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        # Each bigram once (the left one at each position); the trigram centred on each position.
        bag = (
            drop_positions(self.char(input_ids), self.dropout, self.training)
            + drop_positions(self.bigram(left), self.dropout, self.training)
            + drop_positions(self.trigram(centred), self.dropout, self.training)
        ) * mask
        mean = bag.sum(dim=1) / (3.0 * mask.sum(dim=1).clamp(min=1.0))
        return self.output(mean)


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
            ngram_dropout=config.ngram_dropout,
        )
        self.encoder = ConvEncoder(
            embedding,
            hidden=config.hidden,
            dilations=config.dilations,
            dropout=config.dropout,
            attention_layers=config.attention_layers,
            attention_heads=config.attention_heads,
        )
        self.attention = nn.Linear(config.hidden, 1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(3 * config.hidden, config.num_labels)
        self.fasttext = FastTextBranch(config) if config.fasttext_dim else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        branches = self.branch_logits(input_ids, attention_mask)
        if len(branches) == 1:
            return branches[0]
        if self.config.fasttext_mode == "ensemble":
            return (branches[0] + branches[1]) / 2
        return branches[0] + branches[1]

    def training_losses(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets, loss_fn) -> torch.Tensor:
        """The training loss: one per branch in ``ensemble`` mode, else the loss of :meth:`forward`."""
        branches = self.branch_logits(input_ids, attention_mask)
        if len(branches) == 2 and self.config.fasttext_mode == "ensemble":
            return loss_fn(branches[0], targets) + loss_fn(branches[1], targets)
        return loss_fn(branches[0] if len(branches) == 1 else branches[0] + branches[1], targets)

    def branch_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """``[cnn logits]`` or ``[cnn logits, fastText logits]``."""
        hidden = self.encoder(input_ids, attention_mask)  # zero at pads
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        penalty = (1.0 - mask) * _NEG_INF
        max_pool = (hidden + penalty).max(dim=1).values
        mean_pool = hidden.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        weights = torch.softmax(self.attention(hidden) + penalty, dim=1)
        attention_pool = (weights * hidden).sum(dim=1)
        features = torch.cat([max_pool, mean_pool, attention_pool], dim=-1)
        logits = self.classifier(self.dropout(features))
        if self.fasttext is None:
            return [logits]
        return [logits, self.fasttext(input_ids, attention_mask)]
