"""The one way to compose a config from conf/ outside an entry point: `compose(name, overrides)`.

The three entry points (`data_pipeline.job`, `training.train`, `evaluation.evaluate`) compose
through `@hydra.main`; everything else (benchmarks, tests, evaluation building the network of a
released checkpoint from conf/model + conf/controller) calls `compose`, which reads the same files
the same way. Every group file names its schema or lands on a field of the primary schema, so a
key a YAML file leaves out keeps its dataclass default.

This module lives in `data_pipeline` because that is the package all three may import
(dependencies run data_pipeline <- training <- evaluation). It knows where conf/ is and nothing
about the schemas: register them first (`data_pipeline.job.config.register_configs`,
`training.config.register_configs`, `evaluation.config.register_configs`, or
`training.model.register_configs` for `+model=` / `+controller=` alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
VERSION_BASE = "1.3"  # every @hydra.main and compose() use these two


def compose(
    config_name: str | None, overrides: Sequence[str] = (), config_dir: Path = CONF_DIR
) -> DictConfig:
    """conf/<config_name>.yaml with Hydra overrides, as `@hydra.main` would hand it over (without
    the `hydra` node). `config_name=None` composes only what the overrides add, e.g.
    `compose(None, ["+model=tiny", "+controller=local"])` gives `.model` and `.controller`.

    Safe inside a running `@hydra.main` (Hydra refuses a second initialisation): the running
    Hydra is set aside and put back afterwards."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=VERSION_BASE):
            return hydra_compose(config_name, overrides=list(overrides))
    finally:
        if running is not None:
            # initialize_config_dir restores a copy of the cleared instance on exit
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(running)


def to_dataclass(schema: type[T], cfg: object, resolve: bool = False) -> T:
    """`cfg` (a DictConfig, a dict, or already a `schema`) as the typed dataclass: merged onto
    the schema's structured config, so a key it leaves out keeps the dataclass default, then
    built, so every __post_init__ check runs. `resolve`: interpolations first."""
    if isinstance(cfg, schema):
        return cfg
    merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    if resolve:
        OmegaConf.resolve(merged)
    typed = OmegaConf.to_object(merged)
    if not isinstance(typed, schema):
        raise TypeError(f"expected a {schema.__name__}, the config gave a {type(typed).__name__}")
    return typed
