"""Wavefront OBJ (.obj): indices checked by hand (trimesh silently drops or crashes on bad ones)
and notes for material libraries or textures that are missing (Blender renders through those).
"""

from __future__ import annotations

from pathlib import Path

from data_pipeline.formats.base import is_file, is_number
from data_pipeline.refusals import Reason, Refusal


def check_obj(path: Path) -> list[str]:
    """Refuses bad vertices and indices; returns notes on missing materials and textures."""
    _check_obj_indices(path)
    return _obj_material_notes(path)


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
    return len(parts) >= 4 and all(is_number(t) for t in parts[1:4])


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
        names = [rest] if is_file(path.parent / rest) else rest.split()
        for lib in names:
            mtl = path.parent / lib.replace("\\", "/")
            if not is_file(mtl):
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
                if not any(is_file(c) for c in candidates):
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
                    if not (i < len(tokens) - 1 and (k == 0 or is_number(tokens[i]))):
                        break
                    i += 1
            if i < len(tokens):
                out.append((parts[0], " ".join(tokens[i:]).replace("\\", "/")))
    return out
