"""`MultiViewUNet`: the multi-view UNet with its image-prompt controller, as one diffusers model.

It is the `unet` component of `ImageDreamPipeline` and the part of `ImageDream` that trains. Its
config (config.json) holds the network's `ModelConfig` (without weight paths) and the controller's
config, so a folder rebuilds the same classes; its weights file keeps our key names
(`unet.*`, `controller.*`), which `training.model.convert` maps to and from the released ones.
`build_denoiser` builds its two modules from the typed configs (the class calls it on init).

Loading streams: the modules are built on the meta device (no random init, no memory), and the
safetensors tensors are assigned as the parameters, so peak memory stays near the file's size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from safetensors.torch import load_file
from torch import Tensor, nn

from training.model.config import (
    ControllerConfig,
    ModelConfig,
    WeightsConfig,
    to_controller_config,
    to_model_config,
)
from training.model.controllers import Controller, build_controller
from training.model.unet import build_multiview_unet

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def build_denoiser(
    model_cfg: ModelConfig, controller_cfg: ControllerConfig
) -> tuple[nn.Module, Controller]:
    """Random-init multi-view UNet + controller (works under `torch.device("meta")`)."""
    context_dim = model_cfg.unet.cross_attention_dim
    image = model_cfg.image_encoder
    controller = build_controller(
        controller_cfg, context_dim, image.projection_dim, image.hidden_size
    )
    unet = build_multiview_unet(
        model_cfg.unet, context_dim if controller.uses_image_tokens else None
    )
    return unet, controller


def portable_model_config(cfg: ModelConfig) -> dict[str, Any]:
    """The ModelConfig as JSON-able data, without local weight paths."""
    return dataclasses.asdict(dataclasses.replace(cfg, weights=WeightsConfig()))


class MultiViewUNet(ModelMixin, ConfigMixin):
    config_name = "config.json"  # type: ignore[assignment]

    @register_to_config
    def __init__(self, model_config: dict[str, Any], controller_config: dict[str, Any]) -> None:
        super().__init__()
        self.typed_model_config: ModelConfig = to_model_config(model_config)
        self.typed_controller_config: ControllerConfig = to_controller_config(controller_config)
        unet, controller = build_denoiser(self.typed_model_config, self.typed_controller_config)
        self.unet: Any = unet  # diffusers UNet2DConditionModel with the multi-view processors
        self.controller: Any = controller  # training.model.controllers.Controller

    @classmethod
    def from_configs(
        cls, model_cfg: ModelConfig, controller_cfg: ControllerConfig, meta: bool = False
    ) -> MultiViewUNet:
        """Built from typed configs; meta=True allocates nothing (weights assigned later)."""
        kwargs = dict(
            model_config=portable_model_config(model_cfg),
            controller_config=dataclasses.asdict(controller_cfg),
        )
        if meta:
            with torch.device("meta"):
                return cls(**kwargs)
        return cls(**kwargs)

    def assign_state_dict(self, state: dict[str, Tensor], what: str) -> None:
        """Strict load that adopts the given tensors as parameters (no copy); names every
        missing and unexpected key, and refuses to leave a parameter on the meta device."""
        own = set(self.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            raise KeyError(
                f"{what}: {len(missing)} missing keys {missing[:20]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:20]}"
            )
        self.load_state_dict(state, strict=True, assign=True)
        still_meta = [n for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if still_meta:
            raise RuntimeError(f"{what}: tensors left uninitialised: {still_meta[:20]}")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        **_: Any,  # the pipeline loader's hub options do not apply to a local folder
    ) -> MultiViewUNet:
        """Load a saved folder, streaming (see the module docstring). Local paths only."""
        folder = Path(pretrained_model_name_or_path) / (subfolder or "")
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} does not exist (expected a MultiViewUNet folder)")
        config: dict[str, Any] = cls.load_config(str(folder))  # type: ignore[assignment]
        with torch.device("meta"):
            model = cls(
                model_config=config["model_config"], controller_config=config["controller_config"]
            )
        model.assign_state_dict(load_file(str(weights)), str(weights))
        # a bf16-trained export loads as float32 (like the other components) unless asked
        dtype = torch_dtype or torch.float32
        if any(p.dtype != dtype for p in model.parameters()):
            model.to(dtype)
        return model.eval()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("MultiViewUNet holds the denoiser's modules; call ImageDream instead")
