"""Evaluation benchmark (`python -m bench.eval`): bench/results/eval.{json,md}.

Measures on this machine:
- seconds per prompt of 50-step DDIM sampling (CFG, both branches batched) with the tiny model,
  measured directly, and with the full-size local+pixel model (SD 2.1-base UNet, ViT-H image
  encoder, random weights: speed does not depend on them), measured at a few steps and
  extrapolated to 50 (fixed cost + 50 x per-step cost); the full-size run is a child process under
  `flock /tmp/bigmem.lock`, one big model at a time on a shared machine;
- images/s of every metric with the real architectures (random weights) and the tiny stand-ins.

    python -m bench.eval [--skip-full] [--full-steps 1 3] [--threads N] [--full-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results"
PROMPT_TEXT = "a red ceramic mug"


def _compose_model(model: str, controller: str) -> Any:
    from training.model import build_imagedream, compose_model_configs

    configs = compose_model_configs(model, controller)
    torch.manual_seed(0)
    return build_imagedream(*configs)


def _time_sampling(model: Any, steps: int, prompts: int, batch: int) -> float:
    """Wall seconds of sampling `prompts` prompts at `steps` DDIM steps."""
    from evaluation.sampler import MultiViewSampler, SamplerConfig
    from training.pipeline import ImageDreamPipeline

    sampler = MultiViewSampler(
        ImageDreamPipeline.from_model(model),
        SamplerConfig(num_inference_steps=steps, batch_size=batch),
    )
    images = np.random.default_rng(0).integers(0, 256, (prompts, 256, 256, 3), dtype=np.uint8)
    start = time.perf_counter()
    sampler.sample(list(images), [PROMPT_TEXT] * prompts)
    return time.perf_counter() - start


def bench_tiny(prompts: int = 4) -> dict[str, Any]:
    model = _compose_model("tiny", "local_pixel")
    _time_sampling(model, 2, prompts, prompts)  # warm-up: first calls of every kernel are slow
    seconds = _time_sampling(model, 50, prompts, prompts)
    return {
        "model": "tiny local_pixel (conf/model/tiny.yaml)",
        "resolution": int(model.cfg.vae.sample_size),
        "steps": 50,
        "prompts": prompts,
        "batch_size": prompts,
        "seconds_per_prompt": seconds / prompts,
        "measured": "directly, 50 steps",
    }


def bench_full(steps: tuple[int, int]) -> dict[str, Any]:
    """One prompt with the full-size model at two step counts; 50 steps extrapolated."""
    start = time.perf_counter()
    model = _compose_model("sd21_mv", "local_pixel")
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    low, high = steps
    t_low = _time_sampling(model, low, 1, 1)
    t_high = _time_sampling(model, high, 1, 1)
    per_step = (t_high - t_low) / (high - low)
    fixed = t_low - low * per_step
    return {
        "model": "sd21_mv local_pixel (SD 2.1-base UNet + ViT-H-14 + VAE + text encoder), random weights",
        "parameters": params,
        "resolution": int(model.cfg.vae.sample_size),
        "build_seconds": build_s,
        "measured_steps": [low, high],
        "measured_seconds": [t_low, t_high],
        "seconds_per_step": per_step,
        "fixed_seconds": fixed,
        "steps": 50,
        "seconds_per_prompt": fixed + 50 * per_step,
        "measured": f"extrapolated from {low} and {high} steps (fixed + 50 x per-step)",
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _run_full_child(steps: tuple[int, int], threads: int | None, timeout: float) -> dict[str, Any]:
    cmd = ["flock", "/tmp/bigmem.lock", sys.executable, "-m", "bench.eval", "--full-child"]
    cmd += ["--full-steps", *map(str, steps)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ metrics


def _throughput(fn: Callable[[np.ndarray], Any], images: np.ndarray, repeats: int = 2) -> float:
    fn(images[:4])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(images)
    return repeats * len(images) / (time.perf_counter() - start)


def _random_inception() -> Any:
    """torch-fidelity's Inception-v3 with random weights (no download: load is patched out)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda s, d: None):
            net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["logits_unbiased"], str(empty)
            )
    return lambda x: net(x)[0]


