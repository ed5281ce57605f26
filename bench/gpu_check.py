"""`make gpu-check`: run every GPU path of the project once, measured, in one short script.

    python -m bench.gpu_check [--out bench/results] [--tiny]

On a machine with an NVIDIA GPU (torch sees CUDA) it measures, at full size:
1. Render: the built-in objects through the Ray render job with Cycles on the GPU (BlenderProc
   picks OPTIX, else CUDA) at SPEC 3 settings; then the same smaller job (8 views, 1 ring, SPEC
   resolution and samples) on the GPU and on the CPU: seconds per view on each, and the PSNR
   between the two renders of each ring. Every ring must pass the camera/alpha check
   (data_pipeline.render.camera_agreement: the stored cameras project the mesh onto the alpha mask).
2. Training: the pixel and local_pixel variants, full size, launched by the DeepSpeed launcher
   (`deepspeed --num_gpus 1`; NCCL, bf16, ZeRO-2) into `probe-train` below, which builds the
   network once and, for each case, a fresh DeepSpeed engine over a copy of it, and runs the
   trainer's own `train_step` on the trainer's own data stream: step time, samples/s and peak
   GPU memory at batch 1, 4 and the largest that fits, with and without gradient checkpointing.
   Then the loss of step 1 in fp32 on the GPU and on the CPU (same batch, same noise from a CPU
   generator, TF32 off): they must agree to fp32 tolerance.
3. Sampling: `ImageDreamPipeline` over the full-size local_pixel network in fp16 and bf16:
   seconds per prompt for 50 DDIM steps with CFG and peak memory; and one fp32 step on the GPU
   against the same step on the CPU.
The networks are randomly initialised (no weights are downloaded): speed and memory do not
depend on the values, and the CPU/GPU comparisons need only the same values on both sides.

Without a GPU (or with --tiny) the same code runs at tiny sizes on the CPU (tiny renders, the
tiny network, torchrun instead of the DeepSpeed launcher, gloo) and the report says so in its
first line: those figures show that the paths run, not how fast a GPU is. CI runs it that way.

Writes OUT/gpu.json and OUT/gpu.md (bench.gpu_report); exits 1 when a check fails (a
consistency, PSNR or CPU/GPU agreement threshold of bench.gpu_thresholds missed, or a
measurement that raised). The render PSNR is evaluation.metrics' (`psnr_over_all`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_report import write_report
from bench.gpu_thresholds import MAX_LOSS_REL, MAX_SAMPLE_REL, MIN_IOU, MIN_PSNR_DB, VARIANTS

REPO = Path(__file__).resolve().parents[1]
STEPS = {"gpu": 6, "tiny": 3}  # optimiser steps per training case (the first is warm-up)
LAUNCH_TIMEOUT_S = 900  # one variant's probe under the launcher


# -- helpers --------------------------------------------------------------------------------------


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return _peak_rss_gib()  # the process's peak: an upper bound on the CPU


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rel(a: Any, b: Any) -> float:
    """||a - b|| / ||b|| of two tensors or floats."""
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float(torch.linalg.vector_norm(a - b) / max(float(torch.linalg.vector_norm(b)), 1e-30))


def _error(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


# -- 1. render ------------------------------------------------------------------------------------


def render_settings(gpu: bool) -> tuple[Any, Any]:
    """(the main job's settings, the GPU-vs-CPU comparison's settings)."""
    from data_pipeline.render.settings import RenderSettings

    if not gpu:
        tiny = RenderSettings(num_views=4, rings=1, resolution=64, samples=4)
        return tiny, tiny
    spec = RenderSettings()  # SPEC 3: 32 views x 2 rings, 256 px, 32 samples
    return spec, RenderSettings(num_views=8, rings=1)


def render_job(out: Path, settings: Any, device: str, gpus: float) -> tuple[dict, list]:
    """The built-in objects through the render job; (timing, rings read back from the shards)."""
    import dataclasses

    from contract.shard_reader import read_rings
    from data_pipeline.job.config import RayConfig, RenderJobConfig
    from data_pipeline.job.quality import QualityConfig
    from data_pipeline.job.run import run_job
    from data_pipeline.sources import BuiltinSourceConfig

    cfg = RenderJobConfig(
        source=BuiltinSourceConfig(),
        render=dataclasses.replace(settings, device=device),
        output_dir=str(out),
        num_shards=1,
        progress=False,
        ray=RayConfig(workers=1, gpus_per_worker=gpus),
        quality=QualityConfig(enabled=False),
    )
    summary = run_job(cfg)
    rings = list(read_rings(str(out / "shards")))
    timing = summary["timing"]
    return {
        "device": device,
        "views": int(sum(r.images.shape[0] for r in rings)),
        "blender_seconds": timing["blender_seconds"],
        "seconds_per_view": timing["seconds_per_view"],
        "objects_per_hour_per_worker": timing["objects_per_hour"]["per_worker"],
        "job_seconds": timing["job_seconds"],
        "cycles_device": sorted({str(r.meta.render.get("device")) for r in rings}),
        "compute_backend": sorted({str(r.meta.render.get("compute_backend")) for r in rings}),
        "quarantined": summary["total"]["quarantined_by_reason"],
    }, rings


def consistency(rings: list) -> dict[str, float]:
    """Smallest camera/alpha IoU over the views of each object's rings."""
    from data_pipeline.formats.mesh_inspection import load_normalised_mesh
    from data_pipeline.render.camera_agreement import ring_iou

    worst: dict[str, float] = {}
    meshes: dict[str, Any] = {}
    for ring in rings:
        meta = ring.meta
        if meta.asset_path not in meshes:
            meshes[meta.asset_path] = load_normalised_mesh(meta.asset_path)
        scores = ring_iou(meshes[meta.asset_path], meta, ring.images)  # (V, H, W, 4) uint8
        worst[meta.uid] = min(worst.get(meta.uid, 1.0), min(scores))
    return worst


