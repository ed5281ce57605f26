"""The built-in example objects: deterministic GLBs with captions, textured, and asymmetric."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import trimesh

from data_pipeline.formats.mesh_inspection import inspect_asset, load_normalised_mesh
from data_pipeline.sources.demo_objects import (
    OBJECTS,
    PALETTE,
    build_mesh,
    palette_uv,
    write_builtin_samples,
)


def test_writes_every_object_with_a_caption(tmp_path):
    paths = write_builtin_samples(tmp_path)
    assert [p.name for p in paths] == [f"{name}.glb" for name in OBJECTS]
    for path in paths:
        caption = path.with_suffix(".txt").read_text().strip()
        assert caption == OBJECTS[path.stem][0]
        report = inspect_asset(path)
        assert report.num_faces > 0


def test_bytes_are_deterministic(tmp_path):
    first = write_builtin_samples(tmp_path / "a")
    second = write_builtin_samples(tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_glb_is_textured_with_the_palette(tmp_path, name):
    (path,) = [p for p in write_builtin_samples(tmp_path) if p.stem == name]
    mesh = trimesh.load(path, force="mesh")
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    # Every part's UV lands on its palette colour.
    height, width = image.shape[:2]
    for part in OBJECTS[name][1]:
        colour = part.colour
        u, v = palette_uv(colour)
        assert tuple(image[int(v * height), int(u * width)]) == PALETTE[colour]


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_objects_are_asymmetric_left_right_and_front_back(name):
    """Mirroring x (left-right) or y (front-back) changes the coloured geometry, so views from
    opposite or mirrored cameras differ."""
    mesh = build_mesh(name)
    uv = mesh.visual.uv  # stands in for colour: one palette cell per part
    points = np.concatenate([mesh.triangles_center, uv[mesh.faces].mean(axis=1)], axis=1)
    for axis in (0, 1):
        mirrored = points.copy()
        mirrored[:, axis] *= -1
        # For every mirrored face, the nearest original face (position and colour).
        gaps = np.linalg.norm(points[None, :, :] - mirrored[:, None, :], axis=-1).min(axis=1)
        assert gaps.max() > 0.05, f"{name} is symmetric under flipping axis {axis}"


def test_front_faces_glTF_plus_z_and_blender_minus_y(tmp_path):
    """The house's door is its most -Y part in Blender's frame (glTF +Z, facing azimuth 0)."""
    (path,) = [p for p in write_builtin_samples(tmp_path) if p.stem == "house"]
    gltf = trimesh.load(path, force="mesh")
    door_uv = np.array(palette_uv("door_blue"))
    uv = gltf.visual.uv.copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # trimesh flips v on load
    door = np.linalg.norm(uv - door_uv, axis=1) < 1e-3
    assert door.any()
    assert gltf.vertices[door, 2].min() > 0.3  # glTF: at the front, +Z
    normalised = load_normalised_mesh(path)
    assert normalised.vertices[door, 1].max() < -0.3  # Blender: at the front, -Y