def _random_clip_vit_l14() -> tuple[Any, Any]:
    """CLIP ViT-L/14 (openai/clip-vit-large-patch14's shapes) with random weights, 224 px."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from evaluation.metrics.models import write_tiny_clip

    with tempfile.TemporaryDirectory(prefix="bench_clip_") as tmp:
        folder = write_tiny_clip(tmp, image_size=224)
        processor = CLIPProcessor.from_pretrained(
            str(folder), local_files_only=True, use_fast=False
        )
    tok = cast(Any, processor).tokenizer
    config = CLIPConfig(
        text_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
        ),
        projection_dim=768,
    )
    return CLIPModel(config).eval(), processor


def bench_metrics(n: int = 16, size: int = 256) -> dict[str, dict[str, Any]]:
    from evaluation.metrics import LPIPS, QIS, ClipScorer, load_clip, load_inception, load_lpips
    from evaluation.metrics.groundtruth import psnr, ssim

    rng = np.random.default_rng(0)
    views = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    gt = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    results: dict[str, dict[str, Any]] = {}

    def record(name: str, network: str, fn: Callable[[np.ndarray], Any]) -> None:
        results[name] = {
            "network": network,
            "images_per_s": _throughput(fn, views),
            "image_px": size,
        }

    tiny_classifier, _ = load_inception(None)
    record("QIS (tiny stand-in)", "TinyClassifier", QIS(tiny_classifier))
    record("QIS", "Inception-v3 (torch-fidelity), random weights", QIS(_random_inception()))

    # as evaluate.py calls them: 4 views per prompt, the prompt (or text) encoded once per prompt
    def per_prompt(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x) // 4, 4, *x.shape[1:])  # (P, 4, H, W, 3)

    clip_l = ClipScorer(*_random_clip_vit_l14())
    record(
        "CLIP(IM)",
        "CLIP ViT-L/14 shapes, random weights",
        lambda x: clip_l.image_scores(per_prompt(x), x[::4]),
    )
    record(
        "CLIP(TX)",
        "CLIP ViT-L/14 shapes, random weights",
        lambda x: clip_l.text_scores(per_prompt(x), [PROMPT_TEXT] * (len(x) // 4)),
    )
    tiny_model, tiny_proc, _ = load_clip(None)
    tiny_clip = ClipScorer(tiny_model, tiny_proc)
    record(
        "CLIP(IM) (tiny stand-in)",
        "tiny random CLIP",
        lambda x: tiny_clip.image_scores(per_prompt(x), x[::4]),
    )
    record("PSNR", "torchmetrics", lambda x: psnr(x, gt[: len(x)]))
    record("SSIM", "torchmetrics (11 px Gaussian)", lambda x: ssim(x, gt[: len(x)]))
    lpips_net, _ = load_lpips(None, "alex")
    record(
        "LPIPS", "lpips v0.1 alex (random backbone)", lambda x: LPIPS(lpips_net)(x, gt[: len(x)])
    )
    return results


# ------------------------------------------------------------------ report


def write_results(results: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "eval.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Evaluation benchmark",
        "",
        f"`python -m bench.eval` on {results['machine']['cpus']} CPU cores "
        f"({results['machine']['platform']}), torch {results['machine']['torch']}, "
        f"{results['machine']['threads']} torch threads, load average at start "
        f"{results['machine']['loadavg_start']}. The machine is shared: numbers are noisy.",
        "",
        "## Sampling (DDIM 50 steps, CFG 5 with both branches in one batch, 4 views)",
        "",
        "| model | px | s / prompt | how |",
        "|---|---|---|---|",
    ]
    for key in ("tiny", "full"):
        r = results["sampling"].get(key, {})
        if "error" in r or not r:
            lines.append(f"| {key} | - | - | {r.get('error', 'skipped')[:200]!r} |")
            continue
        how = r["measured"]
        if key == "full":
            how += (
                f"; {r['seconds_per_step']:.1f} s/step + {r['fixed_seconds']:.1f} s fixed; "
                f"build {r['build_seconds']:.0f} s; peak RSS {r['peak_rss_gib']:.1f} GiB; "
                f"{r.get('threads', '?')} threads"
            )
        lines.append(
            f"| {r['model']} | {r['resolution']} | {r['seconds_per_prompt']:.2f} | {how} |"
        )
    lines += [
        "",
        "## Metrics (256 px images)",
        "",
        "| metric | network | images / s |",
        "|---|---|---|",
    ]
    for name, r in results["metrics"].items():
        lines.append(f"| {name} | {r['network']} | {r['images_per_s']:.1f} |")
    (OUT / "eval.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="evaluation benchmark")
    parser.add_argument("--skip-full", action="store_true", help="no full-size sampling")
    parser.add_argument("--full-steps", type=int, nargs=2, default=[1, 3])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (tiny, metrics)")
    parser.add_argument("--full-threads", type=int, default=None, help="torch threads (full size)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--full-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    steps = (args.full_steps[0], args.full_steps[1])
    if args.full_child:
        result = bench_full(steps)
        result["threads"] = torch.get_num_threads()
        print(json.dumps(result))
        return
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "sampling": {"tiny": bench_tiny()},
        "metrics": bench_metrics(),
    }
    if not args.skip_full:
        results["sampling"]["full"] = _run_full_child(steps, args.full_threads, args.timeout)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(results)
    print((OUT / "eval.md").read_text())


if __name__ == "__main__":
    main()
