"""EMA of the trainable weights: the update rule, the swap for sampling/export, and its state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.ema import EMA


def test_update_swap_and_state():
    layer = nn.Linear(2, 2)
    named = list(layer.named_parameters())
    ema = EMA(named, decay=0.9)
    start = {n: p.detach().clone() for n, p in named}
    with torch.no_grad():
        for _, p in named:
            p.add_(1.0)
    ema.update()
    for name, _ in named:
        torch.testing.assert_close(ema.shadow[name], start[name] + 0.1)  # 0.9 old + 0.1 new
    live = {n: p.detach().clone() for n, p in named}
    with ema.applied():
        for name, p in named:
            torch.testing.assert_close(p.detach(), start[name] + 0.1)
    for name, p in named:
        assert torch.equal(p.detach(), live[name]), "live weights come back after the swap"

    other = EMA([(n, p) for n, p in nn.Linear(2, 2).named_parameters()], decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1
    for name in ema.shadow:
        assert torch.equal(other.shadow[name], ema.shadow[name])


def test_state_mismatch_is_an_error():
    ema = EMA(list(nn.Linear(2, 2).named_parameters()), decay=0.5)
    with pytest.raises(KeyError, match="missing"):
        ema.load_state_dict({"shadow": {}, "num_updates": 0})
