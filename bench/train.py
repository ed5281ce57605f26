"""Training benchmark (`python -m bench.train`): bench/results/train.{json,md}.

Measures on this machine: samples/s of the data loader alone, the trainer's consumption rate,
training samples/s and peak memory of the tiny config, and one step of the full-size pixel variant.
The synthetic shards it trains on come from contract/synthetic_shards.py (as the tests' do).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from contract.atomic import atomic_write_bytes
from contract.synthetic_shards import write_synthetic_shards

RESULTS = Path("bench/results")


def _compose(overrides: list[str]) -> Any:
    from contract.hydra_compose import compose
    from training.config import load_config, register_configs

    register_configs()
    return load_config(compose("train", overrides))


def bench_loader(cfg: Any, batches: int) -> dict[str, float]:
    """Samples/s of the data stream alone (decode, composite, resize, collate)."""
    from training.data import build_loader

    loader = build_loader(cfg.data, seed=0)
    next(loader)  # start-up (workers, shuffle buffer) is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    elapsed = time.perf_counter() - start
    return {"samples_per_s": batches * cfg.data.batch_size / elapsed, "batches": batches}


def bench_tiny_training(cfg: Any, steps: int) -> dict[str, float]:
    """One process, tiny model: trainer consumption on a fixed batch vs end-to-end with data."""
    from training.data import build_loader
    from training.diffusion import Diffusion, TrainingObjective
    from training.engine import build_engine, init_distributed
    from training.model import build_imagedream

    dist = init_distributed(cfg.engine.backend)
    model = build_imagedream(cfg.model, cfg.controller)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    engine = build_engine(TrainingObjective(model, Diffusion(objective=cfg.objective)), cfg, dist)
    loader = build_loader(cfg.data, seed=0)
    batch = next(loader)
    engine.train_step([batch])  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        engine.train_step([batch])
    fixed = steps * cfg.data.batch_size / (time.perf_counter() - start)
    start = time.perf_counter()
    wait = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        b = next(loader)
        wait += time.perf_counter() - t0
        engine.train_step([b])
    elapsed = time.perf_counter() - start
    return {
        "controller": cfg.controller.name,
        "params_m": params / 1e6,
        "trainable_params_m": trainable / 1e6,
        "consumption_samples_per_s": fixed,
        "train_samples_per_s": steps * cfg.data.batch_size / elapsed,
        "data_wait_fraction": wait / elapsed,
        "peak_rss_gib": _peak_rss_gib(),
        "steps": steps,
    }


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def full_pixel_step(shards: str) -> dict[str, float]:
    """One optimiser step of the full-size pixel variant (865 M-param UNet, whole UNet trains)
    in one process: DeepSpeed bf16 + ZeRO-2 on one rank with bf16 master weights, gradients and
    AdamW states, gradient checkpointing, micro-batch 1 (4 views + the prompt frame at 256 px)."""
    from training.data import build_loader
    from training.diffusion import Diffusion, TrainingObjective
    from training.engine import build_engine, init_distributed
    from training.model import build_imagedream

    cfg = _compose(
        [
            "experiment=imagedream_pixel",
            f"data.shards={shards}",
            "data.batch_size=1",
            "data.num_workers=0",
            "data.shuffle_buffer=2",
            "data.shuffle_initial=1",
            "engine.grad_accum=1",
            "engine.global_batch_size=null",
            "engine.backend=gloo",
            "engine.warmup_steps=0",
            # what it takes to fit beside other jobs in 24 GiB: bf16 master weights, gradients
            # and AdamW states, and recomputed activations
            "engine.bf16_master_weights=true",
            "engine.gradient_checkpointing=true",
        ]
    )
    dist = init_distributed(cfg.engine.backend)
    t0 = time.perf_counter()
    model = build_imagedream(cfg.model, cfg.controller)
    unet_params = sum(p.numel() for p in model.unet.parameters())
    engine = build_engine(TrainingObjective(model, Diffusion(objective=cfg.objective)), cfg, dist)
    built = time.perf_counter() - t0
    batch = next(build_loader(cfg.data, seed=0))
    t0 = time.perf_counter()
    out = engine.train_step([batch])
    step_s = time.perf_counter() - t0
    return {
        "unet_params_m": unet_params / 1e6,
        "precision": cfg.engine.precision,
        "bf16_master_weights": cfg.engine.bf16_master_weights,
        "gradient_checkpointing": cfg.engine.gradient_checkpointing,
        "zero_stage": cfg.engine.zero_stage,
        "micro_batch": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
        "build_s": built,
        "step_s": step_s,
        "loss": out.loss,
        "grad_norm": out.grad_norm,
        "peak_rss_gib": _peak_rss_gib(),
    }


def _run_full_step_child(shards: str, timeout: float) -> dict[str, Any]:
    """The full-size step in its own process under /tmp/bigmem.lock (one big model at a time on
    a shared machine); its peak memory is its own."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    # the time limit starts once the lock is held: waiting for other big jobs is not the step
    cmd = ["flock", "/tmp/bigmem.lock", "timeout", str(int(timeout)), sys.executable]
    cmd += ["-m", "bench.train", "--full-step", shards]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode == 124:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("FULLSTEP "):
            return json.loads(line[len("FULLSTEP ") :])
    return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}


