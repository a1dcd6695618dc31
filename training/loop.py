"""The one epoch loop every recipe trains with, driven by its callbacks.

Per epoch: check the time budget, shuffle the length-bucketed batches, and for each batch take the
recipe's ``loss``, step the optimiser and its schedules; then ``evaluate`` on the dev splits, keep the
epoch if ``select`` scores it above the best so far, and tell the recipe (``on_best``) so it can keep
the weights. What the recipe trains, and how it scores an epoch, stays in the recipe.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training import data as D
from training.layers import SplitOptimizer

log = logging.getLogger("zhserve.train")

MAX_BATCH = 128  # sequences per training batch, whatever their length


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def linear_schedule(optimizer: SplitOptimizer, total_steps: int, warmup: int) -> list:
    """Linear warm-up then linear decay to 5 % of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.05, 1.0 - (step - warmup) / max(1, total_steps - warmup))

    return optimizer.schedulers(factor)


def optimizer_step(optimizer: SplitOptimizer, schedulers: list, loss: torch.Tensor, dense: list[nn.Parameter]) -> None:
    """Backpropagate ``loss``, clip the dense gradients' norm to 5, step the optimiser and its schedules."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(dense, 5.0)
    optimizer.step()
    for scheduler in schedulers:
        scheduler.step()


def running_mean(previous: float, value: float, step: int) -> float:
    """The progress line's smoothed figure: ``value`` at step 1, then an exponential mean (0.98)."""
    return 0.98 * previous + 0.02 * value if step > 1 else value


def time_left_for_epoch(started: float, epoch: int, max_minutes: float) -> bool:
    """Whether another epoch (estimated from the mean so far) fits the budget, keeping 10 % for export."""
    if epoch == 1 or max_minutes <= 0:
        return True
    elapsed = time.time() - started
    per_epoch = elapsed / (epoch - 1)
    return elapsed + per_epoch <= max_minutes * 60 * 0.9


def dense_parameters(parameters: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters whose gradients are clipped: all but the sparse embedding tables (``mark_sparse``)."""
    return [p for p in parameters if not getattr(p, "_zh_sparse", False)]


class Callbacks(Protocol):
    """What a recipe gives the loop.

    ``loss`` is the training loss of one batch (the indices of its examples) and may return named figures
    to show beside it (``(loss, {"acc": …})``); ``evaluate`` scores the epoch on the dev splits;
    ``select`` turns those scores into the one number the best epoch maximises; ``on_best`` is called
    when an epoch beats the best so far, with the history up to and including it.
    """

    def loss(self, indices: list[int]) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def evaluate(self) -> dict[str, float]: ...

    def select(self, scores: dict[str, float]) -> float: ...

    def on_best(self, epoch: int, history: list[dict]) -> None: ...


@dataclass
class LoopSpec:
    """How to train: the network (put in training mode each epoch), its optimiser, the batching."""

    name: str  # progress lines and logs: "ner final", "sentiment", …
    network: nn.Module
    optimizer: SplitOptimizer
    dense: list[nn.Parameter]
    lengths: Sequence[int]  # tokens of each training example
    batch_tokens: int
    epochs: int
    warmup: int
    batch_rng: random.Random
    progress_interval: float
    started: float  # the time budget counts from here
    max_minutes: float = 0.0
    # Called after every optimiser step (e.g. a weight average's update).
    after_step: Callable[[], None] | None = None
    # Entered around evaluate/select/on_best: which weights an epoch is judged by (e.g. averaged ones).
    evaluation_weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # Name of the loss in the history rows.
    loss_name: str = "train_loss"


@dataclass
class LoopResult:
    history: list[dict] = field(default_factory=list)
    best: float = -1.0
    best_epoch: int | None = None


def _batches(spec: LoopSpec, rng: random.Random | None) -> list[list[int]]:
    return D.length_batches(spec.lengths, max_tokens=spec.batch_tokens, max_batch=MAX_BATCH, rng=rng)


def _figures(output: torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]) -> tuple[torch.Tensor, dict]:
    if isinstance(output, tuple):
        loss, extra = output
        return loss, {"loss": loss, **extra}
    return output, {"loss": output}


def train(spec: LoopSpec, callbacks: Callbacks, *, evaluate: bool = True) -> LoopResult:
    """Run up to ``spec.epochs`` epochs; with ``evaluate`` (the default) score each and keep the best.

    Without ``evaluate`` (pretraining) the history rows hold the running training figures only.
    """
    steps_per_epoch = len(_batches(spec, None))
    schedulers = linear_schedule(spec.optimizer, steps_per_epoch * spec.epochs, warmup=spec.warmup)
    result = LoopResult()
    for epoch in range(1, spec.epochs + 1):
        if not time_left_for_epoch(spec.started, epoch, spec.max_minutes):
            log.warning("stopping before epoch %d: the --max-minutes budget would be exceeded", epoch)
            break
        spec.network.train()
        progress = tqdm(
            _batches(spec, spec.batch_rng),
            desc=f"{spec.name} epoch {epoch}/{spec.epochs}",
            mininterval=spec.progress_interval,
            file=sys.stderr,
        )
        running: dict[str, float] = {}
        for step, indices in enumerate(progress, 1):
            loss, figures = _figures(callbacks.loss(indices))
            optimizer_step(spec.optimizer, schedulers, loss, spec.dense)
            if spec.after_step is not None:
                spec.after_step()
            running = {k: running_mean(running.get(k, 0.0), v.item(), step) for k, v in figures.items()}
            progress.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
        train_figures = {
            (spec.loss_name if k == "loss" else k): round(v, 4) for k, v in (running or {"loss": 0.0}).items()
        }
        if not evaluate:
            result.history.append({"epoch": epoch, **train_figures})
            log.info("%s epoch %d: %s (%.0f s)", spec.name, epoch, train_figures, time.time() - spec.started)
            continue
        with spec.evaluation_weights():
            scores = callbacks.evaluate()
            result.history.append({"epoch": epoch, **train_figures, **{k: round(v, 4) for k, v in scores.items()}})
            log.info(
                "%s epoch %d: loss %.3f dev %s (%.0f s)",
                spec.name,
                epoch,
                running.get("loss", 0.0),
                scores,
                time.time() - spec.started,
            )
            score = callbacks.select(scores)
            if score > result.best:
                result.best, result.best_epoch = score, epoch
                callbacks.on_best(epoch, result.history)
    return result
