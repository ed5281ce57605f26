"""Asset inspection before Blender: is this file a mesh we can render, and how is it normalised?

`inspect_asset(path)` loads the file with trimesh (no Blender) and either returns an
`AssetReport` or raises `Refusal` with a reason code (data_pipeline.errors); no other exception
escapes it, whatever the bytes. It catches what Blender would otherwise render as garbage or
crash on: unsupported formats (glTF 1.0 included), truncated or undecodable files, glTF files
whose buffers or images are missing, point clouds, NaN/inf positions, face indices out of range
(trimesh silently drops or crashes on some, so OBJ and PLY headers are also checked by hand
here) and degenerate extents. Defects Blender renders through are reported, not refused:
`AssetReport.notes` (an OBJ whose .mtl or texture file is missing renders untextured), which
the renderer copies into every ring's `RingMeta.notes`.

Frames: the report's bounding box and normalisation are in Blender's world frame (SPEC 2, z up),
i.e. after the axis conversion Blender's importer applies: glTF and OBJ are y-up files that Blender
turns z-up ((x, y, z) -> (x, -z, y), so glTF +Z "front" becomes Blender -Y); PLY and STL import
unchanged. Normalisation (SPEC 2): subtract the bounding-box centre, multiply by `scale` so the
largest side is 1.

Shapes: P points, F faces.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from data_pipeline.errors import Reason, Refusal

SUPPORTED_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply", ".stl")
# Files whose importer in Blender converts y-up to z-up (Blender's glTF importer always does;
# wm.obj_import defaults to forward -Z, up Y). PLY and STL import with forward Y, up Z: no change.
_Y_UP_EXTENSIONS = (".glb", ".gltf", ".obj")
# A bounding box whose largest side is below this (in file units) cannot be normalised sensibly.
MIN_EXTENT = 1e-6

# Maps file-frame points to Blender's world frame: (x, y, z) -> (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class AssetReport:
    """What inspection learnt about an asset; bbox and normalisation in Blender's world frame."""

    path: str
    sha256: str
    format: str  # extension without the dot: "glb", "gltf", "obj", "ply", "stl"
    num_vertices: int
    num_faces: int
    bbox_min: tuple[float, float, float]
    bbox_max: tuple[float, float, float]
    notes: tuple[str, ...] = ()  # defects that do not stop the render (missing texture, ...)

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
    if "." + fmt in _Y_UP_EXTENSIONS:
        return points @ Y_UP_TO_Z_UP.T
    return points


