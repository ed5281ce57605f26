"""Evaluation prompts: image folders and held-out rendered rings -> `EvalPrompt`.

Folder prompts (`<name>.png|jpg|jpeg|webp`, optional `<name>.txt` caption and `<name>.json`
with `uid` / `asset_sha256` for the leakage check) follow the authors' usage tips: an RGBA image
keeps its alpha and has its object centred and resized to fill a set fraction of the frame
(`prompt.recenter`, the evaluation protocol of SPEC 7); the pipeline composites it on the grey
the model was trained with (or `prompt.background`), as training.prompt_image prepares every
prompt. An RGB image (or one with no transparent pixel) is
centre-cropped to a square, used with its background and flagged `background_kept`, unless a
matting model is given (`prompt.remove_background`, evaluation/matting.py), whose alpha then
makes it an RGBA prompt like the others.

A prompt that cannot be used (garbage or truncated image, empty file, unsupported mode, caption
that is not UTF-8, bad `<name>.json`, empty alpha) does not stop the folder: it becomes a
`PromptProblem(path, reason)` and the others are loaded. Images are decoded in full (`load()`,
with PIL's `LOAD_TRUNCATED_IMAGES` left off), so a truncated file fails here, by name. A folder
where no prompt can be used is refused.

Held-out rings (shards written by data_pipeline) give ground truth: the front view (azimuth 0)
is the prompt, the views at azimuth 0/90/180/270 are the true renders at the sampler's cameras
(which views those are is contract.cameras' ring convention: FRONT_VIEW, view_indices),
and sampling uses the ring's own elevation and FoV. Prompt and ground truth keep the render's
framing (no re-centring, or the views would not line up) and stay RGBA; after sampling, the
true renders are composited on the grey the prompt was composited on.

Shapes: H x W pixels, V views.
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from contract.cameras import FRONT_VIEW, view_indices
from training.prompt_image import composite_on_grey

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # the only decoders PIL may try on a prompt file
# 8-bit modes that convert to RGB(A) without loss of meaning; 16-bit and float images (I;16, I,
# F) would be clipped by PIL's conversion, so they are refused rather than silently mangled
IMAGE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
MAX_PIXELS = 8192 * 8192  # larger prompts are refused before decoding (they are resized to 256)
ALPHA_THRESHOLD = 8  # alpha above this (of 255) counts as object for the bounding box
# what PIL raises for a file it cannot decode (the set Pillow's own fuzzing tests accept)
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,
    EOFError,
    MemoryError,
    NotImplementedError,
    OverflowError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,  # raised as an error below
)

Matte = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 -> (H, W) uint8 alpha, 255 = object


@dataclass
class PromptConfig:
    size: int = 256  # prompt images are stored at this size (the sampler resizes to the model's)
    # grey level RGBA prompts are composited on; None = the model's (its export records the
    # range it was trained with, training.prompt_image.PromptImageConfig)
    background: float | None = None
    fill_fraction: float = 0.85  # longest object side / image side after re-centring
    recenter: bool = True  # folder prompts only; rings keep their framing
    # local transformers image-segmentation model folder that removes the background of prompts
    # without alpha (evaluation/matting.py); null -> off: they are used as they are, flagged
    remove_background: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fill_fraction <= 1.0:
            raise ValueError(f"prompts.fill_fraction must be in (0, 1], got {self.fill_fraction}")
        if self.background is not None and not 0.0 <= self.background <= 1.0:
            raise ValueError(f"prompts.background must be in [0, 1], got {self.background}")


@dataclass
class EvalPrompt:
    name: str
    image: np.ndarray  # (H, W, 4) uint8 RGBA, or (H, W, 3) RGB for a prompt without alpha
    text: str | None  # caption; None -> no CLIP(TX) for this prompt, the model gets the suffix
    source: str  # file path or shard key, for humans
    elevation_deg: float | None = None  # None -> the sampler's default
    fov_deg: float | None = None
    gt_views: np.ndarray | None = None  # (V, H, W, 4) uint8 RGBA true renders at its cameras
    uid: str | None = None
    asset_sha256: str | None = None
    # no alpha (or no transparent pixel) and no matting model: used with its background, which
    # the paper's protocol removes
    background_kept: bool = False
    background_removed: bool = False  # its alpha came from the matting model


@dataclass(frozen=True)
class PromptProblem:
    """A prompt file that was skipped, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


