"""The engine (training.engine, everything DeepSpeed): the DeepSpeed config generated from the
typed config, and (slow) the loss of a DeepSpeed-wrapped tiny model falling on a fixed batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract.synthetic_shards import write_synthetic_shards
from tests.training.helpers import REPO, compose_train, env
from training.engine import deepspeed_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(folder, num_shards=2, rings_per_shard=6, num_views=8, resolution=16)
    return folder


def test_global_batch_mismatch_is_a_clear_error():
    cfg = compose_train(["experiment=imagedream_pixel"])
    with pytest.raises(ValueError, match="global_batch_size=256"):
        deepspeed_config(cfg, world_size=2)


def test_deepspeed_config_only_from_typed_config():
    cfg = compose_train(["debug=tiny", "engine.grad_accum=3", "engine.grad_clip=0.5"])
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == cfg.data.batch_size * 3 * 2
    assert ds["gradient_clipping"] == 0.5
    assert ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["zero_allow_untested_optimizer"] is True


@pytest.mark.slow
def test_loss_falls_on_a_fixed_batch(tmp_path, shards):
    script = f"""
import json
from contract.hydra_compose import compose
from training.config import load_config, register_configs
from training.data import build_loader
from training.diffusion import Diffusion, TrainingObjective
from training.engine import build_engine, init_distributed
from training.model import build_imagedream

register_configs()
cfg = load_config(compose("train", [
    "debug=tiny", "controller=pixel", "data.shards={shards}", "data.num_workers=0",
    "engine.lr=2e-3", "trainer.max_steps=40"]))
dist = init_distributed("gloo")
model = build_imagedream(cfg.model, cfg.controller)
engine = build_engine(TrainingObjective(model, Diffusion(objective=cfg.objective)), cfg, dist)
batch = next(build_loader(cfg.data, seed=0))
losses = []
for _ in range(40):
    engine.seed(0)  # the same noise and timesteps every step: a fixed regression target
    losses.append(engine.train_step([batch]).loss)
print("LOSSES", json.dumps(losses))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("LOSSES"))
    losses = json.loads(line.split(" ", 1)[1])
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
