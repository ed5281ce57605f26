"""Model benchmark (`python -m bench.model [--quick]`): bench/results/model.{json,md}.

Forward + backward time and peak memory of the FULL-size multi-view UNet on this CPU, per
controller variant, at 4 target views (+1 pixel frame) of 32x32 latents (256 px), batch 1,
next to the plain diffusers SD 2.1-base UNet running the same frames as independent images.
Parameters train as the paper says (SPEC 5): adapters only for global/local, everything for
none/pixel/local_pixel; the plain UNet trains everything. Each case runs in its own process
so its peak RSS is its own. Builds ~1 B parameters: run under `flock /tmp/bigmem.lock`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

VIEWS, LATENT, BATCH = 4, 32, 1  # SPEC 1/6: 4 views at 256 px -> 32x32 latents
OUT = Path("bench/results")


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def _time_steps(step, reps: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds per step. CPU time is the steadier number on a machine
    shared with other jobs (wall time then includes waiting for a core)."""
    step()  # warm-up (allocator, kernels)
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def _run_case(case: str, reps: int) -> dict:
    from training.model import CONTROLLER_CONFIGS, Conditioning, build_denoiser
    from training.model.config import ModelConfig
    from training.model.unet import diffusers_unet_kwargs, multiview_forward

    torch.manual_seed(0)
    cfg = ModelConfig()
    ctx = torch.randn(BATCH, 77, 1024)
    t = torch.randint(0, 1000, (BATCH,))
    if case.startswith("plain"):
        from diffusers import UNet2DConditionModel

        frames = int(case.split("_")[1])
        unet: Any = UNet2DConditionModel(
            **(diffusers_unet_kwargs(cfg.unet) | {"class_embed_type": None})
        )
        x = torch.randn(BATCH * frames, 4, LATENT, LATENT)
        n_params = n_train = sum(p.numel() for p in unet.parameters())
        rss_built = _rss_gb()

        def step() -> None:
            unet.zero_grad(set_to_none=True)
            out = unet(
                x,
                t.repeat_interleave(frames),
                encoder_hidden_states=ctx.repeat_interleave(frames, 0),
            ).sample
            out.square().mean().backward()

    else:
        unet, controller = build_denoiser(cfg, CONTROLLER_CONFIGS[case]())
        train_unet = controller.train_unet
        for name, p in unet.named_parameters():
            p.requires_grad_(train_unet or "_ip." in name)
        params = list(unet.parameters()) + list(controller.parameters())
        n_params = sum(p.numel() for p in params)
        n_train = sum(p.numel() for p in params if p.requires_grad)
        frames = VIEWS + int(controller.uses_pixel_frame)
        noisy = torch.randn(BATCH, VIEWS, 4, LATENT, LATENT)
        cams = torch.randn(BATCH, VIEWS, 16)
        from training.model.controllers import ImagePromptFeatures

        feats = ImagePromptFeatures(
            global_embed=torch.randn(BATCH, 1024),
            local_tokens=torch.randn(BATCH, 257, 1280),
            latent=torch.randn(BATCH, 4, LATENT, LATENT),
        )
        rss_built = _rss_gb()

        def step() -> None:
            unet.zero_grad(set_to_none=True)
            controller.zero_grad(set_to_none=True)
            cond: Conditioning = controller(feats)
            x, c = noisy, cams
            if cond.extra_frame is not None:  # as ImageDream.forward does
                x = torch.cat([noisy, cond.extra_frame[:, None]], 1)
                c = torch.cat([cams, torch.zeros(BATCH, 1, 16)], 1)
            eps = multiview_forward(unet, x, t, ctx, c, cond.image_tokens, cond.ip_scale)[:, :VIEWS]
            eps.square().mean().backward()

    wall, cpu = _time_steps(step, reps)
    return dict(
        case=case,
        frames=frames,
        params_m=round(n_params / 1e6, 2),
        trainable_m=round(n_train / 1e6, 2),
        fwd_bwd_s_median=round(statistics.median(wall), 3),
        fwd_bwd_s_all=[round(x, 3) for x in wall],
        fwd_bwd_cpu_s_median=round(statistics.median(cpu), 3),
        rss_after_build_gb=round(rss_built, 2),
        peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    )


def _worker(case: str, reps: int, queue) -> None:
    queue.put(_run_case(case, reps))


def run(reps: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    results = []
    for case in ["plain_4", "plain_5", "none", "global", "local", "pixel", "local_pixel"]:
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(case, reps, queue))
        proc.start()
        result = queue.get()
        proc.join()
        print(json.dumps(result), flush=True)
        results.append(result)
    plain = {r["frames"]: r for r in results if r["case"].startswith("plain")}
    for r in results:
        base = plain[r["frames"]]
        r["time_vs_plain_same_frames"] = round(r["fwd_bwd_s_median"] / base["fwd_bwd_s_median"], 3)
        r["cpu_vs_plain_same_frames"] = round(
            r["fwd_bwd_cpu_s_median"] / base["fwd_bwd_cpu_s_median"], 3
        )
        r["peak_rss_vs_plain_same_frames"] = round(r["peak_rss_gb"] / base["peak_rss_gb"], 3)
    return results


def write(results: list[dict], reps: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = dict(
        what="full-size UNet forward+backward, batch 1, 4 views (+1 pixel frame), 32x32 latents, fp32, CPU",
        reps=reps,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=platform.processor() or platform.machine(),
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (OUT / "model.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# Model benchmark (`python -m bench.model`)",
        "",
        f"{meta['what']}; median of {reps} timed step(s) after one warm-up; x plain = ratio to "
        f"the plain UNet on the same number of frames; torch {meta['torch']}, "
        f"{meta['threads']} threads; {meta['date']}. Each case in its own process (peak RSS = "
        "ru_maxrss, includes the weights). `plain_F` = diffusers UNet2DConditionModel (SD 2.1-base, "
        "no camera) on F frames as independent images, all parameters training.",
        "",
        "| case | frames | params (M) | trainable (M) | fwd+bwd wall (s) | x plain | "
        "fwd+bwd CPU (s) | x plain | peak RSS (GB) | x plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['frames']} | {r['params_m']} | {r['trainable_m']} | "
            f"{r['fwd_bwd_s_median']} | {r['time_vs_plain_same_frames']} | "
            f"{r['fwd_bwd_cpu_s_median']} | {r['cpu_vs_plain_same_frames']} | {r['peak_rss_gb']} | "
            f"{r['peak_rss_vs_plain_same_frames']} |"
        )
    (OUT / "model.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 timed step instead of 3")
    args = parser.parse_args()
    reps = 1 if args.quick else 3
    write(run(reps), reps)
    print((OUT / "model.md").read_text())


if __name__ == "__main__":
    main()
