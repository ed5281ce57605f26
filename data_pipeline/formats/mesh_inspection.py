"""Asset inspection before Blender: is this file an object we can render, and how is it normalised?

`inspect_asset(path)` runs the format's own checks (data_pipeline.formats: headers, sizes,
indices, references) and, for the formats trimesh reads (glTF, OBJ, PLY, STL, OFF), loads it with
trimesh (no Blender); it either returns an `AssetReport` or raises `Refusal` with a reason code
(data_pipeline.refusals); no other exception escapes it, whatever the bytes. It catches what
Blender would otherwise render as garbage or crash on: unsupported formats (glTF 1.0, ASCII FBX,
HDF5 Alembic included), truncated or undecodable files, glTF files whose buffers or images are
missing, point clouds, NaN/inf positions, face indices out of range and degenerate extents.
Defects Blender renders through are reported, not refused: `AssetReport.notes` (an OBJ whose
.mtl or texture file is missing renders untextured), which the renderer copies into every ring's
`RingMeta.notes`. The scene formats only Blender reads (FBX, COLLADA, USD, Alembic, .blend) get
header checks here and their geometry checks after Blender's import (data_pipeline.render.blender); their
report has no geometry (`has_geometry` False).

Frames: the report's bounding box and normalisation are in Blender's world frame (SPEC 2, z up),
i.e. after the axis conversion Blender's importer applies: glTF and OBJ are y-up files that Blender
turns z-up ((x, y, z) -> (x, -z, y), so glTF +Z "front" becomes Blender -Y); PLY, STL and OFF
import unchanged. Normalisation (SPEC 2): subtract the bounding-box centre, multiply by `scale` so
the largest side is 1.

Shapes: P points, F faces.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.formats import FORMATS, OBJECT_EXTENSIONS, format_for
from data_pipeline.refusals import Reason, Refusal

SUPPORTED_EXTENSIONS = OBJECT_EXTENSIONS
# A bounding box whose largest side is below this (in file units) cannot be normalised sensibly.
MIN_EXTENT = 1e-6

# Maps file-frame points to Blender's world frame: (x, y, z) -> (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class AssetReport:
    """What inspection learnt about an asset; bbox and normalisation in Blender's world frame."""

    path: str
    sha256: str
    format: str  # extension without the dot: "glb", "obj", "fbx", "usdz", ...
    num_vertices: int  # 0 when not loaded before Blender (has_geometry False)
    num_faces: int
    bbox_min: tuple[float, float, float]
    bbox_max: tuple[float, float, float]
    notes: tuple[str, ...] = ()  # defects that do not stop the render (missing texture, ...)
    has_geometry: bool = True  # False: a scene format only Blender reads; checked after import

    @property
    def extent(self) -> np.ndarray:
        """(3,) side lengths of the bounding box."""
        return np.asarray(self.bbox_max) - np.asarray(self.bbox_min)

    @property
    def centre(self) -> np.ndarray:
        """(3,) bounding-box centre, moved to the origin by normalisation."""
        return (np.asarray(self.bbox_max) + np.asarray(self.bbox_min)) / 2.0

    @property
    def scale(self) -> float:
        """Uniform factor making the largest bounding-box side 1 (SPEC 2)."""
        return 1.0 / float(self.extent.max())

    def normalise(self, points: np.ndarray) -> np.ndarray:
        """Blender-frame points -> normalised frame (inside [-0.5, 0.5]^3).  (P, 3) -> (P, 3)"""
        return (np.asarray(points, dtype=np.float64) - self.centre) * self.scale


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_blender_frame(points: np.ndarray, fmt: str) -> np.ndarray:
    """Points as the file stores them -> Blender's world frame after import.  (P, 3) -> (P, 3)"""
    points = np.asarray(points, dtype=np.float64)
    if FORMATS["." + fmt].y_up:
        return points @ Y_UP_TO_Z_UP.T
    return points