def write_report(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(RESULTS / "train.json", json.dumps(results, indent=2).encode())
    lines = [
        "# Training benchmark",
        "",
        f"Machine: {results['machine']}. Written by `python -m bench.train`.",
        "",
        "## Data stream vs trainer (tiny config, 1 process)",
        "",
        "| what | samples/s |",
        "|---|---|",
    ]
    for name, r in results["loader"].items():
        lines.append(f"| data loader alone, {name} | {r['samples_per_s']:.1f} |")
    for r in results["tiny"]:
        c = r["controller"]
        lines.append(
            f"| trainer on a fixed batch (consumption), tiny {c} | {r['consumption_samples_per_s']:.1f} |"
        )
        lines.append(f"| training with the loader, tiny {c} | {r['train_samples_per_s']:.1f} |")
    lines += ["", "| tiny controller | params (M) | trainable (M) | data wait | peak RSS (GiB) |"]
    lines += ["|---|---|---|---|---|"]
    for r in results["tiny"]:
        lines.append(
            f"| {r['controller']} | {r['params_m']:.2f} | {r['trainable_params_m']:.2f} | "
            f"{100 * r['data_wait_fraction']:.0f} % | {r['peak_rss_gib']:.2f} |"
        )
    full = results["full_pixel_step"]
    lines += ["", "## One step of the full-size pixel variant on this CPU", ""]
    if "error" in full:
        lines.append(f"Failed: {full['error']}")
    else:
        lines += [
            f"UNet {full['unet_params_m']:.0f} M parameters, all trained; {full['precision']} with "
            f"DeepSpeed ZeRO-{full['zero_stage']} on one process, bf16 master weights, gradients "
            f"and AdamW states ({full['bf16_master_weights']}), gradient checkpointing "
            f"({full['gradient_checkpointing']}), micro-batch {full['micro_batch']} (4 views + "
            f"prompt frame at {full['image_size']} px). The paper's mixed precision (fp32 master "
            "weights and AdamW states) needs about 16 bytes per trained parameter, about 14 GiB "
            "for the UNet before activations: too much beside other jobs on this 24 GiB machine.",
            "",
            "| build (s) | step (s) | peak RSS (GiB) | loss |",
            "|---|---|---|---|",
            f"| {full['build_s']:.0f} | {full['step_s']:.0f} | {full['peak_rss_gib']:.1f} | "
            f"{full['loss']:.4f} |",
        ]
    atomic_write_bytes(RESULTS / "train.md", ("\n".join(lines) + "\n").encode())


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--full-step":
        print("FULLSTEP " + json.dumps(full_pixel_step(sys.argv[2])), flush=True)
        return
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    try:
        small = work / "small"
        write_synthetic_shards(small, num_shards=4, rings_per_shard=16, num_views=8, resolution=16)
        big = work / "big"
        write_synthetic_shards(big, num_shards=2, rings_per_shard=16, num_views=32, resolution=256)
        results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores"}
        loader_256 = _compose(
            ["debug=tiny", f"data.shards={big}", "data.batch_size=4", "data.num_workers=2"]
        )
        loader_256.data.image_size = 256  # what full-size training reads (32-view rings, 256 px)
        results["loader"] = {
            "256 px rings of 32 views, 2 workers": bench_loader(loader_256, batches=30),
            "16 px tiny rings, 1 worker": bench_loader(
                _compose(["debug=tiny", f"data.shards={small}", "data.batch_size=4"]), batches=30
            ),
        }
        results["tiny"] = [
            bench_tiny_training(
                _compose(
                    ["debug=tiny", f"controller={c}", f"data.shards={small}", "data.batch_size=4"]
                ),
                steps=10,
            )
            for c in ("local_pixel",)
        ]
        results["full_pixel_step"] = _run_full_step_child(str(big), timeout=1800)
        write_report(results)
        print((RESULTS / "train.md").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