def check_render(work: Path, gpu: bool) -> dict[str, Any]:
    from evaluation.metrics.groundtruth import psnr_over_all

    main_settings, cmp_settings = render_settings(gpu)
    accel = "gpu" if gpu else "cpu"
    result: dict[str, Any] = {}
    timing, rings = render_job(work / "render-main", main_settings, accel, 1.0 if gpu else 0.0)
    result["main"] = {**timing, "settings": _settings(main_settings), "min_iou": consistency(rings)}
    if gpu:
        timing, accel_rings = render_job(work / "render-cmp-gpu", cmp_settings, "gpu", 1.0)
        result["compare_gpu"] = {**timing, "settings": _settings(cmp_settings)}
    else:
        accel_rings = rings
    timing, cpu_rings = render_job(work / "render-cmp-cpu", cmp_settings, "cpu", 0.0)
    result["compare_cpu"] = {**timing, "settings": _settings(cmp_settings)}
    result["compare_cpu"]["min_iou"] = consistency(cpu_rings)
    by_key = {r.key: r for r in cpu_rings}
    result["psnr_db"] = {
        r.key: psnr_over_all(r.images, by_key[r.key].images) for r in accel_rings if r.key in by_key
    }
    ious = [*result["main"]["min_iou"].values(), *result["compare_cpu"]["min_iou"].values()]
    result["ok"] = (
        bool(ious)
        and min(ious) >= MIN_IOU
        and bool(result["psnr_db"])
        and min(result["psnr_db"].values()) >= MIN_PSNR_DB
    )
    if gpu:
        result["gpu_speedup_per_view"] = (
            result["compare_cpu"]["seconds_per_view"] / result["compare_gpu"]["seconds_per_view"]
        )
    return result


def _settings(settings: Any) -> dict[str, Any]:
    keys = ("num_views", "rings", "resolution", "samples", "engine")
    return {k: getattr(settings, k) for k in keys}


# -- 2. training ----------------------------------------------------------------------------------


