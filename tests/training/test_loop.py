"""The epoch loop: it keeps the epoch its recipe's ``select`` scores best, tells the recipe through
``on_best`` with the history so far, judges epochs inside ``evaluation_weights``, and stops at the budget."""

from __future__ import annotations

import contextlib
import random
import time

import pytest

torch = pytest.importorskip("torch")

from training import loop  # noqa: E402
from training.layers import SplitOptimizer  # noqa: E402


class Recipe:
    """Fits ``y = 3x`` with one weight; the dev "scores" of each epoch are scripted."""

    def __init__(self, net: torch.nn.Linear, scripted: list[float]) -> None:
        self.net, self.scripted = net, list(scripted)
        self.x = torch.linspace(-1, 1, 64)[:, None]
        self.best_calls: list[tuple[int, list[int], float]] = []
        self.inside_weights = 0
        self.evaluated_inside: list[bool] = []

    def loss(self, indices: list[int]) -> torch.Tensor:
        x = self.x[indices]
        return (self.net(x) - 3 * x).pow(2).mean()

    def evaluate(self) -> dict[str, float]:
        self.evaluated_inside.append(self.inside_weights > 0)
        return {"dev": self.scripted.pop(0), "other": 0.5}

    def select(self, scores: dict[str, float]) -> float:
        return scores["dev"]

    def on_best(self, epoch: int, history: list[dict]) -> None:
        self.best_calls.append((epoch, [row["epoch"] for row in history], float(self.net.weight.detach())))

    @contextlib.contextmanager
    def weights(self):  # type: ignore[no-untyped-def]
        self.inside_weights += 1
        yield
        self.inside_weights -= 1


def spec(net: torch.nn.Linear, epochs: int, **overrides) -> loop.LoopSpec:  # type: ignore[no-untyped-def]
    options = dict(
        name="test",
        network=net,
        optimizer=SplitOptimizer([(list(net.parameters()), 0.05)]),
        parameters=list(net.parameters()),
        lengths=[4] * 64,
        batch_tokens=32,
        epochs=epochs,
        warmup=1,
        batch_rng=random.Random(0),
        progress_interval=60.0,
        started=time.time(),
    )
    return loop.epoch_spec(**{**options, **overrides})


def test_the_loop_keeps_the_best_selected_epoch_and_reports_each_improvement() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 1, bias=False)
    recipe = Recipe(net, scripted=[0.2, 0.6, 0.4, 0.6, 0.9])
    result = loop.train(spec(net, 5, evaluation_weights=recipe.weights), recipe)
    assert result.best == 0.9 and result.best_epoch == 5
    # Improvements only (0.6 again at epoch 4 is no improvement), each with the history up to that epoch.
    assert [(epoch, seen) for epoch, seen, _ in recipe.best_calls] == [
        (1, [1]),
        (2, [1, 2]),
        (5, [1, 2, 3, 4, 5]),
    ]
    assert all(recipe.evaluated_inside)
    assert [row["dev"] for row in result.history] == [0.2, 0.6, 0.4, 0.6, 0.9]
    assert set(result.history[0]) == {"epoch", "train_loss", "dev", "other"}
    # The loss falls as the weight approaches 3.
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert abs(recipe.best_calls[-1][2] - 3.0) < abs(recipe.best_calls[0][2] - 3.0)


def test_the_same_seed_gives_the_same_training() -> None:
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        net = torch.nn.Linear(1, 1, bias=False)
        loop.train(spec(net, 2), Recipe(net, scripted=[0.1, 0.2]))
        weights.append(float(net.weight.detach()))
    assert weights[0] == weights[1]


def test_no_epoch_starts_that_would_overrun_the_budget() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 1, bias=False)
    recipe = Recipe(net, scripted=[0.1, 0.2, 0.3])
    # Started "an hour ago" with a one-minute budget: epoch 1 always runs, epoch 2 would not fit.
    result = loop.train(spec(net, 3, started=time.time() - 3600, max_minutes=1.0), recipe)
    assert [row["epoch"] for row in result.history] == [1]


def test_without_evaluation_the_history_holds_the_running_figures() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 1, bias=False)

    class WithAccuracy(Recipe):
        def loss(self, indices):  # type: ignore[no-untyped-def]
            value = super().loss(indices)
            return value, {"accuracy": torch.tensor(0.25)}

    recipe = WithAccuracy(net, scripted=[])
    result = loop.train(spec(net, 2, loss_name="loss"), recipe, evaluate=False)
    assert [set(row) for row in result.history] == [{"epoch", "loss", "accuracy"}] * 2
    assert result.history[1]["accuracy"] == 0.25 and result.best_epoch is None
