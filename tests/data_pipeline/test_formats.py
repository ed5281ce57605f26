"""The format registry and each format's pre-Blender check: a small valid file (written here, by
hand or with trimesh) passes, a truncated or garbage one is refused with the documented reason.
No Blender here; test_render.py exports real files with Blender and renders them."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.formats import FORMATS, OBJECT_EXTENSIONS, partition
from data_pipeline.formats.mesh_inspection import inspect_asset
from data_pipeline.refusals import Reason, Refusal
from tests.data_pipeline.assets import (
    DAE,
    USDA,
    VALID,
    blend_bytes,
    fbx_bytes,
    ogawa_bytes,
    usdc_bytes,
    usdz_bytes,
)

# Objaverse-XL's renderer imports these (scripts/rendering/blender_script.py), plus OFF.
OBJAVERSE_XL = [
    ".obj", ".glb", ".gltf", ".usd", ".usda", ".usdc", ".usdz", ".fbx", ".stl", ".dae", ".ply",
    ".abc", ".blend",
]  # fmt: skip


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_every_objaverse_xl_format_and_off_has_a_check_and_an_importer():
    assert set(OBJAVERSE_XL) | {".off"} == set(OBJECT_EXTENSIONS) == set(FORMATS)
    for ext, spec in FORMATS.items():
        assert spec.ext == ext and callable(spec.check)
        assert spec.importer == "append" or "." in spec.importer
        assert spec.convert_to is None or FORMATS[spec.convert_to].convert_to is None


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_files_pass_their_check(tmp_path, name):
    report = inspect_asset(_write(tmp_path, name, VALID[name]()))
    assert report.format == Path(name).suffix[1:]
    spec = FORMATS[Path(name).suffix]
    assert report.has_geometry is spec.trimesh  # scene formats: geometry is checked in Blender
    if spec.trimesh:
        assert report.num_faces > 0


def test_off_is_read_by_trimesh_in_blenders_frame(tmp_path):
    report = inspect_asset(_write(tmp_path, "box.off", VALID["box.off"]()))
    np.testing.assert_allclose(report.extent, [1.0, 2.0, 0.5])  # imported unchanged (z up)
    glued = VALID["box.off"]().decode().replace("OFF\n", "OFF", 1)  # "OFF8 12 0": ModelNet
    assert inspect_asset(_write(tmp_path, "glued.off", glued.encode())).num_faces == 12


def _cut(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


# file name, bytes, the reason, a phrase of the detail
REFUSED = [
    ("cut.off", lambda: _cut(VALID["box.off"]()), Reason.UNDECODABLE, "truncated"),
    ("junk.off", lambda: b"hello world\n", Reason.UNDECODABLE, "not an OFF file"),
    ("4d.off", lambda: b"4OFF\n1 0 0\n0 0 0 0\n", Reason.UNSUPPORTED_FORMAT, "4OFF"),
    ("bin.off", lambda: b"OFF BINARY\n", Reason.UNSUPPORTED_FORMAT, "binary OFF"),
    ("idx.off", lambda: b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", Reason.INDEX_OUT_OF_RANGE, "vertex 7"),
    ("nofaces.off", lambda: b"OFF\n1 0 0\n0 0 0\n", Reason.NO_FACES, "no faces"),
    ("cut.stl", lambda: _cut(VALID["box_binary.stl"]()), Reason.UNDECODABLE, "truncated binary STL"),
    ("cut_ascii.stl", lambda: _cut(VALID["box_ascii.stl"]()), Reason.UNDECODABLE, "endsolid"),
    ("empty.stl", lambda: bytes(80) + struct.pack("<I", 0), Reason.NO_FACES, "0 triangles"),
    ("tiny.stl", lambda: b"\x00\x01", Reason.UNDECODABLE, "too short"),
    ("cut.fbx", lambda: fbx_bytes()[:-5], Reason.UNDECODABLE, "truncated"),
    ("cut64.fbx", lambda: fbx_bytes(7500)[:40], Reason.UNDECODABLE, "truncated"),
    ("junk.fbx", lambda: b"Kaydara" + bytes(40), Reason.UNDECODABLE, "not an FBX"),
    ("ascii.fbx", lambda: b"; FBX 7.3.0 project file\nFBXHeaderExtension:  {\n", Reason.UNSUPPORTED_FORMAT, "ASCII FBX"),
    ("old.fbx", lambda: fbx_bytes(6100), Reason.UNSUPPORTED_FORMAT, "6100"),
    ("cut.dae", lambda: _cut(DAE.encode()), Reason.UNDECODABLE, "</COLLADA>"),
    ("junk.dae", lambda: b"<html><body>not a scene</body></html>", Reason.UNDECODABLE, "COLLADA"),
    ("cut.usdc", lambda: _cut(usdc_bytes(), 0.9), Reason.UNDECODABLE, "truncated"),
    ("ascii.usdc", USDA.encode, Reason.UNDECODABLE, "PXR-USDC"),
    ("junk.usda", lambda: b"PK\x03\x04 not text", Reason.UNDECODABLE, "#usda"),
    ("junk.usd", lambda: bytes(100), Reason.UNDECODABLE, "magic"),
    ("cut.usdz", lambda: _cut(usdz_bytes()), Reason.UNDECODABLE, "zip"),
    ("png_first.usdz", lambda: usdz_bytes(("a.png", b"x")), Reason.UNDECODABLE, "first file"),
    ("bad_layer.usdz", lambda: usdz_bytes(("a.usdc", b"nope")), Reason.UNDECODABLE, "magic"),
    ("unfrozen.abc", lambda: ogawa_bytes(frozen=False), Reason.UNDECODABLE, "not frozen"),
    ("cut.abc", lambda: ogawa_bytes()[:20], Reason.UNDECODABLE, "truncated"),
    ("hdf5.abc", lambda: b"\x89HDF\r\n\x1a\n" + bytes(64), Reason.UNSUPPORTED_FORMAT, "Ogawa only"),
    ("junk.abc", lambda: b"Alembic?" + bytes(16), Reason.UNDECODABLE, "Ogawa"),
    ("cut.blend", lambda: blend_bytes()[:-30], Reason.UNDECODABLE, "ENDB"),
    ("junk.blend", lambda: b"BLENDIR-v402" + bytes(64), Reason.UNDECODABLE, "BLENDER"),
    ("badgzip.blend", lambda: gzip.compress(blend_bytes())[:12], Reason.UNDECODABLE, "gzip"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "reason", "phrase"), REFUSED, ids=[r[0] for r in REFUSED])
def test_truncated_or_garbage_files_are_refused_with_their_reason(
    tmp_path, name, make, reason, phrase
):
    path = _write(tmp_path, name, make())
    with pytest.raises(Refusal) as info:
        inspect_asset(path)
    assert info.value.reason is reason, info.value
    assert phrase in info.value.detail and info.value.path == str(path)


def test_every_new_format_has_a_refusal_case():
    refused = {Path(name).suffix for name, *_ in REFUSED}
    assert {".off", ".stl", ".fbx", ".dae", ".usd", ".usda", ".usdc", ".usdz", ".abc"} <= refused
    assert ".blend" in refused


def test_unknown_extensions_are_unsupported(tmp_path):
    for name in ("chair.3ds", "notes.txt", "README"):
        with pytest.raises(Refusal) as info:
            inspect_asset(_write(tmp_path, name, b"x"))
        assert info.value.reason is Reason.UNSUPPORTED_FORMAT


# ----------------------------------------------------------------------------- companions


def test_companions_are_told_apart_from_objects(tmp_path):
    names = [
        "chair.obj", "chair.mtl", "chair.txt", "textures/wood.PNG", "textures/wood.jpg",
        "scene.gltf", "scene.bin", "car.3ds", "car.txt", "notes.txt", "README", "house.blend",
        "house.blend1", ".DS_Store", ".git/config", "sub/._chair.obj", "shot.exr",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listed, companions = partition(tmp_path, [tmp_path / n for n in names])
    rel = lambda paths: sorted(p.relative_to(tmp_path).as_posix() for p in paths)  # noqa: E731
    # car.txt is the caption of car.3ds (which is listed, to be quarantined); notes.txt has no
    # object of its stem, so it is not a caption: listed (and quarantined) like README.
    assert rel(listed) == [
        "README",
        "car.3ds",
        "chair.obj",
        "house.blend",
        "notes.txt",
        "scene.gltf",
    ]
    assert rel(companions) == [
        ".DS_Store", ".git/config", "car.txt", "chair.mtl", "chair.txt", "house.blend1",
        "scene.bin", "shot.exr", "sub/._chair.obj", "textures/wood.PNG", "textures/wood.jpg",
    ]  # fmt: skip
