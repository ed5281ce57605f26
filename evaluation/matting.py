"""Background removal for prompts without alpha (`prompt.remove_background`, off by default).

The paper's protocol evaluates on images whose background was removed (SPEC 7; the authors'
tips). For a folder of photos, `prompt.remove_background=DIR` names a local transformers
image-segmentation model (semantic, instance or panoptic; `save_pretrained` layout with its
image processor) that separates an object from its background: one of its labels must be
"background", and every other label counts as the object. Nothing is downloaded: the folder is
read with `local_files_only=True`, and a missing folder is refused by name.

The model's masks are binary, so the alpha has hard edges; prompts then go through the same
re-centring and compositing as RGBA images (evaluation/prompts.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluation.prompts import Matte

BACKGROUND_LABEL = "background"  # the model's label for what is removed (case-insensitive)


def load_matte(path: str | Path, device: str = "cpu") -> Matte:
    """A local segmentation model folder -> a `Matte`: (H, W, 3) uint8 -> (H, W) uint8 alpha."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"prompt.remove_background: no model at {folder} (expected a local transformers "
            "image-segmentation folder with config.json; nothing is downloaded)"
        )
    from transformers import AutoConfig, pipeline

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"prompt.remove_background: cannot read {folder / 'config.json'}: {exc}"
        ) from exc
    labels = [str(v) for v in (getattr(config, "id2label", None) or {}).values()]
    if BACKGROUND_LABEL not in (label.lower() for label in labels):
        raise ValueError(
            f"prompt.remove_background: the model at {folder} has no {BACKGROUND_LABEL!r} label "
            f"(its labels: {labels}); a foreground/background segmentation model is needed"
        )
    try:
        segmenter = pipeline(
            "image-segmentation",
            model=str(folder),
            device=device,
            model_kwargs={"local_files_only": True},
        )
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"prompt.remove_background: {folder} is not a transformers image-segmentation "
            f"model ({type(e).__name__}: {e})"
        ) from e

    def matte(rgb: np.ndarray) -> np.ndarray:
        segments: list[dict[str, Any]] = segmenter(Image.fromarray(rgb))
        return object_alpha(segments, rgb.shape[:2])

    return matte


def object_alpha(segments: list[dict[str, Any]], shape: tuple[int, ...]) -> np.ndarray:
    """The union of every non-background mask of a segmentation pipeline's output -> (H, W)
    uint8 alpha (255 = object)."""
    alpha = np.zeros(shape, dtype=np.uint8)
    for segment in segments:
        if str(segment["label"]).lower() != BACKGROUND_LABEL:
            alpha = np.maximum(alpha, np.asarray(segment["mask"], dtype=np.uint8))
    return alpha
