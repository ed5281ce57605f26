"""glTF 2.0 (.glb, .gltf): the container and document checks trimesh would miss or misreport.

glTF 1.0 is refused (`GLTF1`); so is mesh compression neither trimesh nor the bpy wheel decodes;
every buffer and image the document references must exist next to it.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from urllib.parse import unquote

from data_pipeline.formats.base import is_file
from data_pipeline.refusals import Reason, Refusal

# Mesh compression that neither trimesh nor the bpy wheel can decode (the wheel ships no Draco).
_UNDECODABLE_EXTENSIONS = frozenset({"KHR_draco_mesh_compression", "EXT_meshopt_compression"})
_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942


GLTF1 = "glTF 1.0 is not supported (glTF 2.0 only)"


def check_glb(path: Path) -> list[str]:
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
    return []


def check_gltf(path: Path) -> list[str]:
    doc = _parse_json(path.read_bytes(), str(path))
    _check_gltf_document(doc, path, glb_bin_len=None)
    return []


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
    if not is_file(target):
        raise Refusal(Reason.MISSING_BUFFER, str(path), f"{what} file {shown!r} is missing")
    if size and target.stat().st_size < size:
        raise Refusal(
            Reason.UNDECODABLE,
            str(path),
            f"{what} file {shown!r} holds {target.stat().st_size} bytes, {size} declared",
        )
