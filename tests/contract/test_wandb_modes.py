"""One mode check for the three tools' W&B settings (contract.wandb_config.WandbBase), each
accepting the modes it handles: "auto" only in training, which resolves it."""

from __future__ import annotations

import pytest

from contract.wandb_config import WandbBase
from data_pipeline.job.config import WandbConfig as RenderWandbConfig
from evaluation.config import WandbConfig as EvalWandbConfig
from training.config import WandbConfig as TrainWandbConfig

ACCEPTED = {
    TrainWandbConfig: ("auto", "online", "offline", "disabled"),
    EvalWandbConfig: ("online", "offline", "disabled"),
    RenderWandbConfig: ("online", "offline", "disabled"),
}


@pytest.mark.parametrize("cls", list(ACCEPTED), ids=lambda c: c.__module__)
def test_each_tool_accepts_its_modes_and_refuses_the_rest(cls: type[WandbBase]) -> None:
    assert issubclass(cls, WandbBase) and ACCEPTED[cls] == cls.MODES
    cls()  # its default mode is one of them
    for mode in ACCEPTED[cls]:
        assert cls(mode=mode).mode == mode
    for mode in {"auto", "shared", "ofline"} - set(ACCEPTED[cls]):
        with pytest.raises(ValueError, match=r"wandb.mode"):
            cls(mode=mode)
