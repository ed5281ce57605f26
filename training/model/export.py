"""Export a trained model to a self-contained, diffusers-style folder and load it back.

    <folder>/config.json             {"format", "model": ModelConfig, "controller": ControllerConfig}
    <folder>/denoiser.safetensors    multi-view UNet + controller (our key names)
    <folder>/vae/ text_encoder/ tokenizer/ [image_encoder/]   frozen encoders (save_pretrained)

The encoder folders use the SD 2.1 layout, so the folder doubles as `weights.sd21_path` for
them. With include_encoders=False the config keeps the original weight paths instead.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from training.model.build import build_denoiser, build_encoders
from training.model.config import WeightsConfig, to_controller_config, to_model_config
from training.model.encoders import HFImageEncoder
from training.model.imagedream import ImageDream

EXPORT_FORMAT = "imagedream-model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "denoiser.safetensors"


def save_pretrained(model: ImageDream, folder: str | Path, include_encoders: bool = True) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(model.cfg)
    if include_encoders:
        model.vae.save_pretrained(folder / "vae", safe_serialization=True)
        model.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
        model.tokenizer.save_pretrained(folder / "tokenizer")
        if model.image_encoder is not None:
            if not isinstance(model.image_encoder, HFImageEncoder):
                raise NotImplementedError(
                    "export of an open_clip image encoder: use include_encoders=False"
                )
            model.image_encoder.model.save_pretrained(
                folder / "image_encoder", safe_serialization=True
            )
        cfg.weights = WeightsConfig()  # everything is in this folder now
    cfg.weights.original_checkpoint = None  # the denoiser weights are in this folder
    meta = {
        "format": EXPORT_FORMAT,
        "model": dataclasses.asdict(cfg),
        "controller": dataclasses.asdict(model.controller.cfg),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in model.denoiser_state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": EXPORT_FORMAT})
    return folder


def load_pretrained(folder: str | Path) -> ImageDream:
    folder = Path(folder)
    meta = json.loads((folder / CONFIG_NAME).read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{folder}: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    cfg = to_model_config(meta["model"])
    ctrl_cfg = to_controller_config(meta["controller"])
    unet, controller = build_denoiser(cfg, ctrl_cfg)
    w = cfg.weights
    packed = (folder / "vae").is_dir()
    image_dir = folder / "image_encoder"
    encoders = build_encoders(
        cfg,
        controller.needs.image_encoder,
        sd21_path=str(folder) if packed else w.sd21_path,
        image_encoder_path=str(image_dir) if image_dir.is_dir() else w.image_encoder_path,
        open_clip_checkpoint=None if image_dir.is_dir() else w.open_clip_checkpoint,
    )
    model = ImageDream(cfg, unet=unet, controller=controller, **encoders)
    model.load_denoiser_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    return model
