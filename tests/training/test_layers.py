"""Training building blocks."""

from __future__ import annotations

import torch


def test_weight_average_tracks_an_ema_and_swaps_back() -> None:
    from training.layers import WeightAverage

    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average = WeightAverage([layer], decay=0.5)
    expected = torch.zeros(1, 2)
    for step, value in enumerate([1.0, 2.0, 4.0, 8.0], 1):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value
    with average.swapped():
        torch.testing.assert_close(layer.weight.detach(), expected)
    assert torch.all(layer.weight == 8.0)  # the trained weights are back
