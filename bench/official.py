"""Run the authors' released inference code from their checkouts and record every intermediate.

`make parity` compares our pipeline with the authors' code on the same weights, image, text and
seed. This module is the authors' side: it imports bytedance/ImageDream (`imagedream` package,
`scripts/demo.py`) and bytedance/MVDream (`mvdream` package, `scripts/t2i.py`) from checkout
directories at run time (bench.official_checkouts), builds their model at the small parity
sizes (official_config; ours: conf/model/parity.yaml),
runs their demo / t2i path on the CPU and returns what each stage produced as numpy arrays.
None of their code is copied here; `bench.official_shims` holds the stand-ins for missing
third-party modules and the run-time patches of their objects.

Shape legend: B views sampled together (ImageDream pixel: 5 = 4 views + the prompt frame;
local and MVDream: 4), S DDIM steps actually run (their schedule may have one more than asked),
C latent channels (4), h x w latent size (size / 8), H x W pixels (size), T text tokens (77),
D text width, P CLIP patches + 1, E CLIP width (1280).

Keys of `run_imagedream`'s result (MVDream's has those not marked [ID]; [pixel] only with the
prompt frame):
  prompt_composite   (Hp, Wp, 3) uint8  [ID] their add_random_background(prompt, grey)
  clip_input         (1, 3, R, R)       [ID] open_clip's eval transform of the composite
  clip_tokens        (1, P, E)          [ID] get_learned_image_conditioning: penultimate layer
  vae_input          (1, 3, H, W)       [pixel] demo transform: Resize((H, W)), [-1, 1]
  vae_posterior_mean (1, C, h, w)       [pixel] VAE posterior mean (unscaled)
  vae_posterior_std  (1, C, h, w)       [pixel] VAE posterior std (unscaled)
  pixel_latent       (1, C, h, w)       [pixel] one posterior sample x scale_factor
  context            (1, T, D)          get_learned_conditioning(text)
  uncond_context     (1, T, D)          the negative text's (ImageDream: the demo's; MVDream: "")
  camera             (B, 16)            their get_camera (pixel: 4 ring cameras + zeros)
  ddim_timesteps     (S,) int64         their make_ddim_timesteps, ascending
  timesteps          (S,) int64         the t of each step, in sampling (descending) order
  x_T                (B, C, h, w)       initial noise (drawn by their sampler)
  step_x             (S, B, C, h, w)    latents entering each step (step_x[0] == x_T)
  step_unet_input    (S, 2B, C, h, w)   the UNet's input: [uncond; cond], after their UNet wrote
                                        the pixel latent / zeros into frame 5 in place [pixel]
  step_eps           (S, 2B, C, h, w)   UNet output, unconditional half first
  step_pred_x0       (S, B, C, h, w)    DDIM x0 prediction
  step_x_prev        (S, B, C, h, w)    latents leaving each step
  latents            (B, C, h, w)       final latents (== step_x_prev[-1])
  decoded            (B, 3, H, W)       decode_first_stage, before clamp
  views              (B, H, W, 3) uint8 what i2i / t2i returned
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from bench.official_checkouts import (
    KINDS,
    MODEL_NAMES,
    OfficialCheckouts,
    check_steps,
    load_checkouts,
    official_config,
    package_of,
    script_module,
)
from bench.official_shims import (
    Capture,
    keep_sampler_on_model_device,
    open_clip_sequence_first,
    record_image_prompt,
    record_sampling,
)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Their constructors print a line per attention layer; keep the caller's output readable."""
    if enabled:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield


def build_official_model(
    checkouts: OfficialCheckouts, kind: str, seed: int = 0, quiet: bool = True
) -> torch.nn.Module:
    """Their model for `kind` at the parity sizes with their random init, in eval mode.

    The global RNG is forked: building (which draws the init) leaves the caller's RNG as it was.
    """
    package = package_of(kind)
    checkouts.root(package)
    util = importlib.import_module(f"{package}.ldm.util")
    with torch.random.fork_rng(devices=[]), open_clip_sequence_first(), _quiet(quiet):
        torch.manual_seed(seed)
        model = util.instantiate_from_config(official_config(kind).model)
    return model.eval()


def official_layout(checkouts: OfficialCheckouts, kind: str) -> dict[str, list[int]]:
    """Every state_dict key of their instantiated model for `kind`, with its shape."""
    model = build_official_model(checkouts, kind)
    return {key: list(value.shape) for key, value in model.state_dict().items()}


def _check_keys(model: torch.nn.Module, ckpt_path: Path) -> None:
    """Refuse a checkpoint whose keys differ from the model's.

    Their ImageDream `build_model` loads with strict=False, which would leave any missing
    weight at its random init and make a parity failure look like a numerical one.
    """
    state = torch.load(ckpt_path, map_location="cpu")
    expected, given = set(model.state_dict()), set(state)
    if expected != given:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise ValueError(
            f"{ckpt_path}: {len(missing)} keys missing (e.g. {missing[:5]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})"
        )


