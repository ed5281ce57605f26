"""Asset inspection before Blender: every way an asset is refused, and the normalisation."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline.formats.mesh_inspection import inspect_asset, load_normalised_mesh
from data_pipeline.refusals import Reason, Refusal
from tests.data_pipeline.assets import CUBE_OBJ


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def _glb(tmp_path: Path, name: str = "tri.glb", positions=None) -> Path:
    """A one-triangle GLB written by hand (glTF frame)."""
    positions = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 2]] if positions is None else positions, dtype=np.float32
    )
    indices = np.array([0, 1, 2], dtype=np.uint16)
    blob = positions.tobytes() + indices.tobytes() + b"\x00\x00"
    doc = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "buffers": [{"byteLength": len(blob)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 36},
            {"buffer": 0, "byteOffset": 36, "byteLength": 6},
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": positions.min(axis=0).tolist(),
                "max": positions.max(axis=0).tolist(),
            },
            {"bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR"},
        ],
    }
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    body += struct.pack("<II", len(blob), 0x004E4942) + blob
    return _write(tmp_path, name, b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body)


def test_report_normalises_the_bounding_box_and_hashes_the_file(tmp_path):
    cube = np.array([[float(v) for v in line.split()[1:]] for line in CUBE_OBJ.splitlines()[:8]])
    box = cube * [4.0, 2.0, 1.0] + [-1.0, 0.0, 3.0]  # x in [-1, 3], y in [0, 2], z in [3, 4]
    faces = "".join(line + "\n" for line in CUBE_OBJ.splitlines()[8:])
    scaled = "".join(f"v {x} {y} {z}\n" for x, y, z in box) + faces
    path = _write(tmp_path, "box.obj", scaled)
    report = inspect_asset(path)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.num_vertices == 8 and report.num_faces >= 6
    # OBJ is y-up: Blender imports (x, y, z) as (x, -z, y).
    np.testing.assert_allclose(report.bbox_min, [-1, -4, 0])
    np.testing.assert_allclose(report.bbox_max, [3, -3, 2])
    assert report.scale == pytest.approx(0.25)
    normalised = report.normalise(np.array([report.bbox_min, report.bbox_max]))
    np.testing.assert_allclose(normalised, [[-0.5, -0.125, -0.25], [0.5, 0.125, 0.25]])


def test_gltf_front_becomes_blender_negative_y(tmp_path):
    report = inspect_asset(_glb(tmp_path, positions=[[0, 0, 0], [1, 0, 0], [0, 1, 2]]))
    # glTF +Z (front) -> Blender -Y; glTF +Y (up) -> Blender +Z.
    np.testing.assert_allclose(report.bbox_min, [0, -2, 0])
    np.testing.assert_allclose(report.bbox_max, [1, 0, 1])
    mesh = load_normalised_mesh(tmp_path / "tri.glb")
    np.testing.assert_allclose(mesh.bounds, [[-0.25, -0.5, -0.25], [0.25, 0.5, 0.25]])


def test_unsupported_extension(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "thing.3ds", "MM"))
    assert info.value.reason is Reason.UNSUPPORTED_FORMAT


def test_truncated_glb_is_undecodable(tmp_path):
    raw = _glb(tmp_path).read_bytes()
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "cut.glb", raw[:-20]))
    assert info.value.reason is Reason.UNDECODABLE


def test_garbage_glb_is_undecodable(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "noise.glb", bytes(range(256)) * 4))
    assert info.value.reason is Reason.UNDECODABLE


def test_gltf_with_missing_buffer_file(tmp_path):
    doc = {
        "asset": {"version": "2.0"},
        "buffers": [{"uri": "geometry.bin", "byteLength": 42}],
        "meshes": [],
    }
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "scene.gltf", json.dumps(doc)))
    assert info.value.reason is Reason.MISSING_BUFFER
    assert "geometry.bin" in info.value.detail


def test_gltf_with_missing_texture_image(tmp_path):
    doc = {"asset": {"version": "2.0"}, "images": [{"uri": "albedo.png"}]}
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "scene.gltf", json.dumps(doc)))
    assert info.value.reason is Reason.MISSING_BUFFER


def test_draco_compressed_gltf_is_undecodable(tmp_path):
    doc = {"asset": {"version": "2.0"}, "extensionsRequired": ["KHR_draco_mesh_compression"]}
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "draco.gltf", json.dumps(doc)))
    assert info.value.reason is Reason.UNDECODABLE
    assert "draco" in info.value.detail


def test_gltf_that_is_not_json(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "scene.gltf", "{ not json"))
    assert info.value.reason is Reason.UNDECODABLE


def test_obj_face_index_out_of_range(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "bad.obj", CUBE_OBJ + "f 1 2 9\n"))
    assert info.value.reason is Reason.INDEX_OUT_OF_RANGE


def test_obj_zero_index_is_out_of_range_but_negative_ones_are_fine(tmp_path):
    inspect_asset(_write(tmp_path, "neg.obj", CUBE_OBJ + "f -1 -2 -3\n"))
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "zero.obj", CUBE_OBJ + "f 0 1 2\n"))
    assert info.value.reason is Reason.INDEX_OUT_OF_RANGE


def test_point_cloud_obj_has_no_faces(tmp_path):
    points = "".join(line + "\n" for line in CUBE_OBJ.splitlines() if line.startswith("v "))
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "points.obj", points))
    assert info.value.reason is Reason.NO_FACES


def test_ascii_ply_point_cloud_has_no_faces(tmp_path):
    ply = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    ply += "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "cloud.ply", ply))
    assert info.value.reason is Reason.NO_FACES


def test_nan_vertices_are_refused(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(_glb(tmp_path, positions=[[0, 0, 0], [np.inf, 0, 0], [0, np.nan, 1]]))
    assert info.value.reason is Reason.NONFINITE_VERTICES


def test_degenerate_extent_is_refused(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(_glb(tmp_path, positions=[[1, 1, 1], [1, 1, 1], [1, 1, 1 + 1e-9]]))
    assert info.value.reason is Reason.DEGENERATE_EXTENT


def test_missing_file(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(tmp_path / "absent.glb")
    assert info.value.reason is Reason.FETCH_FAILED


# ----------------------------------------------------------------------------- real assets

BROKEN = {
    "malformed.obj": Reason.INDEX_OUT_OF_RANGE,
    "pond.0.ply": Reason.NO_FACES,  # point cloud (and also truncated)
    "BoxWithInfinites.glb": Reason.NONFINITE_VERTICES,
}


@pytest.mark.assets
@pytest.mark.parametrize(("name", "reason"), sorted(BROKEN.items()))
def test_broken_real_assets_are_refused_with_their_reason(assets_dir, name, reason):
    with pytest.raises(Refusal) as info:
        inspect_asset(assets_dir / "broken" / name)
    assert info.value.reason is reason
    assert name in info.value.path


@pytest.mark.assets
@pytest.mark.parametrize(
    "relative",
    [
        "broken/issue1580-zero-area-triangle.stl",
        "meshes/Duck.glb",
        "meshes/Fox.gltf",
        "meshes/stanford_bunny.obj",
        "meshes/colored_airplane.ply",
    ],
)
def test_good_and_merely_odd_real_assets_pass(assets_dir, relative):
    report = inspect_asset(assets_dir / relative)
    assert report.num_faces > 0
    corners = report.normalise(np.array([report.bbox_min, report.bbox_max]))
    assert (corners[1] - corners[0]).max() == pytest.approx(1.0)
    np.testing.assert_allclose(corners.sum(axis=0), 0.0, atol=1e-9)


# ----------------------------------------------------------------------------- accurate reasons


def _glb_v1(tmp_path: Path) -> Path:
    """A binary glTF 1.0 (KHR_binary_glTF) file: header magic, version 1, length, then the
    scene's content length and format (0 = JSON), the 1.0 document (objects keyed by id) and
    the binary body."""
    blob = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32).tobytes()
    doc = {
        "asset": {"version": "1.0"},
        "buffers": {"binary_glTF": {"byteLength": len(blob), "type": "arraybuffer"}},
        "meshes": {"m": {"primitives": [{"attributes": {"POSITION": "a"}}]}},
    }
    content = json.dumps(doc).encode()
    content += b" " * (-len(content) % 4)
    header = b"glTF" + struct.pack("<IIII", 1, 20 + len(content) + len(blob), len(content), 0)
    return _write(tmp_path, "v1.glb", header + content + blob)


def test_gltf_1_binary_is_refused_as_gltf_1_not_as_truncated(tmp_path):
    with pytest.raises(Refusal) as info:
        inspect_asset(_glb_v1(tmp_path))
    assert info.value.reason is Reason.UNSUPPORTED_FORMAT
    assert "glTF 1.0 is not supported (glTF 2.0 only)" in info.value.detail
    assert "truncated" not in info.value.detail and "v1.glb" in str(info.value)


@pytest.mark.parametrize(
    "doc",
    [
        {"asset": {"version": "1.0"}, "buffers": {}},
        {"buffers": {"b": {"uri": "b.bin"}}, "meshes": {}},  # 1.0 without an asset version
    ],
)
def test_gltf_1_json_is_refused_as_gltf_1(tmp_path, doc):
    with pytest.raises(Refusal) as info:
        inspect_asset(_write(tmp_path, "v1.gltf", json.dumps(doc)))
    assert info.value.reason is Reason.UNSUPPORTED_FORMAT
    assert "glTF 1.0 is not supported" in info.value.detail


def _obj_with_material(tmp_path: Path, mtl: str | None, texture: bool) -> Path:
    if mtl is not None:
        (tmp_path / "cube.mtl").write_text(mtl)
    if texture:
        Image.new("RGB", (4, 4), (200, 30, 30)).save(tmp_path / "wood.png")
    return _write(tmp_path, "cube.obj", "mtllib cube.mtl\nusemtl wood\n" + CUBE_OBJ)


MTL = "newmtl wood\nKd 0.8 0.8 0.8\nmap_Kd -s 1 1 1 -o 0 0 wood.png\n"


def test_obj_with_its_material_and_texture_has_no_notes(tmp_path):
    assert inspect_asset(_obj_with_material(tmp_path, MTL, texture=True)).notes == ()


def test_obj_whose_texture_is_missing_passes_with_a_note(tmp_path):
    report = inspect_asset(_obj_with_material(tmp_path, MTL, texture=False))
    assert report.num_faces > 0
    assert report.notes == (
        "texture 'wood.png' (map_Kd in cube.mtl) is missing: rendered without it",
    )


def test_obj_whose_material_library_is_missing_passes_with_a_note(tmp_path):
    report = inspect_asset(_obj_with_material(tmp_path, None, texture=False))
    assert report.num_faces > 0
    assert report.notes == (
        "material library 'cube.mtl' is missing: rendered without its materials",
    )
