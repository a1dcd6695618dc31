"""One fine-tuning loop for the encoder recipes (sentiment and NER), resumable from its last checkpoint.

The loop streams length-bucketed batches of the examples (reshuffled each pass), scales the learning
rates with a linear warm-up and decay over ``budget_rows``, scores the dev rows every ``eval_every``
rows and keeps the best state in ``<out>/best.pt``. At every evaluation it also writes
``<out>/last.pt`` — model, optimiser, step, the pass and batch it stopped in, both random states and
the history — so a run stopped by ``--max-minutes`` or by a signal continues where it was: the
batches of a pass are derived from the seed and the pass number alone, so a resumed run sees the
same rows in the same order as an uninterrupted one.
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
from torch import nn

from training import data as D
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


def _recipe(config: dict) -> dict:
    """What a resumed run must share with the run it continues (the time per sitting may differ)."""
    return {key: value for key, value in config.items() if key != "max_minutes"}


def lr_scale(step: int, total_steps: int, warmup: int) -> float:
    return min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))


def decayed(weight: torch.Tensor, config: FinetuneConfig, steps: int) -> torch.Tensor:
    """``weight`` after ``steps`` steps of this schedule for a decayed parameter row that never gets a
    gradient: its Adam moments stay zero, so only AdamW's decoupled weight decay moves it. Applied as
    the optimiser applies it (in place, one multiply per step, in the weight's dtype): the float32
    rounding of a multiply by ``1 - 6e-7`` is a sizeable, systematic part of the step, so a closed-form
    product would not reproduce it."""
    total_steps = math.ceil(config.budget_rows / config.batch_size)
    warmup = max(1, int(total_steps * config.warmup_fraction))
    out = weight.detach().clone()
    with torch.no_grad():
        for step in range(steps):
            lr = config.learning_rate * lr_scale(step, total_steps, warmup)
            out.mul_(1 - lr * config.weight_decay)
    return out


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
    """Train over ``budget_rows`` rows (examples cycled), ``loss(batch indices)`` per step, ``evaluate()``
    the dev score (higher is better). Resumes from ``out/last.pt`` when it exists. Returns the history;
    its ``finished`` is false when the sitting ended at ``max_minutes`` before the budget."""
    optimizer = torch.optim.AdamW(groups)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    total_steps = math.ceil(config.budget_rows / config.batch_size)
    warmup = max(1, int(total_steps * config.warmup_fraction))
    last_path, best_path = out / "last.pt", out / "best.pt"
    state: dict = {"step": 0, "rows": 0, "epoch": 0, "batch": 0, "best": -1.0, "history": [], "minutes": 0.0}
    torch.manual_seed(config.seed)
    if last_path.exists():
        saved = torch.load(last_path, weights_only=False)
        if _recipe(saved["config"]) != _recipe(asdict(config)):
            raise ValueError(f"{last_path} was written with another config; remove it to start over")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        log(f"resumed from {last_path} at step {state['step']} ({state['rows']} rows)")
    started = time.time() - state["minutes"] * 60  # minutes over all sittings
    sitting = time.time()
    next_eval = (state["rows"] // config.eval_every + 1) * config.eval_every
    losses: list[float] = []
    finished = state["step"] >= total_steps

    def checkpoint() -> None:
        state["minutes"] = round((time.time() - started) / 60, 2)
        saved = {
            "config": asdict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "state": state,
        }
        torch.save(saved, last_path.with_suffix(".partial"))
        last_path.with_suffix(".partial").replace(last_path)

    while not finished:
        batches = pass_batches(lengths, config, state["epoch"])
        stop = False
        for position in range(state["batch"], len(batches)):
            model.train()
            value = loss(batches[position])
            scale = lr_scale(state["step"], total_steps, warmup)
            for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr * scale
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(value.item()))
            state["step"] += 1
            state["rows"] += len(batches[position])
            state["batch"] = position + 1
            if state["step"] % 50 == 0:
                rate = len(losses) * config.batch_size / max(1e-9, time.time() - sitting)
                log(
                    f"step {state['step']}/{total_steps} rows {state['rows']} "
                    f"loss {np.mean(losses[-50:]):.4f} {rate:.1f} rows/s"
                )
            finished = state["step"] >= total_steps
            out_of_time = (time.time() - sitting) / 60 >= config.max_minutes
            if state["rows"] >= next_eval or finished or out_of_time:
                next_eval = (state["rows"] // config.eval_every + 1) * config.eval_every
                score = evaluate()
                entry = {
                    "rows": state["rows"],
                    "step": state["step"],
                    "loss": float(np.mean(losses[-200:])) if losses else None,
                    "dev": score,
                    "minutes": round((time.time() - started) / 60, 2),
                }
                state["history"].append(entry)
                log(f"eval {json.dumps(entry)}")
                if score > state["best"]:
                    state["best"] = score
                    torch.save(model.state_dict(), best_path)
                    log(f"saved best {score:.4f} → {best_path}")
                checkpoint()
            if finished or out_of_time:
                stop = True
                break
        if stop:
            break
        state["epoch"] += 1
        state["batch"] = 0
    return FitHistory(
        evals=[FitEval.model_validate(entry) for entry in state["history"]],
        config=asdict(config),
        best_dev=state["best"],
        train_minutes=round((time.time() - started) / 60, 2),
        finished=finished,
    )