def _sampling_arrays(cap: Capture, sampler: Any, views: list[np.ndarray]) -> dict[str, Any]:
    step_x = cap.stacked("step_x")
    step_x_prev = cap.stacked("step_x_prev")
    return {
        "context": cap.one("context"),
        "ddim_timesteps": np.asarray(sampler.ddim_timesteps, dtype=np.int64),
        "timesteps": cap.stacked("timesteps"),
        "x_T": step_x[0],
        "step_x": step_x,
        "step_unet_input": cap.stacked("step_unet_input"),
        "step_eps": cap.stacked("step_eps"),
        "step_pred_x0": cap.stacked("step_pred_x0"),
        "step_x_prev": step_x_prev,
        "latents": step_x_prev[-1],
        "decoded": cap.one("decoded"),
        "views": np.stack(views),
    }


# ------------------------------------------------------------------------------------------ runs


def run_imagedream(
    checkouts: OfficialCheckouts,
    kind: str,
    ckpt_path: str | Path,
    prompt_rgba: Image.Image,
    grey_255: float,
    text: str,
    seed: int,
    steps: int,
    guidance_scale: float,
    size: int = 64,
    quiet: bool = True,
) -> dict[str, np.ndarray]:
    """Their scripts/demo.py path on the CPU; the keys are listed in the module docstring.

    Setup is their `ImageDreamDiffusion(args)` (build_model from a temporary YAML of
    `official_config(kind)` and `ckpt_path`, the demo's negative text, camera and image
    transform); then, as `diffuse` does for one sample but with `steps` and `guidance_scale`:
    set_seed(seed) and their `i2i`. `text` is sent as given (the demo appends ", 3d asset").
    The prompt is composited by their `add_random_background` on `grey_255` (the demo draws it
    from an unseeded np.random before seeding).
    """
    if kind not in ("imagedream_local", "imagedream_local_pixel"):
        raise ValueError(f"run_imagedream: kind must be imagedream_local(_pixel), got {kind!r}")
    if prompt_rgba.mode != "RGBA":
        raise ValueError(
            f"the prompt must be RGBA (their compositing reads alpha), got {prompt_rgba.mode}"
        )
    pixel = kind == "imagedream_local_pixel"
    num_frames = 5 if pixel else 4
    ckpt_path = Path(ckpt_path)
    check_steps(checkouts, "imagedream", steps)
    demo = script_module(checkouts, "imagedream")

    composite = demo.add_random_background(prompt_rgba, bg_color=grey_255)
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.yaml"
        OmegaConf.save(official_config(kind), config_path)
        args = argparse.Namespace(
            mode="pixel" if pixel else "local",
            num_frames=num_frames,
            seed=seed,
            fp16=False,
            device="cpu",
            model_name=MODEL_NAMES[kind],
            config_path=str(config_path),
            ckpt_path=str(ckpt_path),
            use_camera=1,
            size=size,
        )
        with open_clip_sequence_first(), _quiet(quiet):
            dream = demo.ImageDreamDiffusion(args)
    _check_keys(dream.model, ckpt_path)
    keep_sampler_on_model_device(dream.sampler)

    cap = Capture()
    record_sampling(cap, dream.model, dream.sampler)
    record_image_prompt(cap, dream.model)
    try:
        demo.set_seed(seed)
        views = demo.i2i(
            dream.model,
            size,
            text,
            dream.uc,
            dream.sampler,
            ip=composite,
            step=steps,
            scale=guidance_scale,
            batch_size=dream.batch_size,
            ddim_eta=0.0,
            dtype=dream.dtype,
            device=dream.device,
            camera=dream.camera,
            num_frames=num_frames,
            pixel_control=pixel,
            transform=dream.image_transform,
        )
    finally:
        cap.restore()

    out = _sampling_arrays(cap, dream.sampler, views)
    out |= {
        "prompt_composite": np.asarray(composite, dtype=np.uint8),
        "uncond_context": dream.uc.detach().float().cpu().numpy(),
        "camera": dream.camera.detach().float().cpu().numpy(),
        "clip_input": cap.stacked("clip_input"),
        "clip_tokens": cap.one("clip_tokens"),
    }
    if pixel:
        for key in ("vae_input", "vae_posterior_mean", "vae_posterior_std", "pixel_latent"):
            out[key] = cap.one(key)
    return out


