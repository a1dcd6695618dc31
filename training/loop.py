"""The one training loop every recipe trains with, driven by its callbacks.

A run is a sequence of passes over the training examples. Each pass takes its batches from the recipe
(``batches``); each batch gives the recipe's ``loss``, and :class:`Step` takes one optimiser step with
the learning rates its schedule sets for that step. The dev splits are scored (``evaluate``) after each
pass, or every ``evaluate_every`` rows; an evaluation that ``select`` scores above the best so far is
told to the recipe (``on_best``) so it can keep the weights. The run ends after ``epochs`` passes or
``steps`` steps, or at its time budget; with a :class:`Checkpoint` it resumes where a stopped run
was. What the recipe trains, and how it scores an evaluation, stays in the recipe.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training import data as D

log = logging.getLogger("zhserve.train")

MAX_BATCH = 128  # sequences per training batch of the token-budget batches, whatever their length

Schedule = Callable[[int], float]  # the factor of the base learning rates at a step (from 0)
Batches = Callable[[int], list[list[int]]]  # the batches (example indices) of a pass (from 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def decay_to_floor(total_steps: int, warmup: int, floor: float = 0.05) -> Schedule:
    """Linear warm-up over ``warmup`` steps, then linear decay to ``floor`` of the peak (the CNN recipes)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(floor, 1.0 - (step - warmup) / max(1, total_steps - warmup))

    return factor


def decay_to_zero(total_steps: int, warmup: int) -> Schedule:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total_steps`` (the encoder recipes)."""

    def factor(step: int) -> float:
        return min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))

    return factor


class Optimizer(Protocol):
    """What :class:`Step` drives: a ``torch.optim`` optimiser or a :class:`~training.layers.SplitOptimizer`."""

    @property
    def param_groups(self) -> list[dict[str, Any]]: ...

    def zero_grad(self) -> None: ...

    def step(self) -> None: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


@dataclass
class Step:
    """One optimiser step: the schedule's learning rates, zero the gradients, backpropagate, clip the
    gradients' norm of ``clip`` to ``max_norm``, step."""

    optimizer: Optimizer
    schedule: Schedule
    clip: list[nn.Parameter]
    max_norm: float
    base_lrs: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]

    def __call__(self, loss: torch.Tensor, step: int) -> None:
        scale = self.schedule(step)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * scale
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.clip, self.max_norm)
        self.optimizer.step()


