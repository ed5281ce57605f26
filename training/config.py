"""Typed configuration of a training run (SPEC 5).

One dataclass per Hydra group: `data/`, `engine/`, `trainer/`, `wandb` here, `model/` and
`controller/` from `training.model.config`. The dataclasses own every default (what a Hydra run of
the default groups gets); YAML in conf/ only sets what differs (a variant, a preset) or what Hydra
needs (defaults lists, interpolations, `???`), checked by tests/test_conf_defaults.py. Every
cross-field rule lives in a `__post_init__` and raises a clear error. `TrainConfig` is the primary
schema (`conf/train.yaml` names it `train_schema` in its defaults list).

`load_config(dictconfig)` turns Hydra's composed DictConfig into these typed objects; the
DeepSpeed config is generated from them by `training.engine.deepspeed_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from contract.cameras import has_target_views
from contract.hydra_compose import to_dataclass
from contract.wandb_config import TRAIN_WANDB_MODES, WandbBase
from training.diffusion import ObjectiveConfig
from training.model.config import (
    ControllerConfig,
    ModelConfig,
    to_controller_config,
)
from training.model.config import (
    register_configs as register_model_configs,
)
from training.prompt_image import PromptImageConfig
from training.sampling_settings import (
    CAPTION_SUFFIX,
    MODEL_FAMILIES,
    SamplingConfig,
    SamplingSettings,
    model_family,
)

PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")
SAMPLINGS = ("resampled", "epoch")
RESUME_MODES = ("auto", "never")  # or a path to a checkpoint folder


@dataclass
class DataConfig:
    """The ring stream (training.data). Paper settings: SPEC 3 and 5."""

    # Shards: local files, folders (their shard-*.tar), globs, brace patterns
    # ("out/shards/shard-{00000..00009}.tar") or URLs (http(s)://, pipe:); several joined by "::".
    shards: str = MISSING
    batch_size: int = 4  # per process and micro-batch
    num_workers: int = 2  # DataLoader processes per training process (0 = in the main process)
    image_size: int = 256  # targets and prompt are resized to this (shards are 256 px)
    # None accepts any ring whose view count is a multiple of 4; a number also requires it
    views_per_ring: int | None = None
    # "resampled": every (rank, worker) draws shards with replacement from its own seeded RNG, so
    # no rank starves; "epoch": a seeded permutation per epoch, split across ranks and workers
    sampling: str = "resampled"
    shuffle_buffer: int = 256  # samples
    shuffle_initial: int = 64
    # SPEC 5: probability that an example's image prompt (and its text) is dropped: the model
    # then gets training.diffusion.unconditional_features, the input of the sampler's CFG branch
    prompt_dropout: float = 0.1
    text_dropout: float = 0.0  # not stated by the paper: caption replaced by "" on its own
    caption_suffix: str = CAPTION_SUFFIX
    # False: every example gets the empty text, so the image prompt alone drives the model (a
    # small model trained on a few captioned objects otherwise learns to draw the object its
    # caption names and ignores the image)
    use_captions: bool = True
    # background grey level (0 black, 1 white), one uniform draw per sample (SPEC 5)
    grey_min: float = 0.0
    grey_max: float = 1.0
    # A shard folder is read through its dataset index (written last by the render job); true
    # reads a folder without a complete one (e.g. one a killed job was rewriting) as it is
    allow_incomplete: bool = False
    verify_sha256: bool = False  # check each shard's sha256 against the index (size: always)
    # Bad records (undecodable samples, unreadable shards): the run stops when more than this
    # share of the records a stream has read are bad, checked once it has read
    # bad_data_min_records (so a stream where nothing decodes stops within that many)
    max_bad_fraction: float = 0.05
    bad_data_min_records: int = 1000
    # Leave out rings whose object covers more than this fraction of some view's image border
    # (frame-filling renders; the ring metadata records it per view); None keeps every ring.
    # Each ring left out is logged once and counted (data/dropped_rings)
    max_border_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.views_per_ring is not None and not has_target_views(self.views_per_ring):
            raise ValueError(
                f"data.views_per_ring={self.views_per_ring}: the targets are the views at azimuth "
                "0/90/180/270, so a ring's view count must be a positive multiple of 4"
            )
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"data.sampling={self.sampling!r}; expected one of {SAMPLINGS}")
        for name in ("prompt_dropout", "text_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name}={getattr(self, name)} must lie in [0, 1]")
        if not 0.0 <= self.grey_min <= self.grey_max <= 1.0:
            raise ValueError(
                f"data.grey_min={self.grey_min}, grey_max={self.grey_max}: need 0 <= min <= max <= 1"
            )
        if self.batch_size < 1 or self.num_workers < 0 or self.image_size < 8:
            raise ValueError("data.batch_size >= 1, data.num_workers >= 0, data.image_size >= 8")
        if not 0.0 <= self.max_bad_fraction <= 1.0 or self.bad_data_min_records < 1:
            raise ValueError(
                f"data.max_bad_fraction={self.max_bad_fraction} must lie in [0, 1] and "
                f"data.bad_data_min_records={self.bad_data_min_records} be >= 1"
            )
        if self.shuffle_initial > self.shuffle_buffer:
            raise ValueError("data.shuffle_initial must not exceed data.shuffle_buffer")

    def prompt_image(self) -> PromptImageConfig:
        """The grey range prompts were composited on: what an export records, so that sampling
        composites an RGBA prompt as the model saw its prompts in training."""
        return PromptImageConfig(background_min=self.grey_min, background_max=self.grey_max)


@dataclass
class EngineConfig:
    """Optimisation and distribution; turned into a DeepSpeed config by training.engine."""

    zero_stage: int = 2
    precision: str = "bf16"
    offload_optimizer: bool = False  # ZeRO-Offload of optimiser states to CPU memory (stage >= 1)
    grad_accum: int = 1
    # If set, must equal data.batch_size x grad_accum x world size (checked at start-up)
    global_batch_size: int | None = None
    grad_clip: float = 1.0  # 0 disables
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 1000  # optimiser steps of linear warm-up from 0
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine" (to 0 at max_steps)
    # bf16 master weights, gradients and AdamW states (DeepSpeed ZeRO >= 1): about half the
    # optimiser memory of mixed precision, at the cost of less exact small updates
    bf16_master_weights: bool = False
    gradient_checkpointing: bool = False  # recompute UNet activations in the backward pass
    ema_decay: float = 0.0  # 0 disables the EMA of the trainable weights
    backend: str | None = None  # torch.distributed backend; None = nccl on GPU, gloo on CPU

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"engine.zero_stage={self.zero_stage}; DeepSpeed has stages 0-3")
        if self.precision not in PRECISIONS:
            raise ValueError(f"engine.precision={self.precision!r}; expected one of {PRECISIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"engine.lr_schedule={self.lr_schedule!r}; expected {LR_SCHEDULES}")
        if self.grad_accum < 1 or self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("engine.grad_accum >= 1, engine.warmup_steps >= 0, engine.lr > 0")
        if len(self.betas) != 2:
            raise ValueError(f"engine.betas={self.betas} needs two values")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"engine.ema_decay={self.ema_decay} must lie in [0, 1)")
        if self.ema_decay > 0 and self.zero_stage == 3:
            raise ValueError(
                "engine.ema_decay > 0 needs whole parameters on every rank; ZeRO-3 partitions "
                "them: use zero_stage <= 2 with EMA"
            )
        if self.bf16_master_weights and (self.precision != "bf16" or self.zero_stage == 0):
            raise ValueError("engine.bf16_master_weights needs precision=bf16 and zero_stage >= 1")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("engine.offload_optimizer needs zero_stage >= 1")


@dataclass
class TrainerConfig:
    """The loop: length, cadence of logs, checkpoints and samples, resume."""

    max_steps: int = 60_000  # optimiser steps (SPEC 5)
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000  # 0 = only at the end
    keep_checkpoints: int = 3
    sample_every: int = 2000  # 0 = no sample grids
    # how the logged sample grids are sampled (training.pipeline.sample_views, as make eval
    # samples): None = the model family's (training.sampling_settings.MODEL_FAMILIES, SPEC 6);
    # each grid row uses its ring's own elevation
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    num_sample_prompts: int = 2
    # "auto": continue from the run folder's newest checkpoint if there is one; "never": refuse a
    # run folder that has checkpoints; otherwise a checkpoint folder to start from
    resume: str = "auto"
    export: bool = True  # write the final model (EMA weights if any) to <run_dir>/export
    progress: bool = True  # tqdm bar on rank 0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.log_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("trainer.max_steps, log_every and keep_checkpoints must be >= 1")
        if self.ckpt_every < 0 or self.sample_every < 0:
            raise ValueError("trainer.ckpt_every and sample_every must be >= 0 (0 = off)")


@dataclass
class WandbConfig(WandbBase):
    MODES = TRAIN_WANDB_MODES  # training alone resolves "auto" (training.tracking.wandb_mode)

    # "auto": online when WANDB_API_KEY is set, else offline (sync later with `wandb sync`)
    mode: str = "auto"
    project: str = "imagedream"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    # run name: the run folder and the W&B run name (interpolations resolve in load_config)
    name: str = "imagedream_${controller.name}"
    run_dir: str = "runs/${name}"  # its layout: training.run_layout
    model: ModelConfig = field(default_factory=ModelConfig)
    controller: Any = MISSING  # a training.model.config.ControllerConfig subclass
    data: DataConfig = field(default_factory=DataConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.engine.warmup_steps > self.trainer.max_steps and self.trainer.max_steps > 1:
            raise ValueError(
                f"engine.warmup_steps={self.engine.warmup_steps} exceeds trainer.max_steps="
                f"{self.trainer.max_steps}: the run would never reach its learning rate"
            )
        if self.data.image_size != self.model.vae.sample_size:
            raise ValueError(
                f"data.image_size={self.data.image_size} differs from model.vae.sample_size="
                f"{self.model.vae.sample_size}: the VAE would see another resolution than it was "
                "configured for"
            )

    @property
    def controller_config(self) -> ControllerConfig:
        return to_controller_config(self.controller)

    def sampling_settings(self) -> SamplingSettings:
        """What this run's export records as its sampling defaults: its model family's (SPEC 6)
        with the caption suffix it trained with."""
        import dataclasses

        family = MODEL_FAMILIES[model_family(self.controller_config.name)]
        return dataclasses.replace(family, text_suffix=self.data.caption_suffix)


def register_configs() -> None:
    """Register every schema in Hydra's ConfigStore (call before composing)."""
    from hydra.core.config_store import ConfigStore

    register_model_configs()
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def load_config(cfg: DictConfig | dict[str, Any]) -> TrainConfig:
    """Typed, checked TrainConfig from a composed Hydra config (runs every __post_init__)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    typed = to_dataclass(TrainConfig, cfg, resolve=True)
    typed.controller = to_controller_config(typed.controller)
    return typed


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (saved in the run folder and inside every checkpoint)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)


def from_yaml(text: str) -> TrainConfig:
    cfg = OmegaConf.create(text)
    if not isinstance(cfg, DictConfig):
        raise ValueError("a training config is a mapping, not a list")
    return load_config(cfg)
