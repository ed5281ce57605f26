"""Typed Hydra config of the render job (`python -m data_pipeline.job`, conf/render.yaml).

These dataclasses define the fields and own their defaults; YAML files only set what differs
(tests/test_conf_defaults.py), and `__post_init__` refuses inconsistent combinations with a clear
message. Groups: `source` (builtin | local | objaverse | objaverse_xl, each its own typed config,
see data_pipeline.sources) and `render` (RenderSettings, owned by data_pipeline.render.settings:
`render=default` keeps SPEC 3, `render=demo` is tiny).
`quality` (data_pipeline.job.quality.QualityConfig) sets the report written after every job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from contract.wandb_config import WandbBase
from data_pipeline.job.quality import QualityConfig
from data_pipeline.render.settings import RenderSettings
from data_pipeline.sources import SOURCE_KINDS


@dataclass
class RayConfig:
    address: str | None = None  # null: start a local cluster; "auto": join a running one
    num_cpus: int | None = None  # local cluster only; null = all cores
    workers: int | None = None  # render actors; null = cluster CPUs // cpus_per_worker
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # null: 1 when the cluster has GPUs, else 0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"ray.workers must be >= 1 or null, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"ray.cpus_per_worker must be > 0, got {self.cpus_per_worker}")


@dataclass
class WandbConfig(WandbBase):
    mode: str = "disabled"  # contract.wandb_config.WANDB_MODES (online without a key: offline)
    project: str = "imagedream-render"
    entity: str | None = None
    name: str | None = None


@dataclass
class RenderJobConfig:
    source: Any = MISSING  # one of the source configs, chosen by the `source` group
    render: RenderSettings = field(default_factory=RenderSettings)
    output_dir: str = "outputs/render"  # a local folder, or a URL (s3://bucket/prefix, gs://...)
    # local scratch of the render processes (temporaries, downloads, logs); null: OUT/work when
    # OUT is local, else each node's <TMPDIR>/imagedream-render
    work_dir: str | None = None
    num_shards: int = 4  # fixed per dataset: uid -> shard is sha1(uid) mod num_shards
    # Ray tasks that build shards at once (each reads only its shard's staged objects); None: as
    # many as the cluster has CPUs; 0: in the driver, one shard after another
    shard_workers: int | None = None
    time_limit_s: float = 1800.0  # per object and attempt (SPEC settings on a slow CPU: minutes)
    max_attempts: int = 2  # for transient reasons (timeout, crash, fetch); others are final
    retry_quarantined: bool = False  # on resume, retry objects quarantined for transient reasons
    recycle_after: int = 100  # restart a render process after this many objects (Blender leaks)
    # OUT in object storage: how long the job's lease on it outlives its last renewal (renewed
    # every third of this); a killed job's lease is taken over after it (at once on its own host)
    lease_ttl_s: float = 120.0
    progress: bool = True
    ray: RayConfig = field(default_factory=RayConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)  # OUT/quality.html

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        if self.shard_workers is not None and self.shard_workers < 0:
            raise ValueError(f"shard_workers must be >= 0 or null, got {self.shard_workers}")
        if self.time_limit_s <= 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s must be > 0, got {self.lease_ttl_s}")


def register_configs() -> None:
    """Schemas for conf/: `render_job_schema`, `source/*_schema`, `render/settings_schema`."""
    cs = ConfigStore.instance()
    cs.store(name="render_job_schema", node=RenderJobConfig)
    for kind, entry in SOURCE_KINDS.items():
        cs.store(group="source", name=f"{kind}_schema", node=entry.config)
    cs.store(group="render", name="settings_schema", node=RenderSettings)


def to_job_config(cfg: DictConfig | RenderJobConfig) -> RenderJobConfig:
    """The typed object (dataclasses all the way down, `__post_init__` checks run)."""
    if isinstance(cfg, RenderJobConfig):
        return cfg
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, RenderJobConfig), type(obj)
    return obj