def inspect_asset(path: str | Path) -> AssetReport:
    """Load `path` without Blender and report on it, or raise `Refusal` naming the reason."""
    path = Path(path)
    name = str(path)
    ext = path.suffix.lower()
    spec = format_for(path)
    if spec is None:
        raise Refusal(
            Reason.UNSUPPORTED_FORMAT,
            name,
            f"extension {ext or '(none)'!r} is not one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    if not path.is_file():
        raise Refusal(Reason.FETCH_FAILED, name, "file does not exist")
    sha = file_sha256(path)
    fmt = ext[1:]
    try:  # format-specific checks the generic loader (or Blender's importer) would miss
        notes = spec.check(path)
    except OSError as exc:
        raise Refusal(Reason.FETCH_FAILED, name, f"cannot read the file: {exc}") from exc
    if not spec.trimesh:
        origin = (0.0, 0.0, 0.0)
        return AssetReport(name, sha, fmt, 0, 0, origin, origin, tuple(notes), has_geometry=False)

    vertices, faces_per_mesh, num_faces = _load_world_vertices(path, fmt)
    if num_faces == 0:
        raise Refusal(
            Reason.NO_FACES, name, "no triangles or polygons (point cloud or empty scene)"
        )
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise Refusal(
            Reason.NONFINITE_VERTICES, name, f"{bad} of {len(vertices)} vertices are NaN or inf"
        )
    for num_vertices, faces in faces_per_mesh:
        if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
            raise Refusal(
                Reason.INDEX_OUT_OF_RANGE,
                name,
                f"face index {int(faces.max())} with only {num_vertices} vertices",
            )
    world = to_blender_frame(vertices, fmt)
    lo, hi = world.min(axis=0), world.max(axis=0)
    largest = float((hi - lo).max())
    if not math.isfinite(largest) or largest < MIN_EXTENT:
        raise Refusal(
            Reason.DEGENERATE_EXTENT,
            name,
            f"largest bounding-box side is {largest:.3g} (< {MIN_EXTENT:g}): cannot normalise",
        )
    return AssetReport(
        path=name,
        sha256=sha,
        format=fmt,
        num_vertices=len(vertices),
        num_faces=num_faces,
        bbox_min=(float(lo[0]), float(lo[1]), float(lo[2])),
        bbox_max=(float(hi[0]), float(hi[1]), float(hi[2])),
        notes=tuple(notes),
    )


def load_normalised_mesh(path: str | Path):
    """The asset as one trimesh.Trimesh in the normalised Blender frame (for tests and checks).

    Node transforms are applied; skinning and animation are not.
    """
    import trimesh

    report = inspect_asset(path)
    if not report.has_geometry:
        raise ValueError(f"{path}: .{report.format} is not loaded without Blender")
    scene = _load_scene(Path(path))
    merged: Any = scene.dump(concatenate=True) if isinstance(scene, trimesh.Scene) else scene
    return trimesh.Trimesh(
        vertices=report.normalise(to_blender_frame(merged.vertices, report.format)),
        faces=np.asarray(merged.faces),
        process=False,
    )


# ----------------------------------------------------------------------------- loading


def _load_scene(path: Path):
    import trimesh

    try:
        return trimesh.load(str(path), force="scene", process=False)
    except Refusal:
        raise
    except Exception as exc:  # trimesh raises many types for malformed files
        raise Refusal(
            Reason.UNDECODABLE, str(path), f"trimesh cannot load it: {type(exc).__name__}: {exc}"
        ) from exc


def _load_world_vertices(path: Path, fmt: str):
    """All vertices with node transforms applied (file frame), per-mesh (count, faces), faces."""
    import trimesh

    scene = _load_scene(path)
    chunks, faces_per_mesh, num_faces = [], [], 0
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry[geom_name]
        try:  # a loader may hand back ragged or flat data for a malformed file
            verts = np.asarray(geom.vertices, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise Refusal(Reason.UNDECODABLE, str(path), f"unreadable vertices: {exc}") from exc
        if verts.size and (verts.ndim != 2 or verts.shape[1] != 3):
            raise Refusal(
                Reason.UNDECODABLE, str(path), f"vertices of shape {verts.shape}, not (N, 3)"
            )
        verts = verts.reshape(-1, 3)
        if len(verts):
            # Homogeneous transform by hand: trimesh's helpers choke on NaN input.
            with np.errstate(invalid="ignore", over="ignore"):
                chunks.append(verts @ transform[:3, :3].T + transform[:3, 3])
        if isinstance(geom, trimesh.Trimesh):
            faces = np.asarray(geom.faces)
            faces_per_mesh.append((len(verts), faces))
            num_faces += len(faces)
    if not chunks:
        raise Refusal(Reason.NO_FACES, str(path), "the file holds no geometry")
    return np.concatenate(chunks), faces_per_mesh, num_faces