def inspect_asset(path: str | Path) -> AssetReport:
    """Load `path` without Blender and report on it, or raise `Refusal` naming the reason."""
    path = Path(path)
    name = str(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise Refusal(
            Reason.UNSUPPORTED_FORMAT,
            name,
            f"extension {ext or '(none)'!r} is not one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    if not path.is_file():
        raise Refusal(Reason.FETCH_FAILED, name, "file does not exist")
    sha = file_sha256(path)
    fmt = ext[1:]
    # Format-specific checks the generic loader would miss or misreport.
    notes: list[str] = []
    if ext == ".gltf":
        _check_gltf_json(path)
    elif ext == ".glb":
        _check_glb(path)
    elif ext == ".obj":
        _check_obj_indices(path)
        notes = _obj_material_notes(path)
    elif ext == ".ply":
        _check_ply_header(path)

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


# ----------------------------------------------------------------------------- format checks

# Mesh compression that neither trimesh nor the bpy wheel can decode (the wheel ships no Draco).
_UNDECODABLE_EXTENSIONS = frozenset({"KHR_draco_mesh_compression", "EXT_meshopt_compression"})
_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942


GLTF1 = "glTF 1.0 is not supported (glTF 2.0 only)"


def _check_glb(path: Path) -> None:
    raw = path.read_bytes()
    name = str(path)
    if len(raw) < 12 or raw[:4] != _GLB_MAGIC:
        raise Refusal(Reason.UNDECODABLE, name, "not a binary glTF (bad magic or too short)")
    version, declared = struct.unpack_from("<II", raw, 4)
    if version == 1:  # KHR_binary_glTF: another header and chunk layout, and a 1.0 document
        raise Refusal(Reason.UNSUPPORTED_FORMAT, name, f"binary {GLTF1}")
    if version != 2:
        raise Refusal(
            Reason.UNSUPPORTED_FORMAT, name, f"binary glTF version {version} (glTF 2.0 only)"
        )
    if len(raw) < 20:
        raise Refusal(Reason.UNDECODABLE, name, f"truncated: {len(raw)} bytes, no chunk header")
    if declared > len(raw):
        raise Refusal(
            Reason.UNDECODABLE,
            name,
            f"truncated: header says {declared} bytes, file has {len(raw)}",
        )
    offset, doc, bin_len = 12, None, None
    while offset + 8 <= declared:
        length, kind = struct.unpack_from("<II", raw, offset)
        body = raw[offset + 8 : offset + 8 + length]
        if len(body) < length:
            raise Refusal(Reason.UNDECODABLE, name, "truncated chunk")
        if kind == _CHUNK_JSON:
            doc = _parse_json(body, name)
        elif kind == _CHUNK_BIN and bin_len is None:
            bin_len = length
        offset += 8 + length
    if doc is None:
        raise Refusal(Reason.UNDECODABLE, name, "no JSON chunk")
    _check_gltf_document(doc, path, glb_bin_len=bin_len)


def _check_gltf_json(path: Path) -> None:
    doc = _parse_json(path.read_bytes(), str(path))
    _check_gltf_document(doc, path, glb_bin_len=None)


def _parse_json(raw: bytes, name: str) -> dict:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise Refusal(Reason.UNDECODABLE, name, f"glTF JSON does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise Refusal(Reason.UNDECODABLE, name, "glTF JSON is not an object")
    return doc


def _objects(doc: dict, key: str, name: str) -> list[dict]:
    """doc[key] as a list of JSON objects (glTF 2.0 arrays), or UNDECODABLE."""
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise Refusal(Reason.UNDECODABLE, name, f"malformed glTF: {key} is not a list of objects")
    return value


def _byte_length(buffer: dict, what: str, name: str) -> int:
    size = buffer.get("byteLength", 0)
    if isinstance(size, bool) or not isinstance(size, int | float) or not 0 <= size < 2**53:
        raise Refusal(Reason.UNDECODABLE, name, f"malformed glTF: {what} byteLength {size!r}")
    return int(size)


def _is_gltf1(doc: dict) -> bool:
    """glTF 1.0: asset.version "1.x", or (no version) objects keyed by id instead of arrays."""
    asset = doc.get("asset")
    version = asset.get("version") if isinstance(asset, dict) else None
    if isinstance(version, str):
        return version.split(".")[0] == "1"
    return any(isinstance(doc.get(k), dict) for k in ("buffers", "meshes", "accessors", "nodes"))


def _check_gltf_document(doc: dict, path: Path, glb_bin_len: int | None) -> None:
    """Every buffer and image the document references must exist (external files next to it)."""
    name = str(path)
    if _is_gltf1(doc):
        raise Refusal(Reason.UNSUPPORTED_FORMAT, name, GLTF1)
    required = doc.get("extensionsRequired", [])
    if not isinstance(required, list) or not all(isinstance(e, str) for e in required):
        raise Refusal(Reason.UNDECODABLE, name, "malformed glTF: extensionsRequired")
    unsupported = sorted(set(required) & _UNDECODABLE_EXTENSIONS)
    if unsupported:
        raise Refusal(
            Reason.UNDECODABLE,
            name,
            f"requires {', '.join(unsupported)}: neither trimesh nor the bpy wheel decodes it",
        )
    for i, buffer in enumerate(_objects(doc, "buffers", name)):
        uri = buffer.get("uri")
        size = _byte_length(buffer, f"buffer {i}", name)
        if uri is None:
            if glb_bin_len is None:
                raise Refusal(
                    Reason.MISSING_BUFFER, name, f"buffer {i} has no uri and no BIN chunk"
                )
            if glb_bin_len < size:
                raise Refusal(
                    Reason.UNDECODABLE,
                    name,
                    f"BIN chunk holds {glb_bin_len} bytes, buffer {i} needs {size}",
                )
        else:
            _check_uri(uri, path, f"buffer {i}", size)
    for i, image in enumerate(_objects(doc, "images", name)):
        if "uri" in image:
            _check_uri(image["uri"], path, f"image {i}", 0)


def _check_uri(uri: object, path: Path, what: str, size: int) -> None:
    if not isinstance(uri, str):
        raise Refusal(Reason.UNDECODABLE, str(path), f"malformed glTF: {what} uri {uri!r}")
    if uri.startswith("data:"):
        return  # embedded; trimesh decodes it and fails loudly if it is broken
    shown = uri if len(uri) <= 120 else uri[:117] + "..."
    if re.match(r"^[a-z][a-z0-9+.-]*://", uri):
        raise Refusal(Reason.MISSING_BUFFER, str(path), f"{what} points outside the file: {shown}")
    target = path.parent / unquote(uri)
    if not _is_file(target):
        raise Refusal(Reason.MISSING_BUFFER, str(path), f"{what} file {shown!r} is missing")
    if size and target.stat().st_size < size:
        raise Refusal(
            Reason.UNDECODABLE,
            str(path),
            f"{what} file {shown!r} holds {target.stat().st_size} bytes, {size} declared",
        )


def _check_obj_indices(path: Path) -> None:
    """Face/line indices must name existing elements (trimesh may silently drop bad faces).

    OBJ indices are 1-based; negative ones count back from the last element defined so far.
    Positive ones are checked against the whole file (some exporters write elements late).
    """
    slots = ("v", "vt", "vn")
    totals = dict.fromkeys(slots, 0)
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            head = line.split(maxsplit=1)[0] if line.strip() else ""
            if head in totals:
                totals[head] += 1
    counts = dict.fromkeys(slots, 0)
    name = str(path)
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            head = parts[0]
            if head == "v" and not _is_position(parts):
                raise Refusal(
                    Reason.UNDECODABLE, name, f"line {line_no}: a vertex needs 3 numbers: {line!r}"
                )
            if head in counts:
                counts[head] += 1
                continue
            if head not in ("f", "l"):
                continue
            for corner in parts[1:]:
                for slot, token in zip(slots, corner.split("/"), strict=False):
                    if not token:
                        continue
                    try:
                        index = int(token)
                    except ValueError as exc:
                        raise Refusal(
                            Reason.UNDECODABLE, name, f"line {line_no}: bad index {token!r}"
                        ) from exc
                    resolved = index if index > 0 else counts[slot] + index + 1
                    if index == 0 or not 1 <= resolved <= totals[slot]:
                        raise Refusal(
                            Reason.INDEX_OUT_OF_RANGE,
                            name,
                            f"line {line_no}: {head!r} refers to {slot} {index}; "
                            f"the file defines {totals[slot]}",
                        )


def _is_position(parts: list[str]) -> bool:
    return len(parts) >= 4 and all(_is_number(t) for t in parts[1:4])


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the filesystem: nothing can be there
        return False


# .mtl statements naming an image, and their options' argument counts (Wavefront MTL spec;
# -o, -s and -t take one to three numbers).
_MTL_MAPS = ("map_", "bump", "disp", "decal", "norm", "refl")
_MTL_OPTIONS = {
    "-blendu": 1, "-blendv": 1, "-boost": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3, "-texres": 1,
    "-clamp": 1, "-bm": 1, "-imfchan": 1, "-type": 1, "-cc": 1,
}  # fmt: skip


def _obj_material_notes(path: Path) -> list[str]:
    """Notes for an OBJ whose material libraries or their texture images are missing: Blender
    renders it anyway (untextured, default material), so it is not refused, but the rings say so.
    """
    notes: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        libraries = [
            line.split(maxsplit=1)[1].strip() for line in handle if _is_statement(line, "mtllib")
        ]
    for rest in libraries:
        names = [rest] if _is_file(path.parent / rest) else rest.split()
        for lib in names:
            mtl = path.parent / lib.replace("\\", "/")
            if not _is_file(mtl):
                notes.append(f"material library {lib!r} is missing: rendered without its materials")
                continue
            try:
                images = _mtl_images(mtl)
            except OSError as exc:
                notes.append(f"material library {lib!r} is unreadable ({exc}): rendered without it")
                continue
            for statement, image in images:
                candidates = [
                    mtl.parent / image,
                    path.parent / image,
                    mtl.parent / Path(image).name,
                ]
                if not any(_is_file(c) for c in candidates):
                    notes.append(
                        f"texture {image!r} ({statement} in {lib}) is missing: rendered without it"
                    )
    return list(dict.fromkeys(notes))


def _is_statement(line: str, keyword: str) -> bool:
    parts = line.split(maxsplit=1)
    return len(parts) == 2 and parts[0] == keyword


def _mtl_images(mtl: Path) -> list[tuple[str, str]]:
    """(statement, image path) for every texture map of a .mtl file."""
    out = []
    with open(mtl, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split()
            if not parts or not parts[0].lower().startswith(_MTL_MAPS):
                continue
            tokens, i = parts[1:], 0
            while i < len(tokens) - 1 and tokens[i] in _MTL_OPTIONS:
                most, i = _MTL_OPTIONS[tokens[i]], i + 1
                for k in range(most):  # the first argument always, more only while numeric
                    if not (i < len(tokens) - 1 and (k == 0 or _is_number(tokens[i]))):
                        break
                    i += 1
            if i < len(tokens):
                out.append((parts[0], " ".join(tokens[i:]).replace("\\", "/")))
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


_PLY_SIZES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2,
    "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}  # fmt: skip


def _check_ply_header(path: Path) -> None:
    """A PLY without a face element is a point cloud; a binary PLY shorter than its header
    promises is truncated (checked when all elements have fixed-size rows)."""
    name = str(path)
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise Refusal(Reason.UNDECODABLE, name, "not a PLY file (no 'ply' magic or end_header)")
    newline = head.find(b"\n", end)
    if newline < 0:
        raise Refusal(
            Reason.UNDECODABLE, name, "PLY header does not end (no newline after end_header)"
        )
    body_start = newline + 1
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    binary = any(line.startswith("format binary") for line in lines)
    elements: list[list] = []  # [name, count, row_bytes or None]
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"] and len(parts) >= 3:
            if not parts[2].isdigit():
                raise Refusal(Reason.UNDECODABLE, name, f"PLY header: bad element count {line!r}")
            elements.append([parts[1], int(parts[2]), 0])
        elif parts[:1] == ["property"] and len(parts) >= 2 and elements:
            if parts[1] == "list":
                elements[-1][2] = None
            elif elements[-1][2] is not None:
                elements[-1][2] += _PLY_SIZES.get(parts[1], 0)
    faces = sum(count for elem, count, _ in elements if elem == "face")
    truncated = ""
    if binary and all(row is not None for _, _, row in elements):
        needed = body_start + sum(count * row for _, count, row in elements)
        have = path.stat().st_size
        if have < needed:
            truncated = f"truncated: {needed - have} bytes missing"
    if faces == 0:
        detail = "point cloud: the PLY header declares no faces"
        raise Refusal(Reason.NO_FACES, name, f"{detail}; {truncated}" if truncated else detail)
    if truncated:
        raise Refusal(Reason.UNDECODABLE, name, truncated)
