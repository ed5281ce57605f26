"""Asset files the data_pipeline tests write into tmp_path: a hand-written cube OBJ, a minimal
valid file of each format in `VALID` (OFF and STL through trimesh; FBX, COLLADA, USD text, crate
and zip, Alembic and .blend by hand), and a folder laid out like objaverse's download cache."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from data_pipeline.formats.scene import FBX_MAGIC

CUBE_OBJ = """v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 0 0 1
v 1 0 1
v 1 1 1
v 0 1 1
f 1 2 3 4
f 5 6 7 8
f 1 2 6 5
f 2 3 7 6
f 3 4 8 7
f 4 1 5 8
"""


# -- one minimal valid file per format ----------------------------------------------------------


def fbx_bytes(version: int = 7400, nodes: tuple[bytes, ...] = (b"FBXHeaderExtension",)) -> bytes:
    """Binary FBX: magic, version, top-level node records without properties, null record."""
    wide = version >= 7500
    layout, record = ("<QQQB", 25) if wide else ("<IIIB", 13)
    out = bytearray(FBX_MAGIC + struct.pack("<I", version))
    for name in nodes:
        end = len(out) + record + len(name)
        out += struct.pack(layout, end, 0, 0, len(name)) + name
    return bytes(out + bytes(record))


DAE = """<?xml version="1.0" encoding="utf-8"?>
<COLLADA xmlns="http://www.collada.org/2005/11/COLLADASchema" version="1.4.1">
  <asset><up_axis>Z_UP</up_axis></asset>
  <library_geometries><geometry id="tri"><mesh>
    <source id="p"><float_array id="pa" count="9">0 0 0 1 0 0 0 1 1</float_array>
      <technique_common><accessor source="#pa" count="3" stride="3">
        <param name="X" type="float"/><param name="Y" type="float"/><param name="Z" type="float"/>
      </accessor></technique_common></source>
    <vertices id="v"><input semantic="POSITION" source="#p"/></vertices>
    <triangles count="1"><input semantic="VERTEX" source="#v" offset="0"/><p>0 1 2</p></triangles>
  </mesh></geometry></library_geometries>
  <library_visual_scenes><visual_scene id="s"><node id="n">
    <instance_geometry url="#tri"/></node></visual_scene></library_visual_scenes>
  <scene><instance_visual_scene url="#s"/></scene>
</COLLADA>
"""

USDA = """#usda 1.0
(
    defaultPrim = "Tri"
    upAxis = "Z"
)