def run_mvdream(
    checkouts: OfficialCheckouts,
    ckpt_path: str | Path,
    text: str,
    seed: int,
    steps: int,
    guidance_scale: float,
    size: int = 64,
    quiet: bool = True,
) -> dict[str, np.ndarray]:
    """Their scripts/t2i.py path on the CPU (the `--config_path` branch); keys as above.

    As their __main__: instantiate_from_config + load_state_dict (strict), model.device,
    eval, DDIMSampler, uc of the empty text, get_camera(4, elevation=15, azimuth_start=90,
    azimuth_span=360); then set_seed(seed) and their `t2i` for one batch of 4 views.
    """
    check_steps(checkouts, "mvdream", steps)
    script = script_module(checkouts, "mvdream")
    device, num_frames = "cpu", 4
    batch_size = max(4, num_frames)
    with open_clip_sequence_first(), _quiet(quiet):
        model = script.instantiate_from_config(official_config("mvdream", device).model)
    model.load_state_dict(torch.load(Path(ckpt_path), map_location="cpu"))
    model.device = device
    model.to(device)
    model.eval()
    sampler = keep_sampler_on_model_device(script.DDIMSampler(model))
    uc = model.get_learned_conditioning([""]).to(device)
    camera = script.get_camera(num_frames, elevation=15, azimuth_start=90, azimuth_span=360)
    camera = camera.repeat(batch_size // num_frames, 1).to(device)

    cap = Capture()
    record_sampling(cap, model, sampler)
    try:
        script.set_seed(seed)
        views = script.t2i(
            model,
            size,
            text,
            uc,
            sampler,
            step=steps,
            scale=guidance_scale,
            batch_size=batch_size,
            ddim_eta=0.0,
            dtype=torch.float32,
            device=device,
            camera=camera,
            num_frames=num_frames,
        )
    finally:
        cap.restore()

    out = _sampling_arrays(cap, sampler, views)
    out |= {
        "uncond_context": uc.detach().float().cpu().numpy(),
        "camera": camera.detach().float().cpu().numpy(),
    }
    return out


# ----------------------------------------------------------------------------------------- smoke


def _smoke_prompt() -> Image.Image:
    """A red disc on transparency, 96 x 80 (not square), with noise under the zero alpha."""
    h, w = 80, 96
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - 40) ** 2 + (xx - 52) ** 2 <= 28**2
    rgba = np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[inside, :3] = (200, 60, 40)
    rgba[..., 3] = np.where(inside, 255, 0)
    return Image.fromarray(rgba, mode="RGBA")


def _random_checkpoint(checkouts: OfficialCheckouts, kind: str, path: Path) -> None:
    """Their model at random, all-zero tensors (zero-initialised output layers) filled with
    small noise so the UNet's output is not identically zero, saved as a plain state_dict."""
    state = build_official_model(checkouts, kind).state_dict()
    gen = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if value.is_floating_point() and not value.any():
            state[key] = 0.02 * torch.randn(value.shape, generator=gen)
    torch.save(state, path)


def main(argv: list[str] | None = None) -> None:
    """Build each kind at random, run it end to end, print the captured shapes and the time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--imagedream", type=Path, help="ImageDream repo root or extern/ImageDream")
    parser.add_argument("--mvdream", type=Path, help="MVDream repo root")
    # not 3: their schedule for 3 steps ends at timestep 1000 and raises (see check_steps)
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps (their schedule)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--verbose", action="store_true", help="let their prints through")
    args = parser.parse_args(argv)
    checkouts = load_checkouts(args.imagedream, args.mvdream)
    print(f"imagedream: {checkouts.imagedream_root} @ {checkouts.imagedream_commit}")
    print(f"mvdream:    {checkouts.mvdream_root} @ {checkouts.mvdream_commit}")
    kinds = [k for k in KINDS if (args.mvdream if k == "mvdream" else args.imagedream) is not None]
    prompt = _smoke_prompt()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            start = time.perf_counter()
            ckpt = Path(tmp) / f"{kind}.pt"
            _random_checkpoint(checkouts, kind, ckpt)
            built = time.perf_counter() - start
            if kind == "mvdream":
                out = run_mvdream(
                    checkouts,
                    ckpt,
                    "a red ball, 3d asset",
                    seed=0,
                    steps=args.steps,
                    guidance_scale=10.0,
                    size=args.size,
                    quiet=not args.verbose,
                )
            else:
                out = run_imagedream(
                    checkouts,
                    kind,
                    ckpt,
                    prompt,
                    grey_255=127.5,
                    text="a red ball, 3d asset",
                    seed=0,
                    steps=args.steps,
                    guidance_scale=5.0,
                    size=args.size,
                    quiet=not args.verbose,
                )
            total = time.perf_counter() - start
            print(f"\n{kind}: {total:.1f} s ({built:.1f} s building the random checkpoint)")
            for key, value in sorted(out.items()):
                print(f"  {key:20s} {value.dtype!s:8s} {tuple(value.shape)}")
            print(f"  timesteps: {out['timesteps'].tolist()}")


if __name__ == "__main__":
    main()
