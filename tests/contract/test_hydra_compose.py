"""`compose`, the one way to compose conf/ outside an entry point, also inside a running Hydra
(evaluation builds a released checkpoint's network while `@hydra.main` runs)."""

from __future__ import annotations

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from contract.hydra_compose import CONF_DIR, compose
from data_pipeline.job.config import register_configs, to_job_config


def test_compose_gives_the_typed_job_config() -> None:
    register_configs()
    cfg = to_job_config(compose("render", ["render=demo", "num_shards=2"]))
    assert (cfg.render.num_views, cfg.num_shards, cfg.source.kind) == (8, 2, "builtin")


def test_compose_inside_a_running_hydra_puts_it_back() -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # as @hydra.main
        running = GlobalHydra.instance().hydra
        cfg = compose(None, ["+render=demo"])
        assert GlobalHydra.instance().hydra is running
    assert cfg.render.num_views == 8
    assert not GlobalHydra.instance().is_initialized()