def Mesh "Tri"
{
    int[] faceVertexCounts = [3]
    int[] faceVertexIndices = [0, 1, 2]
    point3f[] points = [(0, 0, 0), (1, 0, 0), (0, 1, 1)]
}
"""


def usdc_bytes(sections: int = 2) -> bytes:
    """A crate header, `sections` 32-byte sections and the table of contents naming them."""
    header = b"PXR-USDC" + bytes([0, 8, 0, 0, 0, 0, 0, 0])
    body = b"".join(bytes([i + 1]) * 32 for i in range(sections))
    toc_offset = 88 + len(body)
    toc = struct.pack("<Q", sections) + b"".join(
        struct.pack("<16sqq", name, 88 + 32 * i, 32)
        for i, name in enumerate([b"TOKENS", b"FIELDS", b"PATHS", b"SPECS"][:sections])
    )
    return header + struct.pack("<q", toc_offset) + bytes(64) + body + toc


def usdz_bytes(first: tuple[str, bytes] = ("tri.usda", USDA.encode())) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(*first)
        archive.writestr("textures/albedo.png", b"\x89PNG")
    return buffer.getvalue()


def ogawa_bytes(frozen: bool = True) -> bytes:
    """Ogawa header, a root group with one data child (8-byte size + 4 bytes of data)."""
    header = b"Ogawa" + (b"\xff" if frozen else b"\x00") + b"\x00\x01" + struct.pack("<Q", 16)
    root = struct.pack("<QQ", 1, (1 << 63) | 32)
    return header + root + struct.pack("<Q", 4) + b"data"


def blend_bytes(version: bytes = b"402") -> bytes:
    """A .blend header, one block and the ENDB block (64-bit little-endian layout)."""
    block = b"REND" + struct.pack("<IQII", 8, 0, 0, 1) + bytes(8)
    return b"BLENDER-v" + version + block + b"ENDB" + struct.pack("<IQII", 0, 0, 0, 0)


def _trimesh_box(file_type: str) -> bytes:
    import trimesh

    data = trimesh.creation.box(extents=(1.0, 2.0, 0.5)).export(file_type=file_type)
    return data.encode() if isinstance(data, str) else data


VALID: dict[str, Callable[[], bytes]] = {
    "box.off": lambda: _trimesh_box("off"),
    "box_binary.stl": lambda: _trimesh_box("stl"),
    "box_ascii.stl": lambda: _trimesh_box("stl_ascii"),
    "tri.fbx": fbx_bytes,
    "tri64.fbx": lambda: fbx_bytes(7500, (b"FBXHeaderExtension", b"Objects")),
    "tri.dae": DAE.encode,
    "tri.usda": USDA.encode,
    "tri.usd": USDA.encode,
    "crate.usdc": usdc_bytes,
    "crate.usd": usdc_bytes,
    "tri.usdz": usdz_bytes,
    "tri.abc": ogawa_bytes,
    "tri.blend": blend_bytes,
    "gzipped.blend": lambda: gzip.compress(blend_bytes()),
    "zstd.blend": lambda: b"\x28\xb5\x2f\xfd" + bytes(32),  # magic only: no stdlib decoder
}


# -- objaverse's cache --------------------------------------------------------------------------


def sample_glbs(folder: Path) -> list[Path]:
    """The built-in sample GLBs (data_pipeline.sources.demo_objects), or trimesh boxes before it exists."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from data_pipeline.sources.demo_objects import write_builtin_samples
    except ImportError:
        import trimesh

        paths = []
        for i, extents in enumerate([(1, 2, 3), (2, 1, 1), (1, 1, 3)]):
            path = folder / f"box{i}.glb"
            trimesh.creation.box(extents=extents).export(path)
            paths.append(path)
        return paths
    return sorted(p for p in map(Path, write_builtin_samples(folder)) if p.suffix == ".glb")


def _gz_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        json.dump(data, f)


def make_objaverse_cache(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder laid out like objaverse's ~/.objaverse/hf-objaverse-v1, from the sample GLBs.

    Returns the folder and the uids of its downloaded objects; uid "f" * 32 is listed in
    object-paths.json.gz but its GLB is absent (a download the offline machine cannot make).
    """
    cache = tmp_path / "hf-objaverse-v1"
    glbs = sample_glbs(tmp_path / "samples")
    uids = [f"{i:032x}" for i in range(len(glbs))]
    object_paths, metadata = {}, {"000-000": {}, "000-001": {}}
    for i, (uid, glb) in enumerate(zip(uids, glbs, strict=True)):
        group = f"000-00{i % 2}"
        rel = f"glbs/{group}/{uid}.glb"
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(glb, cache / rel)
        object_paths[uid] = rel
        metadata[group][uid] = {"name": glb.stem, "tags": [{"name": "sample"}, {"name": glb.stem}]}
    object_paths["f" * 32] = "glbs/000-001/" + "f" * 32 + ".glb"  # listed but never downloaded
    _gz_json(cache / "object-paths.json.gz", object_paths)
    for group, data in metadata.items():
        _gz_json(cache / "metadata" / f"{group}.json.gz", data)
    _gz_json(cache / "lvis-annotations.json.gz", {"thing": uids[:2], "other": [uids[-1]]})
    return cache, uids
