"""`make parity`: our pipeline against the authors' released inference code, stage by stage.

    make parity OFFICIAL_IMAGEDREAM=~/src/ImageDream OFFICIAL_MVDREAM=~/src/MVDream
    python -m bench.parity --imagedream DIR --mvdream DIR [--steps 30] [--out bench/results]

For each case (ImageDream local, ImageDream local+pixel, MVDream) one set of random weights at
the parity sizes (conf/model/parity.yaml) is built here, exported with `to-released`
(training.model.released_layout.save_original_checkpoint) and loaded by the authors' own loader from
their checkout (bench.official). Both sides then sample the same RGBA prompt, grey, text
and seed: theirs through their scripts/demo.py or scripts/t2i.py functions, ours through
`ImageDreamPipeline` with the model family's recorded defaults, given their initial noise
(`latents=`) and a generator seeded as their torch.manual_seed. Every stage is compared: the
composited prompt, the CLIP input, the CLIP tokens, the pixel latent (a posterior sample with the
same noise), the text contexts, the cameras, the DDIM timesteps, every step's latents, the
decoded uint8 views; and whether our generator, left to draw the initial noise itself, draws
theirs. One line per case ends in EQUAL (every stage within its stated tolerance) or DIFFERENT;
the tool exits 1 on any DIFFERENT and writes bench/results/parity.md and .json (with the
checkouts' commits). `--record DIR` also writes the values CI's tests pin
(tests/bench/test_parity_recorded.py), since CI cannot reach the authors' code.

Shape legend: V views (4), C latent channels, h x w latent size, S DDIM steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results"

# (our controller, the authors' kind) per case
CASES = {
    "local": ("local", "imagedream_local"),
    "local_pixel": ("local_pixel", "imagedream_local_pixel"),
    "mvdream": ("none", "mvdream"),
}
TEXT = "a red ball"
GREY = 0.37  # background level of the prompt (their add_random_background: GREY x 255)
SEED = 23  # their scripts' default seed

# Largest max |ours - theirs| that still counts as equal, per stage. Exact stages are computed
# the same way on the same bytes; float stages run other implementations of the same maths
# (diffusers' attention and resnets against LDM's, transformers' CLIP against open_clip's) in
# float32 on the CPU; views are uint8 after truncation, so one level is the rounding of a
# float that differs in its last bits.
TOLERANCES = {
    "prompt_composite": 0.0,
    "clip_input": 1e-6,
    "clip_tokens": 1e-4,
    "pixel_latent": 1e-5,
    "context": 1e-5,
    "uncond_context": 1e-5,
    "camera": 1e-6,
    "timesteps": 0.0,
    "initial_noise_from_generator": 0.0,
    "step_latents": 1e-4,
    "views": 1.0,
}


@dataclass
class Stage:
    name: str
    max_abs: float
    tolerance: float
    shape: tuple[int, ...]

    @property
    def equal(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tolerance


@dataclass
class CaseResult:
    case: str
    seconds: float
    stages: list[Stage] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(s.equal for s in self.stages)

    def line(self) -> str:
        worst = ", ".join(f"{s.name} {s.max_abs:.2g}" for s in self.stages if not s.equal)
        verdict = "EQUAL" if self.equal else f"DIFFERENT ({worst})"
        return f"{self.case}: {len(self.stages)} stages compared: {verdict}"


def _compare(name: str, ours: Any, theirs: Any) -> Stage:
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        return Stage(name, float("inf"), TOLERANCES[name], tuple(b.shape))
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    return Stage(name, diff, TOLERANCES[name], tuple(b.shape))


# ------------------------------------------------------------------------------------ our side


def parity_prompt() -> Image.Image:
    """The prompt both sides sample: a red disc and a blue square on transparency, 96 x 80 (not
    square, so CLIP's centre crop matters), with noise under zero alpha (so a wrong composite
    shows) and a soft edge (so partial alpha is composited too)."""
    h, w = 80, 96
    yy, xx = np.mgrid[:h, :w]
    rgba = np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)
    dist = np.sqrt((yy - 40.0) ** 2 + (xx - 40.0) ** 2)
    alpha = np.clip((26.0 - dist) * 64.0, 0, 255)
    square = (np.abs(yy - 44) < 12) & (np.abs(xx - 72) < 12)
    rgba[dist < 26, :3] = (200, 60, 40)
    rgba[square, :3] = (30, 60, 210)
    rgba[..., 3] = np.where(square, 255, alpha).astype(np.uint8)
    return Image.fromarray(rgba, mode="RGBA")


def build_ours(controller: str, seed: int) -> Any:
    """Our model at the parity sizes, every weight random and non-zero (the zero-initialised
    layers get small noise, so each one shows in the output), with open_clip's tokenizer."""
    from training.model import build_imagedream, compose_model_configs
    from training.model.convert_clip import open_clip_tokenizer

    torch.manual_seed(seed)
    model = build_imagedream(*compose_model_configs("parity", controller)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    model.tokenizer = open_clip_tokenizer()
    return model


class Recorder:
    """Our intermediates, read off the pipeline's model and scheduler by instance-level
    wrappers (removed afterwards), as bench.official records theirs."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.values: dict[str, list[Any]] = {}
        self._undo: list[Callable[[], None]] = []

    def _wrap(self, obj: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(obj, name)
        setattr(obj, name, make(original))
        self._undo.append(lambda: delattr(obj, name))

    def add(self, key: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().float().cpu().numpy().copy()
        self.values.setdefault(key, []).append(value)

    def __enter__(self) -> Recorder:
        model, scheduler = self.pipe.model, self.pipe.scheduler

        def encode_image_prompt(original: Any) -> Any:
            def wrapper(prompts: Any, latent_noise: Any = None) -> Any:
                features = original(prompts, latent_noise)
                self.add("prompt_composite", np.stack(prompts.rgb))
                if prompts.clip is not None:
                    self.add("clip_input", prompts.clip)
                if features.local_tokens is not None:
                    self.add("clip_tokens", features.local_tokens)
                if features.latent is not None:
                    self.add("pixel_latent", features.latent)
                return features

            return wrapper

        def encode_text(original: Any) -> Any:
            def wrapper(texts: list[str]) -> Any:
                out = original(texts)
                self.add("text", out)
                return out

            return wrapper

        def step(original: Any) -> Any:
            def wrapper(eps: Any, t: Any, sample: Any, **kwargs: Any) -> Any:
                self.add("timesteps", int(t))
                out = original(eps, t, sample, **kwargs)
                self.add("step_latents", out.prev_sample)
                return out

            return wrapper

        self._wrap(model, "encode_image_prompt", encode_image_prompt)
        self._wrap(model, "encode_text", encode_text)
        self._wrap(scheduler, "step", step)
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()


def run_ours(
    pipe: Any, prompt: Image.Image | None, steps: int, latents: np.ndarray
) -> dict[str, np.ndarray]:
    """Our pipeline with the family's recorded defaults, the authors' initial noise and a
    generator seeded as their torch.manual_seed(SEED) (it draws the pixel latent's noise)."""
    with Recorder(pipe) as rec:
        out = pipe(
            prompt,  # None for MVDream (text only)
            prompt=TEXT + pipe.sampling_settings.text_suffix,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(SEED),
            latents=torch.from_numpy(latents)[None],
            background=GREY,
            output_type="np",
        )
    from training.pipeline import to_uint8

    values = rec.values
    result = {
        "context": values["text"][0][0],
        "uncond_context": values["text"][1][0],
        "camera": out.cameras[0],
        "timesteps": np.asarray(values["timesteps"]),
        "step_latents": np.stack([x[0] for x in values["step_latents"]]),
        "views": to_uint8(out.images[0]),
    }
    for key in ("prompt_composite", "clip_input", "clip_tokens", "pixel_latent"):
        if key in values:
            result[key] = values[key][0][0]
    return result


def generator_noise(pipe: Any) -> np.ndarray:
    """(V, C, h, w): the initial noise our pipeline draws itself from a generator seeded SEED,
    after the pixel latent's noise as the authors' order has it."""
    from training.diffusion import latent_noise_shape

    _, noise, _ = pipe.draw_noise(
        1,
        torch.Generator().manual_seed(SEED),
        latent_noise_shape(pipe.model, 1),
        initial=True,
        backgrounds=[False],
        prompt_image=pipe.prompt_image_config,
    )
    return noise[0].numpy()


# ------------------------------------------------------------------------------------- one case


def run_case(case: str, checkouts: Any, steps: int, work: Path) -> tuple[CaseResult, dict]:
    """Both sides of one case; the result and the values worth recording for CI."""
    from bench import official
    from training.model.released_layout import save_original_checkpoint
    from training.pipeline import ImageDreamPipeline

    controller, kind = CASES[case]
    start = time.perf_counter()
    model = build_ours(controller, seed=SEED)
    pipe = ImageDreamPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    settings = pipe.sampling_settings
    ckpt = save_original_checkpoint(model, work / f"{case}.pt")
    text = TEXT + settings.text_suffix
    prompt = None if kind == "mvdream" else parity_prompt()
    if prompt is None:
        theirs = official.run_mvdream(
            checkouts, ckpt, text, SEED, steps, settings.guidance_scale, size=pipe.resolution
        )
    else:
        theirs = official.run_imagedream(
            checkouts,
            kind,
            ckpt,
            prompt,
            grey_255=GREY * 255.0,
            text=text,
            seed=SEED,
            steps=steps,
            guidance_scale=settings.guidance_scale,
            size=pipe.resolution,
        )
    views = len(settings_azimuths(pipe))
    ours = run_ours(pipe, prompt, steps, theirs["x_T"][:views])
    result = CaseResult(case, 0.0)
    pairs = {
        "prompt_composite": ("prompt_composite", None),
        "clip_input": ("clip_input", 0),
        "clip_tokens": ("clip_tokens", 0),
        "pixel_latent": ("pixel_latent", 0),
        "context": ("context", 0),
        "uncond_context": ("uncond_context", 0),
        "camera": ("camera", slice(0, views)),
        "timesteps": ("timesteps", None),
        "step_latents": ("step_x_prev", (slice(None), slice(0, views))),
        "views": ("views", slice(0, views)),
    }
    for name, (their_key, index) in pairs.items():
        if their_key not in theirs:
            continue
        value = theirs[their_key]
        value = value if index is None else value[index]
        result.stages.append(_compare(name, ours.get(name), value))
    noise = generator_noise(pipe)
    result.stages.append(_compare("initial_noise_from_generator", noise, theirs["x_T"][:views]))
    result.seconds = time.perf_counter() - start
    recorded = {
        "theirs": {
            k: theirs[k] for k in ("prompt_composite", "clip_input", "pixel_latent") if k in theirs
        },
        "layout": official.official_layout(checkouts, kind),
    }
    return result, recorded


def settings_azimuths(pipe: Any) -> np.ndarray:
    return pipe.view_azimuths(pipe.sampling_settings.azimuth_start_deg)


# ------------------------------------------------------------------------------------- outputs


def write_results(
    results: list[CaseResult], out: Path, checkouts: Any, steps: int, command: str
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command,
        "steps": steps,
        "imagedream_commit": checkouts.imagedream_commit,
        "mvdream_commit": checkouts.mvdream_commit,
        "cases": [
            {
                "case": r.case,
                "equal": r.equal,
                "seconds": round(r.seconds, 1),
                "stages": [dataclasses.asdict(s) | {"equal": s.equal} for s in r.stages],
            }
            for r in results
        ],
    }
    (out / "parity.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Parity with the authors' released inference code",
        "",
        f"Command: `{command}`",
        "",
        f"- bytedance/ImageDream at {checkouts.imagedream_commit}",
        f"- bytedance/MVDream at {checkouts.mvdream_commit}",
        f"- {steps} DDIM steps; model: conf/model/parity.yaml (random weights, seed {SEED}), "
        f"exported with `to-released` and loaded by their loader; prompt 96 x 80 RGBA on grey "
        f"{GREY}; text {TEXT!r} + the family's suffix; the family's recorded defaults.",
        "",
    ]
    lines += [f"    {r.line()}" for r in results]
    for r in results:
        lines += ["", f"## {r.case} ({r.seconds:.1f} s)", ""]
        lines += ["| stage | shape | max abs difference | tolerance | |", "|---|---|---|---|---|"]
        lines += [
            f"| {s.name} | {s.shape} | {s.max_abs:.3g} | {s.tolerance:g} | "
            f"{'equal' if s.equal else 'DIFFERENT'} |"
            for s in r.stages
        ]
    (out / "parity.md").write_text("\n".join(lines) + "\n")


def write_recorded(
    recorded: dict[str, dict], checkouts: Any, steps_list: list[int], folder: Path
) -> None:
    """What CI pins (tests/bench/test_parity_recorded.py): their prompt preparation of the
    parity prompt, their DDIM timesteps, their negative text, their key layouts."""
    from bench import official_checkouts as official

    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for case, rec in recorded.items():
        for key, value in rec["theirs"].items():
            arrays[f"{case}/{key}"] = value
    np.savez_compressed(folder / "prompt_preparation.npz", **arrays)
    meta = {
        "recorded_by": "python -m bench.parity --record",
        "imagedream_commit": checkouts.imagedream_commit,
        "mvdream_commit": checkouts.mvdream_commit,
        "seed": SEED,
        "grey": GREY,
        "ddim_timesteps": {
            str(s): official.official_ddim_timesteps(checkouts, "imagedream", s).tolist()
            for s in steps_list
        },
        "negative_text": official.demo_negative_text(checkouts),
        "layouts": {case: rec["layout"] for case, rec in recorded.items()},
    }
    (folder / "recorded.json").write_text(json.dumps(meta, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--imagedream", type=Path, required=True, help="ImageDream checkout")
    parser.add_argument("--mvdream", type=Path, required=True, help="MVDream checkout")
    parser.add_argument("--steps", type=int, default=30, help="DDIM steps (30: 31 theirs)")
    parser.add_argument("--out", type=Path, default=OUT, help="where parity.md / .json go")
    parser.add_argument("--record", type=Path, default=None, help="write CI's pinned values")
    args = parser.parse_args(argv)
    from bench.official_checkouts import load_checkouts

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    checkouts = load_checkouts(args.imagedream, args.mvdream)
    results, recorded = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            result, rec = run_case(case, checkouts, args.steps, Path(tmp))
            print(result.line(), flush=True)
            results.append(result)
            recorded[case] = rec
    command = "python -m bench.parity " + " ".join(sys.argv[1:] if argv is None else argv)
    write_results(results, args.out, checkouts, args.steps, command)
    if args.record is not None:
        write_recorded(recorded, checkouts, [10, 25, 30, 50, 100, 333], args.record)
    print(f"wrote {args.out / 'parity.md'}")
    return 0 if all(r.equal for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
