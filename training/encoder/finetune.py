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

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from training import data as D
from training.encoder.model import SentimentClassifier

LABELS = D.SENTIMENT_LABELS  # ("negative", "positive"): logit order
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}


@dataclass
class FinetuneConfig:
    max_tokens: int = 96  # including <s> and </s>
    head_fraction: float = 0.5
    batch_size: int = 16
    learning_rate: float = 6e-5
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    budget_rows: int = 24_000  # rows seen in total (sets the LR schedule)
    eval_every: int = 4_000
    max_minutes: float = 70.0
    seed: int = D.DEFAULT_SEED


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


def pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(batch), width), dtype=torch.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def bucketed_batches(
    examples: Sequence[tuple[list[int], int]], *, batch_size: int, rng: random.Random, bucket: int = 50
) -> list[list[int]]:
    """Indices in batches of similar length: shuffle, sort within windows of ``bucket`` batches,
    shuffle the batches."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * bucket
    batches: list[list[int]] = []
    for begin in range(0, len(order), window):
        chunk = sorted(order[begin : begin + window], key=lambda i: len(examples[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


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
    checkpoint: Path,
    log: Callable[[str], None] = print,
) -> dict:
    """Fine-tune over ``budget_rows`` rows of ``examples`` (cycled); keep the best dev state in
    ``checkpoint``. Returns the history (rows seen, loss, dev accuracy, minutes)."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    head_params = list(model.head.parameters())
    head_ids = {id(p) for p in head_params}
    decay, no_decay = [], []
    for name, p in model.encoder.named_parameters():
        (no_decay if p.ndim < 2 or "ln" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay, "lr": config.learning_rate},
            {"params": no_decay, "weight_decay": 0.0, "lr": config.learning_rate},
            {"params": head_params, "weight_decay": 0.0, "lr": config.head_learning_rate},
        ]
    )
    assert not any(id(p) in head_ids for p in decay + no_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    total_steps = math.ceil(config.budget_rows / config.batch_size)
    warmup = max(1, int(total_steps * config.warmup_fraction))
    history: dict = {"evals": [], "config": asdict(config)}
    best = -1.0
    started = time.time()
    step = rows_seen = 0
    next_eval = config.eval_every
    losses: list[float] = []
    stop = False
    while not stop:
        for batch in bucketed_batches(examples, batch_size=config.batch_size, rng=rng):
            model.train()
            ids, mask = pad([examples[i][0] for i in batch], pad_id)
            labels = torch.tensor([examples[i][1] for i in batch])
            scale = min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))
            for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr * scale
            loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            rows_seen += len(batch)
            minutes = (time.time() - started) / 60
            if step % 50 == 0:
                rate = rows_seen / (time.time() - started)
                log(f"step {step}/{total_steps} rows {rows_seen} loss {np.mean(losses[-50:]):.4f} {rate:.1f} rows/s")
            out_of_time = minutes >= config.max_minutes
            done = step >= total_steps
            if rows_seen >= next_eval or done or out_of_time:
                next_eval += config.eval_every
                acc = accuracy(predict_logits(model, dev, pad_id=pad_id), dev)
                minutes = (time.time() - started) / 60
                entry = {
                    "rows": rows_seen,
                    "step": step,
                    "loss": float(np.mean(losses[-200:])),
                    "dev": acc,
                    "minutes": round(minutes, 2),
                }
                history["evals"].append(entry)
                log(f"eval {json.dumps(entry)}")
                if acc > best:
                    best = acc
                    torch.save(model.state_dict(), checkpoint)
                    log(f"saved best {acc:.4f} → {checkpoint}")
            if done or out_of_time:
                stop = True
                break
    history["best_dev"] = best
    history["train_minutes"] = round((time.time() - started) / 60, 2)
    return history
