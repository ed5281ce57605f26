"""Do a ring's stored cameras agree with its images? The normalised mesh, projected with each
view's stored c2w and FoV (contract.cameras), must cover the view's alpha mask.

`ring_iou(mesh, meta, rgba)` is the per-view intersection over union of that silhouette and the
alpha mask (validate.object_mask). A wrong axis conversion, normalisation, FoV axis or camera pose
scores clearly lower (tests/data_pipeline/test_render.py shows by how much); `make gpu-check`
runs it on GPU renders. Needs the mesh (data_pipeline.formats.mesh_inspection.load_normalised_mesh), so it is a
check for known objects, not part of every job.

Shapes: V views, H = W = size pixels, P vertices, F faces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from contract import cameras
from data_pipeline.render.ring_checks import object_mask


def silhouette(
    vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, fov_deg: float, size: int
) -> np.ndarray:
    """(size, size) bool: the triangles (F, 3) of `vertices` (P, 3, world) seen by the camera.
    ValueError when a vertex lies behind the camera (the projection would fold)."""
    uv, depth = cameras.project(vertices, c2w, fov_deg, size)
    if not (depth > 0).all():
        raise ValueError("the camera must see every vertex in front of it")
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for tri in faces:
        draw.polygon([tuple(p) for p in uv[tri]], fill=255)
    return np.asarray(image) > 127


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (0 when both are empty)."""
    return float((a & b).sum() / max((a | b).sum(), 1))


def ring_iou(mesh: Any, meta: Any, rgba: np.ndarray) -> list[float]:
    """Per view: IoU of the mesh's silhouette under the stored camera with the alpha mask.
    mesh: a trimesh.Trimesh in the normalised frame; meta: RingMeta; rgba (V, H, W, 4) uint8."""
    size = meta.resolution
    return [
        iou(
            object_mask(view),
            silhouette(mesh.vertices, mesh.faces, np.array(c2w), meta.fov_deg, size),
        )
        for view, c2w in zip(rgba, meta.c2w, strict=True)
    ]