class PromptError(Exception):
    """One prompt cannot be used: `path` is the offending file (image, caption or sidecar)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.problem = PromptProblem(str(path), reason)


@dataclass
class PromptFolder:
    """What `load_prompt_folder` read: the usable prompts, sorted by name, and the skipped files."""

    prompts: list[EvalPrompt]
    skipped: list[PromptProblem] = field(default_factory=list)


class EmptyAlphaError(ValueError):
    """An RGBA image with no opaque pixel: nothing to centre."""


def recenter(rgba: np.ndarray, size: int, fill_fraction: float) -> np.ndarray:
    """Crop the object's alpha bounding box, scale its longest side to fill_fraction x size and
    paste it centred on a transparent size x size canvas.  (H, W, 4) -> (size, size, 4)"""
    ys, xs = np.nonzero(rgba[..., 3] > ALPHA_THRESHOLD)
    if len(ys) == 0:
        raise EmptyAlphaError("the image's alpha channel is empty: no object to centre")
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
    return np.array(square.resize((size, size), Image.Resampling.LANCZOS))  # writable


def preprocess(image: Image.Image, cfg: PromptConfig, keep_framing: bool = False) -> np.ndarray:
    """Any PIL image -> (size, size, 4) RGBA uint8 prompt, or (size, size, 3) RGB without
    alpha (see the module docstring). Nothing is composited here: the pipeline does it."""
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
    return rgba


def as_sampled(prompt: EvalPrompt, shown: np.ndarray, level: float) -> EvalPrompt:
    """The prompt as it was sampled: its image as the model saw it (`shown`, composited by the
    pipeline) and its true views composited on the same grey `level` (mid-grey for an RGB
    prompt, NaN). The sampler returns its views in the true views' order (front first)."""
    gt = prompt.gt_views
    if gt is not None:
        gt = composite_on_grey(gt, 0.5 if np.isnan(level) else level)
    return replace(prompt, image=shown, gt_views=gt)


def load_prompt_folder(
    folder: str | Path, cfg: PromptConfig, matte: Matte | None = None
) -> PromptFolder:
    """Every image of a folder, sorted by name; unusable ones are skipped and listed (see the
    module docstring). `matte` removes the background of prompts without alpha (None: kept)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prompt folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    out = PromptFolder(prompts=[])
    for path in files:
        try:
            out.prompts.append(load_prompt(path, cfg, matte))
        except PromptError as e:
            out.skipped.append(e.problem)
        except Exception as e:  # not a known bad-file error: a bug, raised, but with the file
            e.add_note(f"while loading the prompt {path}")
            raise
    if not out.prompts:
        lines = "; ".join(p.line() for p in out.skipped)
        raise ValueError(f"none of the {len(files)} prompt images in {folder} can be used: {lines}")
    return out


def load_prompt(path: Path, cfg: PromptConfig, matte: Matte | None = None) -> EvalPrompt:
    """One folder prompt: image, caption, ids. Raises `PromptError` naming the bad file."""
    image = read_image(path)  # RGB or RGBA
    background_kept = not has_transparency(image)
    background_removed = False
    if background_kept and matte is not None:
        image = remove_background(image, matte, path)
        background_kept, background_removed = False, True
    elif background_kept:
        image = image.convert("RGB")  # an opaque RGBA image is a photo: centre-cropped as RGB
    try:
        pixels = preprocess(image, cfg)
    except EmptyAlphaError as e:
        raise PromptError(path, str(e)) from e
    text = read_caption(path.with_suffix(".txt"))
    ids = read_sidecar(path.with_suffix(".json"))
    return EvalPrompt(
        name=path.stem,
        image=pixels,
        text=text,
        source=str(path),
        uid=ids.get("uid"),
        asset_sha256=ids.get("asset_sha256"),
        background_kept=background_kept,
        background_removed=background_removed,
    )


def read_image(path: Path) -> Image.Image:
    """Decode a prompt file in full -> an in-memory RGB or RGBA image (RGBA when the file has
    alpha). Raises `PromptError` for anything PIL cannot decode, with PIL's reason."""
    try:
        if path.stat().st_size == 0:
            raise PromptError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                if img.mode not in IMAGE_MODES:
                    raise PromptError(
                        path, f"unsupported image mode {img.mode} (save it as 8-bit RGB or RGBA)"
                    )
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise PromptError(
                        path, f"{width} x {height} pixels, over the {MAX_PIXELS:,}-pixel limit"
                    )
                img.load()  # the full decode: a truncated file raises here, not later
                alpha = img.mode in ("RGBA", "LA", "La", "PA", "RGBa") or (
                    img.mode == "P" and "transparency" in img.info
                )
                return img.convert("RGBA" if alpha else "RGB")
    except UnidentifiedImageError as e:
        raise PromptError(path, f"not a readable {'/'.join(IMAGE_FORMATS)} image") from e
    except DECODE_ERRORS as e:
        raise PromptError(path, f"cannot decode the image ({type(e).__name__}: {e})") from e


