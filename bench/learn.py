"""Learning benchmark across the controller variants (`make bench-learn`):
bench/results/learn.{md,json} and bench/results/learn_curves.png, learn_samples.png.

1. Renders the procedural family (data_pipeline.sources.object_family) with the demo render settings: the
   train split into training shards, the held-out split apart (never trained on).
2. Trains every variant (none, global, local, pixel, local_pixel) of the demo model
   (conf/experiment/demo.yaml settings) for the same number of optimiser steps from the same
   seed, with captions on (so `none` is the text-only MVDream baseline) and the whole UNet
   training in every variant (from scratch there is no pretrained UNet to keep frozen).
3. Measures per variant: the held-out denoising loss at fixed noise and timesteps (the same
   tensors for every variant), novel-view PSNR / SSIM / LPIPS (azimuth 90/180/270, one ring per
   object, its front view as the prompt) on training and held-out objects, next to the two
   baselines (the prompt copied, the mean training view); the learning curves of all variants
   in one plot; a grid of samples.

    python -m bench.learn [--steps 1200] [--count 60] [--variants none pixel ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.run_layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results"
VARIANTS = ["none", "global", "local", "pixel", "local_pixel"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "DS_BUILD_OPS": "0"}


def render(work: Path, count: int) -> dict[str, Path]:
    """The family's train and held-out splits rendered into their own shard folders."""
    out = {}
    for split in ("train", "heldout"):
        folder = work / f"render_{split}"
        if not (folder / "shards" / "index.json").is_file():  # the job resumes what it has
            cmd = [sys.executable, "-m", "data_pipeline.job", "source=builtin", "render=demo",
                   f"source.count={count}", f"source.split={split}", f"output_dir={folder}"]  # fmt: skip
            subprocess.run(cmd, cwd=REPO, env=_env(), check=True, capture_output=True)
        out[split] = folder / "shards"
    return out


TRAIN_SECONDS = "bench_train_seconds.txt"  # a reused run keeps the training time it took
REUSED: list[str] = []  # variants whose finished run this invocation scored without training


def train(work: Path, variant: str, shards: Path, steps: int) -> tuple[Path, float]:
    """Train one variant, or reuse its run folder when it holds a finished export (so scoring
    can be rerun without training again)."""
    run_dir = work / f"run_{variant}"
    timing = run_dir / TRAIN_SECONDS
    finished = (RunLayout(run_dir).export / "model_index.json").is_file()
    if finished and timing.is_file():
        REUSED.append(variant)
        return run_dir, float(timing.read_text())
    start = time.perf_counter()
    if not finished:
        cmd = [sys.executable, "-m", "training.train", "experiment=demo",
               f"controller={variant}", "controller.train_unet=true", "data.use_captions=true",
               f"data.shards={shards}", f"run_dir={run_dir}", f"trainer.max_steps={steps}",
               "trainer.ckpt_every=0", "trainer.sample_every=0", "trainer.progress=false",
               "trainer.log_every=25", "wandb.mode=disabled"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"training {variant} failed:\n{proc.stderr[-4000:]}")
    seconds = time.perf_counter() - start
    timing.write_text(f"{seconds:.1f}\n")
    return run_dir, seconds


def fixed_noise_loss(model: Any, cfg: Any, shards: Path, seeds: int = 8) -> float:
    """Denoising loss on `shards` at fixed examples, noise and timesteps (plain epsilon MSE, so
    it compares across variants whatever the training weighting)."""
    from training.data import build_loader
    from training.diffusion import Diffusion, ObjectiveConfig

    data = dataclasses.replace(
        cfg.data, shards=str(shards), batch_size=8, num_workers=0, prompt_dropout=0.0,
        text_dropout=0.0, sampling="resampled",
    )  # fmt: skip
    loader = build_loader(data, seed=4242)
    batches = [next(loader) for _ in range(2)]
    losses = []
    with torch.no_grad():
        for batch in batches:
            for seed in range(seeds):
                g = torch.Generator().manual_seed(1000 + seed)
                loss = Diffusion(objective=ObjectiveConfig()).loss(model, batch, g)
                losses.append(float(loss))
    return float(np.mean(losses))


