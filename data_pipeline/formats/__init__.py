"""Which files are 3D objects, what each format gets checked for before Blender, and which Blender
importer reads it. One owner for the list of formats: the local source (what to list), the
inspector (data_pipeline.formats.mesh_inspection) and the renderer (data_pipeline.render.blender_import) all read it.

Formats (Objaverse-XL's renderer imports the same set, plus OFF):

| ext | pre-Blender check (formats.*) | trimesh geometry checks | Blender importer |
|---|---|---|---|
| .glb .gltf | container, glTF 2.0, buffers/images present | yes (y-up) | import_scene.gltf |
| .obj | vertex lines, index ranges; notes on missing .mtl/textures | yes (y-up) | wm.obj_import |
| .ply | header: faces declared, binary size | yes | wm.ply_import |
| .stl | binary size vs triangle count, ASCII "endsolid" | yes | wm.stl_import |
| .off | keyword, counts vs lines, index ranges | yes | converted to .ply, wm.ply_import |
| .fbx | binary magic, version >= 7100, top-level records | no | import_scene.fbx (add-on) |
| .dae | <COLLADA> root, closing tag | no | wm.collada_import |
| .usd .usda .usdc | crate magic and table of contents, or "#usda" | no | wm.usd_import |
| .usdz | zip directory, first file a USD layer | no | wm.usd_import |
| .abc | Ogawa magic, frozen flag, root group | no | wm.alembic_import |
| .blend | header, ENDB block (gzip/zstd: header only) | no | objects appended, no scripts |

Formats without trimesh geometry checks get theirs after the import, from Blender's own meshes
(no mesh -> NO_FACES, NaN -> NONFINITE_VERTICES, flat -> DEGENERATE_EXTENT).

Companions (`partition`) are files a folder of objects holds that are not objects: textures
and other images, material libraries (.mtl), glTF buffers (.bin), Blender backups (.blend1),
caption sidecars (`<stem>.txt` beside an object of that stem) and hidden files or folders (a
name starting with "."). Every other file is listed and quarantined as `unsupported_format`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.formats import gltf, mesh, obj, scene


@dataclass(frozen=True)
class Format:
    """One file format: its pre-Blender check, how trimesh sees it, and its Blender importer."""

    ext: str  # ".fbx"
    check: Callable[[Path], list[str]]  # raises Refusal; returns notes (defects rendered through)
    importer: str  # Blender operator ("wm.usd_import"), or "append" for .blend libraries
    trimesh: bool = False  # loaded by trimesh before Blender for the geometry checks
    y_up: bool = False  # (trimesh formats) Blender's importer turns the file's y-up into z-up
    addon: str | None = None  # the Blender add-on providing `importer`, enabled before use
    convert_to: str | None = None  # handed to Blender as this format (written by trimesh)


FORMATS: dict[str, Format] = {
    f.ext: f
    for f in (
        Format(".glb", gltf.check_glb, "import_scene.gltf", True, True, "io_scene_gltf2"),
        Format(".gltf", gltf.check_gltf, "import_scene.gltf", True, True, "io_scene_gltf2"),
        Format(".obj", obj.check_obj, "wm.obj_import", True, True),
        Format(".ply", mesh.check_ply, "wm.ply_import", True),
        Format(".stl", mesh.check_stl, "wm.stl_import", True),
        Format(".off", mesh.check_off, "wm.ply_import", True, convert_to=".ply"),
        Format(".fbx", scene.check_fbx, "import_scene.fbx", addon="io_scene_fbx"),
        Format(".dae", scene.check_dae, "wm.collada_import"),
        Format(".usd", scene.check_usd, "wm.usd_import"),
        Format(".usda", scene.check_usd, "wm.usd_import"),
        Format(".usdc", scene.check_usd, "wm.usd_import"),
        Format(".usdz", scene.check_usdz, "wm.usd_import"),
        Format(".abc", scene.check_abc, "wm.alembic_import"),
        Format(".blend", scene.check_blend, "append"),
    )
}
OBJECT_EXTENSIONS: tuple[str, ...] = tuple(sorted(FORMATS))

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".tga", ".bmp", ".tif", ".tiff", ".exr", ".hdr", ".webp",
    ".dds", ".ktx", ".ktx2", ".basis", ".gif", ".psd", ".jp2", ".avif", ".tx", ".rgb", ".sgi",
    ".pic", ".ppm",
})  # fmt: skip
COMPANION_EXTENSIONS = IMAGE_EXTENSIONS | {".mtl", ".bin"}
_BLEND_BACKUP = re.compile(r"^\.blend\d+$")
CAPTION_SIDECAR = ".txt"  # data_pipeline.sources.captions.sidecar_caption reads these


def format_for(path: str | Path) -> Format | None:
    """The format of a file from its extension (any case), or None."""
    return FORMATS.get(Path(path).suffix.lower())


def is_hidden(relative: Path) -> bool:
    """A hidden file, or a file inside a hidden folder (.git/, .DS_Store, ._name)."""
    return any(part.startswith(".") for part in relative.parts)


def partition(root: Path, files: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """A folder's files (under `root`) -> (files to list as objects, companions).

    Companions: hidden files and folders, textures and other images, .mtl, .bin, Blender
    backups (.blend1), and `<stem>.txt` beside a non-companion file of that stem (its caption,
    data_pipeline.sources.captions.sidecar_caption). Everything else is listed, objects and
    files of unsupported formats alike (the source marks the latter `unsupported`).
    """
    files = list(files)
    hidden = [p for p in files if is_hidden(p.relative_to(root))]
    visible = [p for p in files if not is_hidden(p.relative_to(root))]

    def by_kind(path: Path) -> bool:
        ext = path.suffix.lower()
        return ext in COMPANION_EXTENSIONS or _BLEND_BACKUP.search(ext) is not None

    stems = {p.with_suffix("") for p in visible if not by_kind(p) and p.suffix != CAPTION_SIDECAR}
    listed: list[Path] = []
    companions = hidden
    for path in visible:
        sidecar = path.suffix == CAPTION_SIDECAR and path.with_suffix("") in stems
        (companions if by_kind(path) or sidecar else listed).append(path)
    return listed, companions
