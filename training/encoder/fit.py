"""The encoder recipes' (sentiment and NER) settings of the one training loop (:mod:`training.loop`).

:func:`fit` trains over a row budget: length-bucketed batches of the examples (reshuffled each pass),
AdamW groups (:func:`parameter_groups`) with a linear warm-up and decay to 0 over ``budget_rows``,
gradients clipped to norm 1, the dev rows scored every ``eval_every`` rows and the best state kept in
``<out>/best.pt``. At every evaluation the loop also writes ``<out>/last.pt`` — model, optimiser,
step, the pass and batch it stopped in, the torch random state and the history — so a run stopped by
``--max-minutes`` or by a signal continues where it was: the batches of a pass are derived from the
seed and the pass number alone (:func:`pass_batches`), so a resumed run sees the same rows in the same
order as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training import data as D
from training import loop
from training.report import FitEval, FitHistory


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
    max_minutes: float = 70.0  # per sitting; the run resumes from last.pt
    seed: int = D.DEFAULT_SEED


def bucketed_batches(
    lengths: Sequence[int], *, batch_size: int, rng: random.Random, bucket: int = 50
) -> list[list[int]]:
    """Indices in batches of similar length: shuffle, sort within windows of ``bucket`` batches,
    shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * bucket
    batches: list[list[int]] = []
    for begin in range(0, len(order), window):
        chunk = sorted(order[begin : begin + window], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pass_batches(lengths: Sequence[int], config: FinetuneConfig, epoch: int) -> list[list[int]]:
    """The batches of pass ``epoch``: a function of the seed and the pass only (what makes resuming exact)."""
    return bucketed_batches(lengths, batch_size=config.batch_size, rng=random.Random(config.seed * 1000 + epoch))


def parameter_groups(encoder: nn.Module, head: Sequence[nn.Parameter], config: FinetuneConfig) -> list[dict]:
    """AdamW groups: encoder matrices with weight decay, vectors and LayerNorms without, the head at its own rate."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in encoder.named_parameters():
        (no_decay if p.ndim < 2 or "ln" in name else decay).append(p)
    head_ids = {id(p) for p in head}
    if any(id(p) in head_ids for p in decay + no_decay):
        raise ValueError("head parameters must not belong to the encoder")
    return [
        {"params": decay, "weight_decay": config.weight_decay, "lr": config.learning_rate},
        {"params": no_decay, "weight_decay": 0.0, "lr": config.learning_rate},
        {"params": list(head), "weight_decay": 0.0, "lr": config.head_learning_rate},
    ]


def schedule(config: FinetuneConfig) -> tuple[int, loop.Schedule]:
    """The steps of the row budget, and the learning-rate factor of each: warm-up, then decay to 0."""
    total_steps = math.ceil(config.budget_rows / config.batch_size)
    return total_steps, loop.decay_to_zero(total_steps, max(1, int(total_steps * config.warmup_fraction)))


def decayed(weight: torch.Tensor, config: FinetuneConfig, steps: int) -> torch.Tensor:
    """``weight`` after ``steps`` steps of this schedule for a decayed parameter row that never gets a
    gradient: its Adam moments stay zero, so only AdamW's decoupled weight decay moves it. Applied as
    the optimiser applies it (in place, one multiply per step, in the weight's dtype): the float32
    rounding of a multiply by ``1 - 6e-7`` is a sizeable, systematic part of the step, so a closed-form
    product would not reproduce it."""
    _, scale = schedule(config)
    out = weight.detach().clone()
    with torch.no_grad():
        for step in range(steps):
            lr = config.learning_rate * scale(step)
            out.mul_(1 - lr * config.weight_decay)
    return out


@dataclass
class _Finetune:
    """The encoder recipes' callbacks of the loop: one dev score, the best state kept in ``best``."""

    model: nn.Module
    loss: Callable[[list[int]], torch.Tensor]
    score: Callable[[], float]
    best: Path
    log: Callable[[str], None]

    def evaluate(self) -> dict[str, float]:
        return {"dev": self.score()}

    def select(self, scores: dict[str, float]) -> float:
        return scores["dev"]

    def on_best(self, epoch: int, history: list[dict]) -> None:
        torch.save(self.model.state_dict(), self.best)
        self.log(f"saved best {history[-1]['dev']:.4f} → {self.best}")


def _row(at: loop.Position, figures: loop.Figures, scores: dict[str, float]) -> dict:
    """A :class:`~training.report.FitEval`: the mean of the last 200 losses of the sitting."""
    loss = float(np.mean(figures.losses[-200:])) if figures.losses else None
    return {"rows": at.rows, "step": at.step, "loss": loss, "dev": scores["dev"], "minutes": at.minutes}


def fit(
    model: nn.Module,
    lengths: Sequence[int],
    config: FinetuneConfig,
    *,
    groups: list[dict],
    loss: Callable[[list[int]], torch.Tensor],
    evaluate: Callable[[], float],
    out: Path,
    log: Callable[[str], None] = print,
) -> FitHistory:
    """Train with :func:`training.loop.train` over ``budget_rows`` rows (examples cycled), ``loss(batch
    indices)`` per step, ``evaluate()`` the dev score (higher is better), the best state in
    ``out/best.pt``; resumes from ``out/last.pt`` when it exists. Returns the history; its ``finished``
    is false when the sitting ended at ``max_minutes`` before the budget."""
    total_steps, scale = schedule(config)
    step = loop.Step(torch.optim.AdamW(groups), scale, list(model.parameters()), max_norm=1.0)
    torch.manual_seed(config.seed)
    spec = loop.LoopSpec(
        name="fine-tune",
        network=model,
        step=step,
        batches=lambda epoch: pass_batches(lengths, config, epoch),
        started=time.time(),
        steps=total_steps,
        evaluate_every=config.eval_every,
        sitting_minutes=config.max_minutes,
        checkpoint=loop.Checkpoint(out / "last.pt", asdict(config)),
        row=_row,
        progress_interval=None,
        log_every=50,
        say=log,
    )
    result = loop.train(spec, _Finetune(model, loss, evaluate, out / "best.pt", log))
    return FitHistory(
        evals=[FitEval.model_validate(entry) for entry in result.history],
        config=asdict(config),
        best_dev=result.best,
        train_minutes=result.minutes,
        finished=result.finished,
    )
