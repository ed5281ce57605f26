"""Checks on a rendered ring before it may become a sample; raises `Refusal` when one fails.

`validate_ring(ring)` checks that every view decodes to (H, W, 4) at the ring's resolution, that no
view has an empty alpha mask (Reason.EMPTY_RENDER: object outside the frame, invisible material,
failed import), and that every pose is finite with an orthonormal, right-handed rotation
(Reason.INVALID_POSE). `border_fraction(alpha)` measures how much of the image border the object
covers (SPEC 3: MVDream's framing lets objects leave the frame; we record by how much).

Shapes: V views, H, W pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from contract.schema import SchemaError, decode_png
from data_pipeline.refusals import Reason, Refusal

if TYPE_CHECKING:
    from data_pipeline.render.settings import RenderedRing

ALPHA_THRESHOLD = 0.5  # a pixel belongs to the object when alpha > 0.5
MIN_OBJECT_PIXELS = 1  # a view with fewer covered pixels is empty
ORTHONORMAL_TOL = 1e-4


def object_mask(rgba: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose alpha exceeds ALPHA_THRESHOLD.  (H, W, 4) uint8 -> (H, W)"""
    return rgba[..., 3] > ALPHA_THRESHOLD * 255


def border_fraction(alpha: np.ndarray) -> float:
    """Fraction of the image's border pixels (outermost rows and columns) covered by the object.

    `alpha` is (H, W) in [0, 1] float or uint8 0-255, or (H, W, 4) RGBA uint8. 0 means the object
    stays inside the frame; anything above 0 means it touches or leaves the frame.
    """
    alpha = np.asarray(alpha)
    if alpha.ndim == 3:
        alpha = alpha[..., 3]
    threshold = ALPHA_THRESHOLD * 255 if alpha.dtype == np.uint8 else ALPHA_THRESHOLD
    covered = alpha > threshold
    height, width = covered.shape
    if height < 2 or width < 2:
        return float(covered.mean())
    border = np.concatenate(
        [covered[0, :], covered[-1, :], covered[1:-1, 0], covered[1:-1, -1]]
    )  # (2W + 2H - 4,) each border pixel once
    return float(border.mean())


def check_pose(c2w: np.ndarray, name: str, index: int) -> None:
    """Raise INVALID_POSE unless c2w is a finite rigid transform (orthonormal, det +1)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise Refusal(Reason.INVALID_POSE, name, f"view {index}: pose is not a finite 4x4 matrix")
    rot = c2w[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=ORTHONORMAL_TOL):
        raise Refusal(Reason.INVALID_POSE, name, f"view {index}: rotation is not orthonormal")
    if abs(np.linalg.det(rot) - 1.0) > ORTHONORMAL_TOL:
        raise Refusal(Reason.INVALID_POSE, name, f"view {index}: rotation is a reflection")
    if not np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0]):
        raise Refusal(Reason.INVALID_POSE, name, f"view {index}: last row is not 0 0 0 1")


def decode_views(ring: RenderedRing) -> np.ndarray:
    """Decode and shape-check every view.  -> (V, H, W, 4) uint8"""
    meta, name = ring.meta, ring.meta.asset_path
    if len(ring.views_png) != len(meta.azimuths_deg) or len(meta.c2w) != len(meta.azimuths_deg):
        raise Refusal(
            Reason.RENDER_ERROR,
            name,
            f"{len(ring.views_png)} images, {len(meta.c2w)} poses, {len(meta.azimuths_deg)} "
            "azimuths: they must agree",
        )
    views = []
    for i, png in enumerate(ring.views_png):
        try:
            rgba = decode_png(png, f"{meta.uid}_r{meta.ring}", i)
        except SchemaError as exc:
            raise Refusal(Reason.RENDER_ERROR, name, str(exc)) from exc
        expected = (meta.resolution, meta.resolution, 4)
        if rgba.shape != expected:
            raise Refusal(
                Reason.RENDER_ERROR, name, f"view {i} is {rgba.shape}, expected {expected}"
            )
        views.append(rgba)
    return np.stack(views)


def validate_ring(ring: RenderedRing) -> np.ndarray:
    """Raise `Refusal` if the ring is unusable; returns the decoded views (V, H, W, 4) uint8."""
    meta, name = ring.meta, ring.meta.asset_path
    for i, c2w in enumerate(meta.c2w):
        check_pose(np.asarray(c2w), name, i)
    if not all(np.isfinite([meta.fov_deg, meta.distance, meta.elevation_deg])):
        raise Refusal(Reason.INVALID_POSE, name, "FoV, distance or elevation is not finite")
    if not 0.0 < meta.fov_deg < 180.0:
        raise Refusal(Reason.INVALID_POSE, name, f"FoV {meta.fov_deg} is outside (0, 180)")
    views = decode_views(ring)
    empty = [i for i, rgba in enumerate(views) if object_mask(rgba).sum() < MIN_OBJECT_PIXELS]
    if empty:
        raise Refusal(
            Reason.EMPTY_RENDER,
            name,
            f"ring {meta.ring}: alpha is empty in views {empty} of {len(views)}",
        )
    return views
