"""Sentiment fine-tuning of the converted e5 encoder, and its export through ONNX.

One thread (``torch.set_num_threads(1)``): the machines are shared. The recipe:

1. vocabulary: the full e5 tokenizer segments the training texts (sentiment + NER, never a dev
   row); the pruned vocabulary keeps those pieces, every single-character piece and the specials
   (:func:`training.encoder.tokenizer.pruned_ids`), shrinking the 96 M-parameter embedding table;
2. examples: ``<s> head … tail </s>`` — texts longer than ``max_tokens`` keep their first
   ``head_fraction`` and their last pieces (review verdicts sit at either end);
3. a single stream over ChnSentiCorp train + the full ChnSentiCorp hotel file, topped up with a
   sample of the other review corpora, AdamW with linear warm-up and decay, length-bucketed
   batches; ChnSentiCorp dev is scored every ``eval_every`` rows and the best state is kept;
4. export: FP32 ONNX, INT8 ``quantize_dynamic`` (MatMul + Gather), parity and accuracy of both.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from training import data as D
from training.encoder.fit import FinetuneConfig, fit, parameter_groups
from training.encoder.model import SentimentClassifier
from training.report import FitHistory

__all__ = [
    "FinetuneConfig",
    "encode_rows",
    "finetune_sentiment",
    "pad",
    "predict_logits",
    "train",
    "training_rows",
    "truncate",
]

LABELS = D.SENTIMENT_LABELS  # ("negative", "positive"): logit order
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}


def truncate(ids: Sequence[int], *, content: int, head_fraction: float) -> list[int]:
    """At most ``content`` ids: all of them, or the first ``head_fraction`` and the rest from the end."""
    if len(ids) <= content:
        return list(ids)
    head = round(content * head_fraction)
    tail = content - head
    return list(ids[:head]) + (list(ids[-tail:]) if tail else [])


def encode_rows(
    tokenizer: Tokenizer, rows: Sequence[dict], *, bos: int, eos: int, max_tokens: int, head_fraction: float
) -> list[tuple[list[int], int]]:
    """``(<s> … </s> ids, label index)`` of each row, head+tail truncated to ``max_tokens``."""
    encodings = tokenizer.encode_batch([r["text"] for r in rows], add_special_tokens=False)
    return [
        ([bos, *truncate(e.ids, content=max_tokens - 2, head_fraction=head_fraction), eos], LABEL_INDEX[r["label"]])
        for e, r in zip(encodings, rows, strict=True)
    ]


def training_rows(data_dir: str, *, other_rows: int, seed: int) -> tuple[list[dict], dict]:
    """ChnSentiCorp train + hotel rows (all), plus ``other_rows`` drawn from the other review files."""
    corpora = D.load_sentiment_corpora(data_dir)
    root = Path(data_dir) / "sentiment"
    primary = {
        r["text"]
        for name in ("chnsenticorp_train.jsonl", "chnsenticorp_htl_all.jsonl")
        for r in D.read_jsonl(root / name)
    }
    first = [r for r in corpora.train if r["text"] in primary]
    rest = [r for r in corpora.train if r["text"] not in primary]
    random.Random(seed).shuffle(rest)
    rows = first + rest[:other_rows]
    return rows, {
        "chnsenticorp_train_and_hotel": len(first),
        "other_reviews": min(other_rows, len(rest)),
        "dev": corpora.dev,
    }


def pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(batch), width), dtype=torch.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask


@torch.no_grad()
def predict_logits(
    model: SentimentClassifier, examples: Sequence[tuple[list[int], int]], *, pad_id: int, batch_size: int = 32
) -> np.ndarray:
    """Logits [N, 2] of ``examples`` (length-sorted batches, original order back)."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    out = np.zeros((len(examples), len(LABELS)), dtype=np.float32)
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        ids, mask = pad([examples[i][0] for i in chunk], pad_id)
        out[chunk] = model(ids, mask).numpy()
    return out


def accuracy(logits: np.ndarray, examples: Sequence[tuple[list[int], int]]) -> float:
    gold = np.asarray([label for _, label in examples])
    return float((logits.argmax(axis=1) == gold).mean())


def train(
    model: SentimentClassifier,
    examples: Sequence[tuple[list[int], int]],
    dev: Sequence[tuple[list[int], int]],
    config: FinetuneConfig,
    *,
    pad_id: int,
    out: Path,
    log: Callable[[str], None] = print,
    evaluate: Callable[[], float] | None = None,
) -> FitHistory:
    """Fine-tune over ``budget_rows`` rows of ``examples`` (cycled), resumable; the best dev state is
    ``out/best.pt`` (:func:`training.encoder.fit.fit`), scored by ``evaluate`` (default: accuracy on
    ``dev``). Returns the history."""

    def loss(batch: list[int]) -> torch.Tensor:
        ids, mask = pad([examples[i][0] for i in batch], pad_id)
        labels = torch.tensor([examples[i][1] for i in batch])
        return torch.nn.functional.cross_entropy(model(ids, mask), labels)

    return fit(
        model,
        [len(ids) for ids, _ in examples],
        config,
        groups=parameter_groups(model.encoder, list(model.head.parameters()), config),
        loss=loss,
        evaluate=evaluate or (lambda: accuracy(predict_logits(model, dev, pad_id=pad_id), dev)),
        out=out,
        log=log,
    )


def finetune_sentiment(
    data_dir: str,
    out: Path,
    config: FinetuneConfig,
    *,
    other_rows: int,
    e5_file: str | None,
    dev_limit: int = 0,
    log: Callable[[str], None] = print,
) -> FitHistory:
    """The sentiment fine-tune in a run directory that holds the pruned vocabulary (``kept_ids.npy``,
    ``tokenizer.json``): :func:`training_rows` → examples → :func:`train`, resumable. Writes and
    returns ``out/history.json`` with the row mix and this sitting's minutes; ``dev_limit`` scores
    only the first N ChnSentiCorp dev rows (smoke runs)."""
    from training.encoder.convert import read_e5_file
    from training.encoder.model import Encoder
    from training.encoder.tokenizer import special_ids

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    bos, eos, pad_id = special_ids(tokenizer)
    rows, mix = training_rows(data_dir, other_rows=other_rows, seed=config.seed)
    dev_rows = mix.pop("dev")["review_chnsenticorp"][: dev_limit or None]
    examples, dev = (
        encode_rows(
            tokenizer, selected, bos=bos, eos=eos, max_tokens=config.max_tokens, head_fraction=config.head_fraction
        )
        for selected in (rows, dev_rows)
    )
    keep = np.load(out / "kept_ids.npy").tolist()
    log(f"{len(examples)} training rows {mix}, {len(dev)} dev rows, vocabulary {len(keep)}")
    torch.manual_seed(config.seed)  # the head's initial weights: a rerun rebuilds the same model
    model = SentimentClassifier(Encoder.from_e5(read_e5_file(e5_file), rows=keep))
    started = time.time()
    history = train(model, examples, dev, config, pad_id=pad_id, out=out, log=log)
    history = history.model_copy(update={"mix": mix, "sitting_minutes": round((time.time() - started) / 60, 1)})
    history.write(out / "history.json")
    return history