def train_overrides(variant: str, shards: str, tiny: bool) -> list[str]:
    """The training config of one variant: the paper's (ZeRO-2, bf16), or the tiny network
    through the same ZeRO-2 bf16 engine (over gloo on the CPU)."""
    if tiny:
        base = ["debug=tiny", f"controller={variant}", "engine=zero2", "engine.backend=gloo"]
    else:
        base = [f"experiment=imagedream_{variant}"]
    # one micro-batch per step whatever the preset's global batch: the case's batch is the step's
    return [*base, f"data.shards={shards}", "data.num_workers=1", "engine.warmup_steps=0",
            "engine.grad_accum=1", "engine.global_batch_size=null", "trainer.sample_every=0",
            "wandb.mode=disabled"]  # fmt: skip


def probe_train(variant: str, shards: str, out: Path, tiny: bool) -> None:
    """Under a launcher: the training cases of one variant, written as JSON to `out`."""
    import torch

    from contract.hydra_compose import compose
    from training.config import load_config, register_configs
    from training.data import build_loader
    from training.diffusion import Diffusion, TrainingObjective
    from training.engine import build_engine, init_distributed
    from training.model import build_imagedream
    from training.train import train_step

    register_configs()
    base = train_overrides(variant, shards, tiny)
    cfg0 = load_config(compose("train", base))
    dist = init_distributed(cfg0.engine.backend)
    device = dist.device
    torch.manual_seed(0)
    start = time.perf_counter()
    pristine = build_imagedream(cfg0.model, cfg0.controller)
    results: dict[str, Any] = {
        "variant": variant,
        "device": str(device),
        "build_seconds": time.perf_counter() - start,
        "unet_params_m": sum(p.numel() for p in pristine.unet.parameters()) / 1e6,
        "precision": cfg0.engine.precision,
        "zero_stage": cfg0.engine.zero_stage,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else "",
        "cases": [],
    }
    steps = STEPS["tiny" if tiny else "gpu"]

    def case(batch: int, ckpt: bool) -> dict[str, Any]:
        cfg = load_config(
            compose(
                "train",
                [*base, f"data.batch_size={batch}", f"engine.gradient_checkpointing={ckpt}"],
            )
        )
        row: dict[str, Any] = {"batch": batch, "gradient_checkpointing": ckpt}
        engine = None
        try:
            _reset_peak(device)
            engine = build_engine(  # the engine holds the only reference to the copy
                TrainingObjective(copy.deepcopy(pristine), Diffusion(objective=cfg.objective)),
                cfg,
                dist,
            )
            engine.seed(0)
            loader = build_loader(cfg.data, cfg.trainer.seed, dist.rank, dist.world_size)
            times = []
            for _ in range(steps):
                metrics = train_step(engine, loader, cfg)
                _sync(device)
                times.append(metrics["perf/step_s"])
            step_s = statistics.median(times[1:]) if len(times) > 1 else times[0]
            row.update(step_s=step_s, samples_per_s=batch / step_s, peak_gib=_peak_gib(device))
            row["loss"] = metrics["train/loss"]
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not isinstance(exc, torch.OutOfMemoryError) and "out of memory" not in str(exc):
                raise
            row.update(oom=True, error=str(exc).splitlines()[0])
        finally:
            release(engine)
            engine = None
            gc.collect()  # DeepSpeed's engine and optimizer hold reference cycles
            _reset_peak(device)
        return row

    for ckpt in (False, True):
        rows = [case(1, ckpt), case(4, ckpt)]
        results["cases"] += rows
        out.write_text(json.dumps(results, indent=1))  # what is measured survives a crash
        if device.type == "cuda" and all("peak_gib" in r for r in rows):
            results["cases"].append(largest_batch(case, rows, ckpt, device))
            out.write_text(json.dumps(results, indent=1))
    results["fp32_step1"] = fp32_loss_on_both(pristine, cfg0, device)
    results["complete"] = True
    out.write_text(json.dumps(results, indent=1))


def release(engine: Any) -> None:
    """Free a case's DeepSpeed engine (its optimizer states and gradient buffers) now."""
    if engine is None:
        return
    with contextlib.suppress(Exception):  # older DeepSpeed has no destroy(): gc.collect does it
        engine.ds.destroy()
    engine.ds = None


