"""Plain mesh formats trimesh loads (.ply, .stl, .off): header checks giving clear reasons where
trimesh would misreport (a point cloud, a truncated body) or fail with a bare exception.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from data_pipeline.formats.base import is_number, read_head, read_tail, undecodable, unsupported
from data_pipeline.refusals import Reason, Refusal

_PLY_SIZES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2,
    "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}  # fmt: skip


def check_ply(path: Path) -> list[str]:
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
    return []


# ----------------------------------------------------------------------------- STL

_STL_HEADER = 80  # bytes of free text, then a uint32 triangle count, then 50 bytes per triangle
_STL_TRIANGLE = 50


def check_stl(path: Path) -> list[str]:
    """Binary STL: the size must hold the triangles its header counts (trailing bytes are
    tolerated, as trimesh and Blender do). ASCII STL ("solid ..."): must end with "endsolid".
    A binary header may start with "solid" too, so a size consistent with the count wins."""
    size = path.stat().st_size
    head = read_head(path, 512)
    count = struct.unpack_from("<I", head, _STL_HEADER)[0] if size >= 84 else None
    expected = None if count is None else 84 + _STL_TRIANGLE * count
    if expected is not None and size == expected:
        return _stl_binary_count(path, count)
    textual = head.lstrip()[:5].lower() == b"solid" and all(
        b in b"\t\n\r" or 32 <= b < 127 for b in head
    )
    if textual:
        if b"endsolid" not in read_tail(path, 1024).lower():
            raise undecodable(path, "ASCII STL does not end with 'endsolid': truncated")
        return []
    if expected is None:
        raise undecodable(path, f"{size} bytes: too short for a binary STL and not ASCII")
    if size > expected:
        return _stl_binary_count(path, count)
    raise undecodable(
        path,
        f"truncated binary STL: header counts {count} triangles ({expected} bytes), "
        f"file has {size}",
    )


def _stl_binary_count(path: Path, count: int | None) -> list[str]:
    if not count:
        raise Refusal(Reason.NO_FACES, str(path), "binary STL with 0 triangles")
    return []


# ----------------------------------------------------------------------------- OFF

# OFF and the variants trimesh reads as one (colours, normals, texture coordinates per vertex
# after the position); 4OFF (4D) and nOFF (any dimension) are not 3D meshes.
_OFF_KEYWORD = re.compile(r"(ST)?C?N?OFF(?![A-Za-z])")


def check_off(path: Path) -> list[str]:
    """Object File Format (Princeton, ModelNet): keyword, "V F E" counts, V vertex lines of
    x y z [...], F face lines of n i_1 .. i_n (0-based). Checks the keyword, the counts against
    the lines present (truncation) and every index against V."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append((number, line.split()))
    if not lines:
        raise undecodable(path, "empty OFF file")
    _, first = lines[0]
    keyword = _OFF_KEYWORD.match(first[0])
    if keyword is None:
        if re.match(r"^\w*OFF", first[0], re.IGNORECASE):
            raise unsupported(path, f"OFF variant {first[0][:20]!r} is not a 3D mesh (OFF, COFF)")
        raise undecodable(path, f"not an OFF file: starts with {first[0][:40]!r}")
    glued = first[0][keyword.end() :]  # "OFF490 518 0": a known ModelNet defect, trimesh reads it
    first = [keyword.group(0), *([glued] if glued else []), *first[1:]]
    if [t.upper() for t in first[1:2]] == ["BINARY"]:
        raise unsupported(path, "binary OFF is not supported (ASCII OFF only)")
    if len(first) > 1:
        counts, body = first[1:], lines[1:]
    elif len(lines) > 1:
        counts, body = lines[1][1], lines[2:]
    else:
        raise undecodable(path, "OFF file without its vertex and face counts")
    num_vertices, num_faces = (_int(t) for t in ([*counts, "", ""])[:2])
    if num_vertices is None or num_faces is None or num_vertices < 0 or num_faces < 0:
        raise undecodable(path, f"OFF counts line is not 'V F E': {' '.join(counts)[:80]!r}")
    if len(body) < num_vertices + num_faces:
        raise undecodable(
            path,
            f"truncated: the header declares {num_vertices} vertices and {num_faces} faces, "
            f"the file holds {len(body)} lines of them",
        )
    for number, tokens in body[:num_vertices]:
        if len(tokens) < 3 or not all(is_number(t) for t in tokens[:3]):
            raise undecodable(path, f"line {number}: a vertex needs 3 numbers")
    if num_faces == 0:
        raise Refusal(Reason.NO_FACES, str(path), "the OFF header declares no faces")
    for number, tokens in body[num_vertices : num_vertices + num_faces]:
        corners = _int(tokens[0])
        if corners is None or corners < 3 or len(tokens) <= corners:
            raise undecodable(path, f"line {number}: a face needs 'n i_1 .. i_n' with n >= 3")
        for token in tokens[1 : corners + 1]:
            index = _int(token)
            if index is None:
                raise undecodable(path, f"line {number}: bad index {token[:20]!r}")
            if not 0 <= index < num_vertices:
                raise Refusal(
                    Reason.INDEX_OUT_OF_RANGE,
                    str(path),
                    f"line {number}: face refers to vertex {index}; the file defines "
                    f"{num_vertices}",
                )
    return []


def _int(token: str) -> int | None:
    """An ASCII integer of at most 18 digits (int() takes Unicode digits and huge strings)."""
    digits = token[1:] if token[:1] == "-" else token
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        return None
    return int(token)
