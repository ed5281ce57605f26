"""Evaluation prompts: image folders and held-out rendered rings -> `EvalPrompt`.

Folder prompts (`<name>.png|jpg|jpeg|webp`, optional `<name>.txt` caption and `<name>.json`
with `uid` / `asset_sha256` for the leakage check) follow the authors' usage tips: an RGBA image
has its background removed (composited on a plain colour) and its object centred and resized to
fill a set fraction of the frame; an RGB image is centre-cropped to a square and used as is
(no background removal is possible without a matting model).

Held-out rings (shards written by data_pipeline) give ground truth: the front view (azimuth 0)
is the prompt, the views at azimuth 0/90/180/270 are the true renders at the sampler's cameras,
and sampling uses the ring's own elevation and FoV. Prompt and ground truth keep the render's
framing (no re-centring, or the views would not line up) and share one background colour.

Shapes: H x W pixels, V views.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ALPHA_THRESHOLD = 8  # alpha above this (of 255) counts as object for the bounding box


@dataclass
class PromptConfig:
    size: int = 256  # prompt images are stored at this size (the sampler resizes to the model's)
    background: float = 1.0  # grey level of the composited background, 1.0 = white
    fill_fraction: float = 0.85  # longest object side / image side after re-centring
    recenter: bool = True  # folder prompts only; rings keep their framing

    def __post_init__(self) -> None:
        if not 0.0 < self.fill_fraction <= 1.0:
            raise ValueError(f"prompts.fill_fraction must be in (0, 1], got {self.fill_fraction}")
        if not 0.0 <= self.background <= 1.0:
            raise ValueError(f"prompts.background must be in [0, 1], got {self.background}")


@dataclass
class EvalPrompt:
    name: str
    image: np.ndarray  # (H, W, 3) uint8, background composited
    text: str | None  # caption; None -> no CLIP(TX) for this prompt, empty text for the model
    source: str  # file path or shard key, for humans
    elevation_deg: float | None = None  # None -> the sampler's default
    fov_deg: float | None = None
    gt_views: np.ndarray | None = None  # (V, H, W, 3) uint8 true renders at the sampler cameras
    uid: str | None = None
    asset_sha256: str | None = None


def composite(rgba: np.ndarray, background: float) -> np.ndarray:
    """(H, W, 4) uint8 straight alpha -> (H, W, 3) uint8 over a grey level in [0, 1]."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgb * alpha + (background * 255.0) * (1.0 - alpha)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def recenter(rgba: np.ndarray, size: int, fill_fraction: float) -> np.ndarray:
    """Crop the object's alpha bounding box, scale its longest side to fill_fraction x size and
    paste it centred on a transparent size x size canvas.  (H, W, 4) -> (size, size, 4)"""
    ys, xs = np.nonzero(rgba[..., 3] > ALPHA_THRESHOLD)
    if len(ys) == 0:
        raise ValueError("the image's alpha channel is empty: no object to centre")
    crop = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape[:2]
    scale = fill_fraction * size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # resize premultiplied colour so transparent pixels' colour does not bleed into edges
    premult = crop.astype(np.float32)
    premult[..., :3] *= premult[..., 3:4] / 255.0
    channels = [
        np.asarray(
            Image.fromarray(premult[..., c]).resize((new_w, new_h), Image.Resampling.LANCZOS)
        )
        for c in range(4)
    ]
    resized = np.clip(np.stack(channels, axis=-1), 0, 255)
    alpha = resized[..., 3:4]
    with np.errstate(divide="ignore", invalid="ignore"):
        resized[..., :3] = np.where(alpha > 0, resized[..., :3] * 255.0 / alpha, 0)
    canvas = np.zeros((size, size, 4), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = np.clip(np.round(resized), 0, 255).astype(
        np.uint8
    )
    return canvas


def _resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(rgb[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))


def preprocess(image: Image.Image, cfg: PromptConfig, keep_framing: bool = False) -> np.ndarray:
    """Any PIL image -> (size, size, 3) uint8 prompt (see the module docstring)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return _resize_square(np.asarray(image.convert("RGB")), cfg.size)
    rgba = np.asarray(image.convert("RGBA"))
    if cfg.recenter and not keep_framing:
        rgba = recenter(rgba, cfg.size, cfg.fill_fraction)
    elif rgba.shape[:2] != (cfg.size, cfg.size):
        rgba = np.asarray(
            Image.fromarray(rgba).resize((cfg.size, cfg.size), Image.Resampling.LANCZOS)
        )
    return composite(rgba, cfg.background)


def load_prompt_folder(folder: str | Path, cfg: PromptConfig) -> list[EvalPrompt]:
    """Every image of a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prompt folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    prompts = []
    for path in files:
        with Image.open(path) as img:
            img.load()
            image = preprocess(img, cfg)
        caption = path.with_suffix(".txt")
        text = caption.read_text().strip() if caption.exists() else None
        sidecar = path.with_suffix(".json")
        ids = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        prompts.append(
            EvalPrompt(
                name=path.stem,
                image=image,
                text=text or None,
                source=str(path),
                uid=ids.get("uid"),
                asset_sha256=ids.get("asset_sha256"),
            )
        )
    return prompts


def target_view_indices(num_views: int, azimuths_deg: Iterable[float]) -> list[int]:
    """Indices of a ring's views at the given azimuths (SPEC 3: 0, V/4, V/2, 3V/4 for
    0/90/180/270); refuses a ring that has no view at one of them."""
    step = 360.0 / num_views
    out = []
    for az in azimuths_deg:
        index = az / step
        if abs(index - round(index)) > 1e-6:
            raise ValueError(f"a ring of {num_views} views has no view at azimuth {az}")
        out.append(int(round(index)) % num_views)
    return out


def load_heldout_rings(
    shards: str | Path | list[str],
    cfg: PromptConfig,
    azimuths_deg: Iterable[float],
    limit: int | None = None,
) -> list[EvalPrompt]:
    """Held-out rings as prompts with ground truth (see the module docstring)."""
    from data_pipeline.reader import read_rings

    azimuths = list(azimuths_deg)
    prompts: list[EvalPrompt] = []
    for rec in read_rings(shards):
        if limit is not None and len(prompts) >= limit:
            break
        indices = target_view_indices(rec.num_views, azimuths)
        rgba = rec.images[rec.views.index(0)] if 0 in rec.views else None
        if rgba is None:
            raise ValueError(f"ring {rec.key} lacks its front view (index 0)")
        views = [rec.images[rec.views.index(i)] for i in indices]

        def prep(x: np.ndarray) -> np.ndarray:
            return preprocess(Image.fromarray(x, mode="RGBA"), cfg, keep_framing=True)

        prompts.append(
            EvalPrompt(
                name=rec.key,
                image=prep(rgba),
                text=rec.meta.caption or None,
                source=rec.key,
                elevation_deg=float(rec.meta.elevation_deg),
                fov_deg=float(rec.meta.fov_deg),
                gt_views=np.stack([prep(v) for v in views]),
                uid=rec.meta.uid,
                asset_sha256=rec.meta.asset_sha256,
            )
        )
    return prompts