def largest_batch(case: Any, rows: list[dict], ckpt: bool, device: Any) -> dict[str, Any]:
    """The largest batch that fits: predicted from the peaks at 1 and 4 (memory grows linearly
    with the batch), then tried, stepping down by 20 % after an out-of-memory (3 tries)."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    per_sample = max((rows[1]["peak_gib"] - rows[0]["peak_gib"]) / 3, 1e-3)
    fixed = rows[0]["peak_gib"] - per_sample
    batch = max(4, int((0.92 * total - fixed) / per_sample))
    for _ in range(3):
        row = case(batch, ckpt)
        if not row.get("oom"):
            return {**row, "largest": True, "predicted_from": [1, 4]}
        batch = max(4, int(batch * 0.8))
    return {**row, "largest": True, "note": "no batch above 4 fitted in 3 tries"}


def fp32_loss_on_both(pristine: Any, cfg: Any, device: Any) -> dict[str, Any]:
    """Loss of step 1 in fp32 on `device` and on the CPU: one batch of the trainer's stream, noise
    and timesteps from one CPU generator, TF32 off."""
    import torch

    from training.data import build_loader
    from training.diffusion import Diffusion, TrainingObjective

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    batch = next(build_loader(cfg.data, cfg.trainer.seed))
    losses = {}
    for where in ("cpu", str(device)):
        model = copy.deepcopy(pristine).float().to(where)
        objective = TrainingObjective(model, Diffusion(objective=cfg.objective))
        generator = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            loss = objective(batch, generator)
        losses[where] = float(loss)
        del model, objective
    cpu, dev = losses["cpu"], losses[str(device)]
    rel = abs(dev - cpu) / max(abs(cpu), 1e-30)
    return {"cpu": cpu, "device": dev, "rel_diff": rel, "ok": rel <= MAX_LOSS_REL}


def check_training(work: Path, gpu: bool, tiny: bool) -> dict[str, Any]:
    from contract.synthetic_shards import write_synthetic_shards

    shards = work / "shards"
    size = 16 if tiny else 256
    write_synthetic_shards(shards, num_shards=2, rings_per_shard=24, num_views=8, resolution=size)
    bindir = Path(sys.executable).parent
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        out = work / f"train-{variant}.json"
        args = ["-m" if not gpu else "--module", "bench.gpu_check", "probe-train"]
        args += ["--variant", variant, "--shards", str(shards), "--json", str(out)]
        args += ["--tiny"] if tiny else []
        if gpu:  # the DeepSpeed launcher: NCCL on one GPU
            cmd = [str(bindir / "deepspeed"), "--num_gpus", "1", *args]
        else:
            cmd = [str(bindir / "torchrun"), "--standalone", "--nproc_per_node", "1", *args]
        paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=LAUNCH_TIMEOUT_S
            )
            failure = "" if proc.returncode == 0 else f"launcher exit {proc.returncode}: "
            failure += proc.stderr[-3000:] if failure else ""
        except subprocess.TimeoutExpired:  # e.g. a hung NCCL rendezvous
            failure = f"launcher still running after {LAUNCH_TIMEOUT_S} s: killed"
        measured = json.loads(out.read_text()) if out.exists() else {}
        if failure or not measured.get("complete"):
            results[variant] = {**measured, "error": failure or "the probe stopped early"}
            continue
        results[variant] = measured
        results[variant]["launch_seconds"] = time.perf_counter() - start
        results[variant]["launcher"] = Path(cmd[0]).name
    results["ok"] = all(
        "error" not in r
        and r["fp32_step1"]["ok"]
        and all("step_s" in c for c in r["cases"] if not c.get("largest"))
        for r in (results[v] for v in VARIANTS)
    )
    return results


# -- 3. sampling ----------------------------------------------------------------------------------


def check_sampling(gpu: bool, tiny: bool) -> dict[str, Any]:
    import torch

    from training.model import build_imagedream, compose_model_configs
    from training.pipeline import ImageDreamPipeline

    model_cfg, controller_cfg = compose_model_configs("tiny" if tiny else "sd21_mv", "local_pixel")
    torch.manual_seed(0)
    model = build_imagedream(model_cfg, controller_cfg).eval()
    pipe = ImageDreamPipeline.from_model(model)
    size = pipe.resolution
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    device = torch.device("cuda" if gpu else "cpu")
    results: dict[str, Any] = {"resolution": size, "steps": 50, "cases": []}
    for dtype in (torch.float16, torch.bfloat16):
        row: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch.")}
        try:
            pipe.to(device, dtype)
            times = []
            for i in range(2 if gpu else 1):  # the first includes warm-up (CPU: one is slow enough)
                _reset_peak(device)
                start = time.perf_counter()
                pipe(image, prompt="a thing, 3d asset", num_inference_steps=50,
                     generator=[torch.Generator().manual_seed(i)], output_type="np")  # fmt: skip
                _sync(device)
                times.append(time.perf_counter() - start)
            row.update(seconds_per_prompt=times[-1], first_seconds=times[0])
            row["peak_gib"] = _peak_gib(device)
        except (RuntimeError, TypeError) as exc:  # e.g. a half kernel the CPU lacks
            row.update(_error(exc))
            row["skipped"] = not gpu  # on the GPU every dtype must run
        results["cases"].append(row)
    # one fp32 DDIM step on both devices, same initial noise (CPU generator), TF32 off
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    latents = {}
    for where in ("cpu", str(device)):
        pipe.to(torch.device(where), torch.float32)
        out = pipe(image, prompt="a thing, 3d asset", num_inference_steps=1, eta=0.0,
                   generator=[torch.Generator().manual_seed(7)], output_type="latent")  # fmt: skip
        latents[where] = out.latents.float().cpu()
    rel = _rel(latents[str(device)], latents["cpu"])
    results["fp32_one_step"] = {"rel_diff": rel, "ok": rel <= MAX_SAMPLE_REL}
    results["ok"] = results["fp32_one_step"]["ok"] and all(
        "error" not in c or c.get("skipped") for c in results["cases"]
    )
    return results


def run_check(out: Path, force_tiny: bool) -> int:
    import torch

    gpu = torch.cuda.is_available() and not force_tiny
    tiny = not gpu
    start = time.perf_counter()
    if gpu:
        mode = f"GPU: {torch.cuda.get_device_name(0)}, full size"
    else:
        why = "--tiny" if torch.cuda.is_available() else "no NVIDIA GPU here"
        mode = (
            f"NO GPU RUN ({why}): the same code on the CPU at tiny sizes. These figures show that "
            "the paths run, not how fast a GPU is."
        )
    print(mode, flush=True)
    result: dict[str, Any] = {"mode": "gpu" if gpu else "cpu-tiny", "mode_line": mode}
    result["machine"] = f"{os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}"
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        for name, fn in (
            ("render", lambda: check_render(work, gpu)),
            ("training", lambda: check_training(work, gpu, tiny)),
            ("sampling", lambda: check_sampling(gpu, tiny)),
        ):
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as exc:  # reported, and the check fails; the other parts still run
                result[name] = {**_error(exc), "ok": False}
            result[name]["seconds"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.perf_counter() - start
    result["ok"] = {k: bool(result[k].get("ok")) for k in ("render", "training", "sampling")}
    write_report(result, out)
    print((out / "gpu.md").read_text())
    return 0 if all(result["ok"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # the DeepSpeed launcher passes --local_rank=N before the sub-command; the rank is read
    # from the environment (LOCAL_RANK) as under torchrun
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU even with a GPU")
    probe = sub.add_parser("probe-train", help="(internal) the training cases, under a launcher")
    probe.add_argument("--variant", choices=VARIANTS, required=True)
    probe.add_argument("--shards", required=True)
    probe.add_argument("--json", type=Path, required=True)
    probe.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "probe-train":
        probe_train(args.variant, args.shards, args.json, args.tiny)
        return 0
    return run_check(args.out, args.tiny)


if __name__ == "__main__":
    sys.exit(main())
