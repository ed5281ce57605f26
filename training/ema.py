"""Exponential moving average of the trainable weights (optional: engine.ema_decay > 0).

Shadows are kept in float32 even when the model trains in bf16, on every rank (ZeRO stages 0-2
keep whole parameters everywhere; the config refuses EMA with ZeRO-3). Frozen weights never
change, so the EMA model is the live model with the shadows copied over the trainable ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay} must lie in (0, 1)")
        self.decay = decay
        self.params = dict(named_parameters)
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}
        self.num_updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay x shadow + (1 - decay) x weight, after each optimiser step."""
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)
        self.num_updates += 1

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, object]) -> None:
        shadow: dict[str, Tensor] = state["shadow"]  # type: ignore[assignment]
        if set(shadow) != set(self.shadow):
            missing, extra = set(self.shadow) - set(shadow), set(shadow) - set(self.shadow)
            raise KeyError(f"EMA state mismatch: missing {sorted(missing)}, extra {sorted(extra)}")
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
        self.num_updates = int(state["num_updates"])  # type: ignore[call-overload]

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """Temporarily swap the EMA weights into the model (sampling, export)."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        for name, p in self.params.items():
            p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield
        finally:
            for name, p in self.params.items():
                p.copy_(backup[name])