def dense_parameters(parameters: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters whose gradients are clipped: all but the sparse embedding tables (``mark_sparse``)."""
    return [p for p in parameters if not getattr(p, "_zh_sparse", False)]


@dataclass
class LengthBatches:
    """Token-budget batches of similar length (:func:`training.data.length_batches`), each pass drawn
    in turn from one ``rng``."""

    lengths: Sequence[int]  # tokens of each training example
    max_tokens: int
    rng: random.Random

    def __call__(self, epoch: int) -> list[list[int]]:
        return D.length_batches(self.lengths, max_tokens=self.max_tokens, max_batch=MAX_BATCH, rng=self.rng)

    @property
    def per_pass(self) -> int:
        """Batches of a pass, for the schedule's length (counted unshuffled: no draw from ``rng``)."""
        return len(D.length_batches(self.lengths, max_tokens=self.max_tokens, max_batch=MAX_BATCH, rng=None))


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


class Callbacks(Protocol):
    """What a recipe gives the loop.

    ``loss`` is the training loss of one batch (the indices of its examples) and may return named figures
    to show beside it (``(loss, {"acc": …})``); ``evaluate`` scores the model on the dev splits;
    ``select`` turns those scores into the one number the best evaluation maximises; ``on_best`` is called
    when an evaluation beats the best so far, with its pass (from 1) and the history up to and including it.
    """

    def loss(self, indices: list[int]) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def evaluate(self) -> dict[str, float]: ...

    def select(self, scores: dict[str, float]) -> float: ...

    def on_best(self, epoch: int, history: list[dict]) -> None: ...


@dataclass
class Position:
    """Where a run is (what :class:`Checkpoint` keeps): the pass and the batch in it, steps and rows so
    far, the best selected score, the history, and the minutes over all sittings."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    rows: int = 0
    best: float = -1.0
    history: list[dict] = field(default_factory=list)
    minutes: float = 0.0


@dataclass
class Figures:
    """The training figures of a sitting: the running means of this pass, the losses of the sitting."""

    running: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


# The history row of an evaluation: from where the run is, its training figures and the dev scores.
Row = Callable[[Position, Figures, dict[str, float]], dict]


@dataclass
class Checkpoint:
    """A resumable run: at every evaluation ``path`` keeps the model, the optimiser, the torch random
    state and the :class:`Position`; a run that finds it continues from there, if it was written with
    the same ``config`` (but for the keys in ``free``, e.g. the time per sitting)."""

    path: Path
    config: dict[str, Any]
    free: tuple[str, ...] = ("max_minutes",)

    def _recipe(self, config: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in config.items() if key not in self.free}

    def resume(self, network: nn.Module, optimizer: Optimizer) -> Position | None:
        if not self.path.exists():
            return None
        saved = torch.load(self.path, weights_only=False)
        if self._recipe(saved["config"]) != self._recipe(self.config):
            raise ValueError(f"{self.path} was written with another config; remove it to start over")
        network.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        return Position(**saved["state"])

    def save(self, network: nn.Module, optimizer: Optimizer, position: Position) -> None:
        saved = {
            "config": self.config,
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "state": asdict(position),
        }
        torch.save(saved, self.path.with_suffix(".partial"))
        self.path.with_suffix(".partial").replace(self.path)


@dataclass
class LoopSpec:
    """How to train: the network (in training mode for every step), its step, the batches of each pass,
    when to evaluate and when to stop."""

    name: str  # progress lines and logs: "ner final", "sentiment", …
    network: nn.Module
    step: Step
    batches: Batches
    started: float  # the time budget counts from here
    epochs: int | None = None  # passes; None: until ``steps``
    steps: int | None = None  # the run ends after this many steps (a row budget)
    evaluate_every: int = 0  # rows between evaluations (and after the last step); 0: after each pass
    # No pass starts that would overrun this budget (estimated from the passes so far); 0: none.
    max_minutes: float = 0.0
    # The sitting ends after the step at which it has run this long (evaluated and checkpointed first).
    sitting_minutes: float | None = None
    checkpoint: Checkpoint | None = None
    # Called after every optimiser step (e.g. a weight average's update).
    after_step: Callable[[], None] | None = None
    # Entered around evaluate/select/on_best: which weights the model is judged by (e.g. averaged ones).
    evaluation_weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # Name of the loss in the history rows (of the default row).
    loss_name: str = "train_loss"
    # The history row of an evaluation; None: the pass, the running training figures, the scores (4 decimals).
    row: Row | None = None
    progress_interval: float | None = 60.0  # seconds between progress bar updates; None: no bar
    log_every: int = 0  # steps between progress lines to ``say``; 0: none
    say: Callable[[str], None] = log.info


def epoch_spec(
    name: str,
    network: nn.Module,
    optimizer: Optimizer,
    parameters: Sequence[nn.Parameter],
    *,
    lengths: Sequence[int],
    batch_tokens: int,
    epochs: int,
    warmup: int,
    batch_rng: random.Random,
    **options: Any,
) -> LoopSpec:
    """The CNN recipes' loop: ``epochs`` passes of token-budget batches (:class:`LengthBatches`), the
    learning rates warmed up over ``warmup`` steps then decayed to 5 % over all the passes, the gradients'
    norm of the dense ``parameters`` clipped to 5, an evaluation after each pass; ``options`` as
    :class:`LoopSpec`."""
    batches = LengthBatches(lengths, batch_tokens, batch_rng)
    step = Step(optimizer, decay_to_floor(batches.per_pass * epochs, warmup), dense_parameters(parameters), 5.0)
    return LoopSpec(name=name, network=network, step=step, batches=batches, epochs=epochs, **options)


@dataclass
class LoopResult:
    history: list[dict] = field(default_factory=list)
    best: float = -1.0
    best_epoch: int | None = None
    finished: bool = True  # false when the sitting ended at ``sitting_minutes`` before ``steps``
    minutes: float = 0.0  # over all sittings


def _figures(output: torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]) -> tuple[torch.Tensor, dict]:
    if isinstance(output, tuple):
        loss, extra = output
        return loss, {"loss": loss, **extra}
    return output, {"loss": output}


def _pass_row(spec: LoopSpec, position: Position, figures: Figures, scores: dict[str, float]) -> dict:
    train = {(spec.loss_name if k == "loss" else k): round(v, 4) for k, v in (figures.running or {"loss": 0.0}).items()}
    return {"epoch": position.epoch + 1, **train, **{k: round(v, 4) for k, v in scores.items()}}


def train(spec: LoopSpec, callbacks: Callbacks, *, evaluate: bool = True) -> LoopResult:
    """Run the passes; with ``evaluate`` (the default) score the model and keep the best.

    Without ``evaluate`` (pretraining) a history row after each pass holds the running training figures only.
    """
    result = LoopResult()
    position = Position()
    if spec.checkpoint is not None:
        resumed = spec.checkpoint.resume(spec.network, spec.step.optimizer)
        if resumed is not None:
            position = resumed
            spec.say(f"resumed from {spec.checkpoint.path} at step {position.step} ({position.rows} rows)")
    started = spec.started - position.minutes * 60  # minutes over all sittings
    sitting, sitting_rows = time.time(), position.rows
    every = spec.evaluate_every
    next_eval = (position.rows // every + 1) * every if every else 0
    figures = Figures()
    row = spec.row or (lambda at, seen, scores: _pass_row(spec, at, seen, scores))

    def minutes() -> float:
        return round((time.time() - started) / 60, 2)

    def record(scores: dict[str, float]) -> dict:
        position.minutes = minutes()
        entry = row(position, figures, scores)
        position.history.append(entry)
        return entry

    def judge() -> None:
        if not evaluate:
            spec.say(f"{spec.name} epoch {position.epoch + 1}: {json.dumps(record({}), default=float)}")
            return
        with spec.evaluation_weights():
            scores = callbacks.evaluate()
            entry = record(scores)
            spec.say(f"{spec.name} eval {json.dumps(entry, default=float)}")
            score = callbacks.select(scores)
            if score > position.best:
                position.best, result.best_epoch = score, position.epoch + 1
                callbacks.on_best(position.epoch + 1, position.history)
        if spec.checkpoint is not None:
            position.minutes = minutes()
            spec.checkpoint.save(spec.network, spec.step.optimizer, position)

    finished = spec.steps is not None and position.step >= spec.steps
    out_of_time = False
    while not finished and not out_of_time and (spec.epochs is None or position.epoch < spec.epochs):
        if not time_left_for_epoch(started, position.epoch + 1, spec.max_minutes):
            log.warning("stopping before epoch %d: the --max-minutes budget would be exceeded", position.epoch + 1)
            break
        batches = spec.batches(position.epoch)
        progress = tqdm(
            range(position.batch, len(batches)),
            desc=f"{spec.name} epoch {position.epoch + 1}/{spec.epochs or '…'}",
            mininterval=spec.progress_interval or 0.0,
            disable=spec.progress_interval is None,
            file=sys.stderr,
        )
        figures.running = {}
        for seen, index in enumerate(progress, 1):
            spec.network.train()
            loss, named = _figures(callbacks.loss(batches[index]))
            spec.step(loss, position.step)
            if spec.after_step is not None:
                spec.after_step()
            position.step += 1
            position.rows += len(batches[index])
            position.batch = index + 1
            values = {k: v.item() for k, v in named.items()}
            figures.losses.append(values["loss"])
            figures.running = {k: running_mean(figures.running.get(k, 0.0), v, seen) for k, v in values.items()}
            progress.set_postfix({k: f"{v:.3f}" for k, v in figures.running.items()}, refresh=False)
            if spec.log_every and position.step % spec.log_every == 0:
                rate = (position.rows - sitting_rows) / max(1e-9, time.time() - sitting)
                spec.say(
                    f"step {position.step}/{spec.steps} rows {position.rows} "
                    f"loss {np.mean(figures.losses[-spec.log_every :]):.4f} {rate:.1f} rows/s"
                )
            finished = spec.steps is not None and position.step >= spec.steps
            out_of_time = spec.sitting_minutes is not None and (time.time() - sitting) / 60 >= spec.sitting_minutes
            if every and (position.rows >= next_eval or finished or out_of_time):
                next_eval = (position.rows // every + 1) * every
                judge()
            if finished or out_of_time:
                break
        else:
            if not every:
                judge()
            position.epoch += 1
            position.batch = 0
    result.history, result.best = position.history, position.best
    result.finished = finished or not out_of_time
    result.minutes = minutes()
    return result
