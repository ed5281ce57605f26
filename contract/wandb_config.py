"""The W&B settings all three tools share: `WandbBase` (mode and project, the mode check) and the
modes each tool accepts, written here once.

The accepted modes are not one union: only training resolves "auto" (training.tracking.wandb_mode:
online with WANDB_API_KEY, else offline). The render job (data_pipeline.job.summary.log_wandb) and
evaluation (evaluation.report.log_wandb) hand the mode to wandb.init, which has no "auto";
accepting it there would need new resolving code in both, so each keeps the modes it handles.
Lives in data_pipeline because training and evaluation may import it, not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# what wandb.init is handed by the render job and evaluation
WANDB_MODES: tuple[str, ...] = ("online", "offline", "disabled")
# training adds "auto" (resolved by training.tracking.wandb_mode)
TRAIN_WANDB_MODES: tuple[str, ...] = ("auto", *WANDB_MODES)


@dataclass
class WandbBase:
    """Subclassed once per tool (data_pipeline.job.config, training.config, evaluation.config), each
    with its own defaults and fields; `MODES` is what that tool accepts."""

    MODES: ClassVar[tuple[str, ...]] = WANDB_MODES

    mode: str
    project: str

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"wandb.mode={self.mode!r}; expected one of {self.MODES}")
