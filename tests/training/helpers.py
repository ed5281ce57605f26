"""Helpers of the training tests: the environment of a training subprocess, a TrainConfig
composed from conf/ as `python -m training.train` composes it, and a tiny DataConfig."""

from __future__ import annotations

import os
from pathlib import Path

from contract.hydra_compose import compose
from training.config import DataConfig, TrainConfig, load_config, register_configs

REPO = Path(__file__).resolve().parents[2]
RES = 16  # the image size of data_cfg's stream, and of the synthetic rings the data tests write


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"),
        "OMP_NUM_THREADS": "1",
        "DS_BUILD_OPS": "0",
    }


def compose_train(overrides: list[str]) -> TrainConfig:
    register_configs()
    return load_config(compose("train", ["data.shards=unused", *overrides]))


def data_cfg(shards: str, **overrides) -> DataConfig:
    values = dict(
        shards=shards,
        batch_size=2,
        num_workers=0,
        image_size=RES,
        shuffle_buffer=8,
        shuffle_initial=2,
        prompt_dropout=0.0,
        text_dropout=0.0,
    )
    values.update(overrides)
    return DataConfig(**values)


def sd21_folder(model, folder: Path) -> Path:
    """What an SD 2.1-base diffusers folder holds for the frozen parts (vae, text encoder,
    tokenizer), written from a model's own."""
    model.vae.save_pretrained(folder / "vae")
    model.text_encoder.save_pretrained(folder / "text_encoder")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    return folder
