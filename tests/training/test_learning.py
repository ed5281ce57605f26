"""The trainer learns (slow, runs in CI): a short seeded run of the demo model on the three
built-in objects lowers a fixed-noise loss by a clear margin, and, given only an object's image
(no caption), it draws that object at the novel views: over three draws, clearly nearer to the
object's own true views than to the other objects' views."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.helpers import REPO, env

pytestmark = pytest.mark.slow
STEPS = 1500
SEEDS = 3  # sampling draws per object

# Measured here (issue 9): 1500 steps on 2 threads, fixed-noise loss 0.845 -> 0.005; squared
# error of each object's sampled novel views to the true views of (house, mug, robot): house
# [2181, 4713, 3177], mug [3057, 836, 1449], robot [2791, 1954, 1194], sampled with eta 1 as the
# demo samples. After 900 steps (with eta 0, and again with eta 1) the mug's views came out nearer
# the robot's. One draw decides too little: a CI model sampled with seeds 0-3 gave the mug
# [2701, 1289, 1244] (nearer the robot), [3418, 948, 1704], [3659, 702, 1851], [4086, 1802, 1978];
# The test therefore averages three draws per object and asks that each object's mean error to
# its own views stay below 0.8 x its mean error to the other objects' views. That CI model gives
# house 1555 / 3114, mug 1545 / 2405, robot 1476 / 2750; "nearest to its own object" would fail
# it, the mug being nearer the robot in 2 of its 3 draws: at 1500 steps the mug is learnt only
# weakly. The renders are not bit-identical run to run (one ring of the robot differed by up to
# 55 levels), so neither is the trained model.


def _env() -> dict[str, str]:
    return {**env(), "OMP_NUM_THREADS": "2"}  # the suite runs one test at a time on 2 cores


def _fixed_noise_loss(model, cfg, shards: Path) -> float:
    from training.data import build_loader
    from training.diffusion import Diffusion

    data = dataclasses.replace(
        cfg.data, shards=str(shards), batch_size=6, num_workers=0, prompt_dropout=0.0
    )
    batch = next(build_loader(data, seed=123))
    losses = []
    with torch.no_grad():
        for seed in range(4):  # the same noise and timesteps for every model
            g = torch.Generator().manual_seed(seed)
            loss = Diffusion(objective=cfg.objective).loss(model, batch, g)
            losses.append(float(loss))
    return float(np.mean(losses))


def test_a_short_run_learns_the_objects_from_their_image(tmp_path) -> None:
    from evaluation.prompts import PromptConfig, as_sampled, load_heldout_rings
    from evaluation.sampler import MultiViewSampler, SamplerConfig
    from training.config import from_yaml
    from training.model import build_imagedream
    from training.pipeline import ImageDreamPipeline

    render = [sys.executable, "-m", "data_pipeline.job", "source=builtin", "render=demo"]
    subprocess.run([*render, f"output_dir={tmp_path / 'render'}"], cwd=REPO, env=_env(),
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    shards = tmp_path / "render" / "shards"
    run_dir = tmp_path / "train"
    start = time.perf_counter()
    train = [sys.executable, "-m", "training.train", "experiment=demo", f"data.shards={shards}",
             f"run_dir={run_dir}", f"trainer.max_steps={STEPS}", "trainer.ckpt_every=0",
             "trainer.sample_every=0", "trainer.progress=false", "wandb.mode=disabled"]  # fmt: skip
    proc = subprocess.run(train, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1200)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-4000:])
    print(f"training {STEPS} steps took {time.perf_counter() - start:.0f} s")

    cfg = from_yaml((run_dir / "config.yaml").read_text())
    torch.manual_seed(cfg.trainer.seed)
    untrained = build_imagedream(cfg.model, cfg.controller).eval()
    pipe = ImageDreamPipeline.from_pretrained(run_dir / "export")
    before = _fixed_noise_loss(untrained, cfg, shards)
    after = _fixed_noise_loss(pipe.model.eval(), cfg, shards)
    print(f"fixed-noise loss {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before

    # one ring per object: its front view is the prompt, its renders are the truth
    rings = load_heldout_rings(shards, PromptConfig(), [0.0, 90.0, 180.0, 270.0])
    rings = sorted((r for r in rings if r.name.endswith("_r0")), key=lambda r: r.name)
    if len(rings) != 3:
        raise RuntimeError(f"expected one ring per built-in object, got {[r.name for r in rings]}")
    # each object sampled with SEEDS different noises (prompt k uses seed k): one draw of eta-1
    # sampling is a noisy estimate of what the model learned
    sampler = MultiViewSampler(
        pipe,
        SamplerConfig(
            num_inference_steps=25, guidance_scale=3.0, eta=1.0, use_captions=False,
            batch_size=len(rings) * SEEDS,
        ),
    )  # fmt: skip
    out = sampler.sample(
        [r.image for r in rings] * SEEDS,  # RGBA: composited on the grey the export records
        [r.text for r in rings] * SEEDS,  # sent as the empty text: the image alone must drive it
        elevations_deg=[float(r.elevation_deg or 0.0) for r in rings] * SEEDS,
    )
    if set(out.texts) != {""}:
        raise RuntimeError(f"the model was sent text: {out.texts}")
    assert set(out.background.tolist()) == {0.5}  # the demo's training grey, from its export
    rings = [
        as_sampled(r, out.prompt_images[i], float(out.background[i])) for i, r in enumerate(rings)
    ]
    size = out.views.shape[2]
    truth = np.stack(
        [np.stack([np.asarray(_resize(v, size)) for v in r.gt_views[1:]]) for r in rings]
    ).astype(np.float64)  # (objects, 3 novel views, H, W, 3)
    views = out.views.reshape(SEEDS, len(rings), *out.views.shape[1:])[:, :, 1:]  # novel views
    for i, ring in enumerate(rings):
        per_seed = [[np.mean((v[i].astype(np.float64) - t) ** 2) for t in truth] for v in views]
        errors = np.mean(per_seed, axis=0)  # mean squared error to each object's true views
        print(ring.name, [round(e, 1) for e in errors], "per seed", np.round(per_seed, 1).tolist())
        others = np.delete(errors, i).mean()
        # its own object's views, not the others': a model that ignores the image draws the same
        # views for every prompt, and then the object they are farthest from fails this
        assert errors[i] < 0.8 * others, (ring.name, errors.tolist(), per_seed)


def _resize(image: np.ndarray, size: int):
    from PIL import Image

    return Image.fromarray(image).resize((size, size), Image.Resampling.BOX)
