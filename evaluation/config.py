"""Typed configuration of `python -m evaluation.evaluate`: the dataclasses own every default;
conf/eval.yaml, conf/metrics/ and conf/eval_experiment/ set only what differs or what Hydra needs
(tests/test_conf_defaults.py).

`register_configs()` stores the schemas in Hydra's ConfigStore; conf/eval.yaml names
`eval_schema` in its defaults list and conf/metrics/*.yaml name `metrics_schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contract.wandb_config import WandbBase
from evaluation.leakage import MODES as LEAKAGE_MODES
from evaluation.prompts import PromptConfig
from evaluation.sampler import SamplerConfig


@dataclass
class ClipMetricConfig:
    # HF CLIPModel + CLIPProcessor folder; null -> tiny random CLIP (the report says so)
    path: str | None = None
    name: str | None = None  # shown in the report; default: the folder name


@dataclass
class InceptionMetricConfig:
    # torch-fidelity Inception-v3 weights file; null -> tiny random classifier
    path: str | None = None


@dataclass
class LpipsMetricConfig:
    # torchvision state_dict of the backbone (alexnet/vgg16/squeezenet1_1); null -> random
    backbone_path: str | None = None
    net: str = "alex"

    def __post_init__(self) -> None:
        if self.net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"metrics.lpips.net must be alex, vgg or squeeze, got {self.net!r}")


@dataclass
class MetricsConfig:
    clip: ClipMetricConfig = field(default_factory=ClipMetricConfig)
    inception: InceptionMetricConfig = field(default_factory=InceptionMetricConfig)
    lpips: LpipsMetricConfig = field(default_factory=LpipsMetricConfig)
    # QIS over the 1008 logits of the TF Inception-v3 or its 1000 real ImageNet classes (the
    # paper does not say; the report names the choice)
    qis_classes: int = 1008
    batch_size: int = 16
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        if self.qis_classes not in (1008, 1000):
            raise ValueError(f"metrics.qis_classes must be 1008 or 1000, got {self.qis_classes}")


@dataclass
class LeakageConfig:
    mode: str = "refuse"  # refuse | flag | off
    # training shards (folders, patterns; with manifests), in addition to those read from the
    # evaluated runs' config.yaml (data.shards) when from_run is true; none -> no check
    training_shards: list[str] = field(default_factory=list)
    from_run: bool = True

    def __post_init__(self) -> None:
        if self.mode not in LEAKAGE_MODES:
            raise ValueError(f"leakage.mode must be one of {LEAKAGE_MODES}, got {self.mode!r}")


@dataclass
class OriginalCheckpointConfig:
    """How to build the network around a released .pt/.ckpt/.safetensors checkpoint: conf/model
    and conf/controller names plus the frozen encoders' local folders."""

    model: str = "sd21_mv"
    controller: str = "local_pixel"
    sd21_path: str | None = None  # VAE, text encoder, tokenizer (diffusers SD 2.1-base folder)
    image_encoder_path: str | None = None  # HF CLIP ViT-H-14 folder
    open_clip_checkpoint: str | None = None  # or an open_clip ViT-H-14 file


@dataclass
class WandbConfig(WandbBase):
    mode: str = "offline"  # contract.wandb_config.WANDB_MODES
    project: str = "imagedream-eval"
    dir: str | None = None  # default: the output folder


@dataclass
class EvalConfig:
    # an ImageDreamPipeline folder (what make train exports), a training run folder or checkpoint
    # folder (its newest export is used), or a released checkpoint file (see `original`)
    checkpoint: str | None = None
    compare: list[str] = field(default_factory=list)  # more checkpoints, compared in the plots
    prompts: str | None = None  # folder of prompt images; null -> the shipped default set
    default_prompts: bool = True  # use the shipped set when `prompts` is null
    heldout_shards: str | None = None  # held-out rendered rings (ground truth metrics)
    heldout_limit: int | None = None
    # shard folders (held-out and training) are read through their dataset index; true reads a
    # folder without a complete one (e.g. one a killed render job was rewriting) as it is
    allow_incomplete: bool = False
    # conf/eval.yaml adds a <date>_<time> folder (Hydra's `now` resolver, so it stays in the YAML)
    output_dir: str = "outputs/eval"
    device: str = "cpu"
    # torch CPU threads; null -> torch's default (1 is fastest for the tiny model on a busy machine)
    num_threads: int | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    leakage: LeakageConfig = field(default_factory=LeakageConfig)
    original: OriginalCheckpointConfig = field(default_factory=OriginalCheckpointConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # the learning check passes when the model's novel-view PSNR beats the better baseline
    # (prompt copied, mean training view) by at least this many dB
    learning_bar_db: float = 3.0

    def __post_init__(self) -> None:
        if self.checkpoint is None:
            raise ValueError("checkpoint is required: make eval checkpoint=runs/NAME/export")
        if self.prompts is None and not self.default_prompts and self.heldout_shards is None:
            raise ValueError("nothing to evaluate: give prompts=DIR or heldout_shards=DIR")


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(group="metrics", name="metrics_schema", node=MetricsConfig)


def to_eval_config(cfg: Any) -> EvalConfig:
    """The typed config from a Hydra DictConfig (runs every __post_init__ check)."""
    from contract.hydra_compose import to_dataclass

    return to_dataclass(EvalConfig, cfg)