def read_caption(path: Path) -> str | None:
    """`<name>.txt`, stripped; None when absent or empty."""
    if not path.exists():
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except UnicodeDecodeError as e:
        raise PromptError(path, f"caption is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise PromptError(path, f"cannot read the caption ({e})") from e


def read_sidecar(path: Path) -> dict[str, str]:
    """`<name>.json` with optional string `uid` / `asset_sha256`; {} when absent."""
    if not path.exists():
        return {}
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise PromptError(path, f"not a readable JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(ids, dict):
        raise PromptError(path, f"must hold a JSON object, got {type(ids).__name__}")
    for key in ("uid", "asset_sha256"):
        if ids.get(key) is not None and not isinstance(ids[key], str):
            raise PromptError(path, f"{key} must be a string, got {ids[key]!r}")
    return {k: ids[k] for k in ("uid", "asset_sha256") if ids.get(k) is not None}


def has_transparency(image: Image.Image) -> bool:
    """Whether an RGB/RGBA image has a removed background: alpha with a transparent pixel."""
    if image.mode != "RGBA":
        return False
    return bool((np.asarray(image)[..., 3] <= ALPHA_THRESHOLD).any())


def remove_background(image: Image.Image, matte: Matte, path: Path) -> Image.Image:
    """RGB(A) image -> RGBA with the matting model's alpha."""
    rgb = np.asarray(image.convert("RGB"))
    alpha = np.asarray(matte(rgb))
    if alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
        raise ValueError(
            f"the matting model returned a {alpha.dtype} {alpha.shape} alpha for a "
            f"{rgb.shape[:2]} image; expected uint8 (H, W)"
        )
    if not (alpha > ALPHA_THRESHOLD).any():
        raise PromptError(path, "background removal found no object (the matte is empty)")
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def load_heldout_rings(
    shards: str | Path | list[str],
    cfg: PromptConfig,
    azimuths_deg: Iterable[float],
    limit: int | None = None,
    allow_incomplete: bool = False,
) -> list[EvalPrompt]:
    """Held-out rings as prompts with ground truth (see the module docstring); a folder needs a
    complete dataset index unless `allow_incomplete`."""
    from contract.shard_reader import read_rings

    azimuths = list(azimuths_deg)
    prompts: list[EvalPrompt] = []
    for rec in read_rings(shards, allow_incomplete=allow_incomplete):
        if limit is not None and len(prompts) >= limit:
            break
        indices = view_indices(rec.num_views, azimuths)
        rgba = rec.images[rec.views.index(FRONT_VIEW)] if FRONT_VIEW in rec.views else None
        if rgba is None:
            raise ValueError(f"ring {rec.key} lacks its front view (index {FRONT_VIEW})")
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