def novel_view_scores(pipe: Any, shards: Path, mean_view: Any) -> dict[str, Any]:
    """PSNR / SSIM / LPIPS of the novel views, and the baselines', one ring per object."""
    from evaluation.baselines import baseline_scores
    from evaluation.metrics import LPIPS, load_lpips, psnr, ssim
    from evaluation.prompts import PromptConfig, as_sampled, load_heldout_rings
    from evaluation.sampler import MultiViewSampler, SamplerConfig

    found = load_heldout_rings(shards, PromptConfig(), [0.0, 90.0, 180.0, 270.0])
    found = sorted((r for r in found if r.name.endswith("_r0")), key=lambda r: r.name)
    sampler = MultiViewSampler(
        pipe, SamplerConfig(num_inference_steps=25, guidance_scale=3.0, eta=1.0, batch_size=8)
    )
    out = sampler.sample(
        [r.image for r in found],
        [r.text for r in found],
        elevations_deg=[float(r.elevation_deg or 0.0) for r in found],
        background=0.5,
    )
    rings = [
        as_sampled(r, shown, level)
        for r, shown, level in zip(found, out.prompt_images, out.background, strict=True)
    ]
    net, _ = load_lpips(None)
    lp = LPIPS(net)
    size = out.views.shape[2]
    from evaluation.evaluate import resize_views

    truths = [resize_views(r.gt_views, size) for r in rings if r.gt_views is not None]
    rows = []
    for r, views, gt in zip(rings, out.views, truths, strict=True):
        rows.append({
            "psnr": psnr(views[1:], gt[1:]).tolist(),
            "ssim": ssim(views[1:], gt[1:]).tolist(),
            "lpips": lp(views[1:], gt[1:]).tolist(),
            **baseline_scores(r.image, gt[1:], mean_view.on(0.5)),
        })  # fmt: skip
    summary = {k: float(np.mean([v for row in rows for v in row[k]])) for k in rows[0]}
    return {
        "objects": len(rings),
        **summary,
        "views": out.views[:4],
        "truth": truths[:4],
        "prompts": [r.image for r in rings[:4]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--count", type=int, default=60, help="family members (train + held-out)")
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench_learn")
    parser.add_argument("--out", type=Path, default=OUT, help="where learn.md / learn.json go")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    args.work.mkdir(parents=True, exist_ok=True)
    shards = render(args.work, args.count)

    from evaluation.baselines import mean_training_view
    from training.config import from_yaml
    from training.pipeline import ImageDreamPipeline

    results: dict[str, Any] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    samples: dict[str, Any] = {}
    mean_view = None
    for variant in args.variants:
        run_dir, seconds = train(args.work, variant, shards["train"], args.steps)
        layout = RunLayout(run_dir)
        cfg = from_yaml(layout.config.read_text())
        pipe = ImageDreamPipeline.from_pretrained(layout.export)
        pipe.set_progress_bar_config(disable=True)
        model = pipe.model.eval()
        if mean_view is None:
            mean_view = mean_training_view([str(shards["train"])], pipe.resolution)
        train_scores = novel_view_scores(pipe, shards["train"], mean_view)
        held_scores = novel_view_scores(pipe, shards["heldout"], mean_view)
        samples[variant] = (
            held_scores.pop("views"),
            held_scores.pop("truth"),
            held_scores.pop("prompts"),
        )
        for k in ("views", "truth", "prompts"):
            train_scores.pop(k)
        rows = [json.loads(x) for x in layout.metrics.read_text().splitlines() if x]
        curves[variant] = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
        results[variant] = {
            "train_seconds": seconds,
            "heldout_loss": fixed_noise_loss(model, cfg, shards["heldout"]),
            "train_loss_fixed": fixed_noise_loss(model, cfg, shards["train"]),
            "train_objects": train_scores,
            "heldout_objects": held_scores,
        }
        print(variant, json.dumps(results[variant]), flush=True)
    write(results, curves, samples, args, time.perf_counter() - started, load_at_start)


def write(results, curves, samples, args, seconds, load_at_start) -> None:
    out = args.out
    from PIL import Image

    from evaluation.report import plot_loss_curves

    out.mkdir(parents=True, exist_ok=True)
    plot_loss_curves(curves, out / "learn_curves.png", "train/loss (weighted)")
    rows = []
    for views, truth, prompts in samples.values():
        for v, t, p in zip(views, truth, prompts, strict=True):
            small = np.asarray(Image.fromarray(p).resize(v.shape[1:3][::-1], Image.Resampling.BOX))
            rows.append(np.concatenate([small, *v, np.full_like(small, 255), *t], axis=1))
    if rows:
        grid = np.concatenate(rows, axis=0)
        Image.fromarray(grid).resize(
            (grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST
        ).save(out / "learn_samples.png")
    payload = {"steps": args.steps, "count": args.count, "seconds": seconds,
               "load_average_at_start": load_at_start, "variants": results}  # fmt: skip
    (out / "learn.json").write_text(json.dumps(payload, indent=1))
    any_run = next(iter(results.values()))
    lines = [
        "# Learning benchmark across the controller variants",
        "",
        f"`python -m bench.learn --steps {args.steps} --count {args.count}` on "
        f"{os.cpu_count()} CPU cores ({platform.platform()}), torch {torch.__version__}; "
        f"{seconds / 60:.0f} min in all, load average at start {load_at_start}"
        + (
            f"; re-scored the finished runs of {', '.join(REUSED)} found in {args.work} (their "
            "training minutes below are from the run that trained them)."
            if REUSED
            else "."
        ),
        "",
        f"Data: the procedural family's first {args.count} members, rendered with the demo "
        f"settings (8 views x 2 rings, 64 px): {any_run['train_objects']['objects']} training "
        f"objects, {any_run['heldout_objects']['objects']} held out (split by name, never "
        "trained on). Model: conf/model/demo.yaml (6.6 M-parameter UNet, 32 px, pixel-unshuffle "
        "first stage), the settings of conf/experiment/demo.yaml, captions on, the whole UNet "
        f"trained in every variant, {args.steps} optimiser steps of batch 3 from seed 0 each. "
        "Sampling: 25 DDIM steps, CFG 3, eta 1 (as the demo samples), one ring per object with its front view as the prompt. "
        "Losses: plain epsilon MSE at the same fixed examples, noise and timesteps for every "
        "variant. Metrics: novel views (azimuth 90/180/270) against the true renders on the "
        "grey-0.5 background; LPIPS with a random AlexNet backbone (no weights here): compare it "
        "across variants only.",
        "",
        "| variant | held-out loss | train loss | PSNR train | PSNR held-out | SSIM held-out | LPIPS held-out | train min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, r in results.items():
        tr, ho = r["train_objects"], r["heldout_objects"]
        lines.append(
            f"| {variant} | {r['heldout_loss']:.4f} | {r['train_loss_fixed']:.4f} | "
            f"{tr['psnr']:.2f} | {ho['psnr']:.2f} | {ho['ssim']:.3f} | {ho['lpips']:.3f} | "
            f"{r['train_seconds'] / 60:.1f} |"
        )
    tr, ho = any_run["train_objects"], any_run["heldout_objects"]
    lines += [
        "",
        f"Baselines (no network), PSNR on the same views: prompt copied {tr['psnr_copy']:.2f} "
        f"(train) / {ho['psnr_copy']:.2f} (held-out); mean training view "
        f"{tr.get('psnr_mean_view', float('nan')):.2f} / {ho.get('psnr_mean_view', float('nan')):.2f}.",
        "",
        "Ordering by held-out loss (lower is better): "
        + " < ".join(sorted(results, key=lambda v: results[v]["heldout_loss"])),
        "",
        "Ordering by held-out novel-view PSNR (higher is better): "
        + " > ".join(sorted(results, key=lambda v: -results[v]["heldout_objects"]["psnr"])),
        "",
        "![learning curves](learn_curves.png)",
        "",
        "Samples on held-out objects (per variant, 4 objects: prompt, the 4 generated views, "
        "a gap, the 4 true views):",
        "",
        "![samples](learn_samples.png)",
        "",
    ]
    (out / "learn.md").write_text("\n".join(lines))
    print((out / "learn.md").read_text())


if __name__ == "__main__":
    main()
