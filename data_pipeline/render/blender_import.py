"""Getting one asset into Blender's scene: the importer its format names (data_pipeline.formats),
checked to exist in this bpy build (a missing one is `Refusal(UNSUPPORTED_FORMAT)` naming it, not
a crash), its add-on enabled, .blend files appended without running their scripts, OFF files
converted to PLY first. Runs inside Blender (the render process); data_pipeline.render.blender calls
`import_asset` and checks and normalises what it created.

The five formats of the first releases (.glb .gltf .obj .ply .stl, lower-case extension) still
go through BlenderProc's loader, which gives PLY and STL their default materials.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from data_pipeline.formats import FORMATS, Format, format_for
from data_pipeline.refusals import Reason, Refusal

_BPROC_LOADER = frozenset({".glb", ".gltf", ".obj", ".ply", ".stl"})
# Keyword arguments per importer: synchronous, and no scene-wide side effects we would undo.
_OPTIONS: dict[str, dict[str, Any]] = {
    "wm.obj_import": {"validate_meshes": False},  # as BlenderProc's loader calls it
    "wm.alembic_import": {"as_background_job": False, "set_frame_range": False},
    "wm.usd_import": {"set_frame_range": False},
}


def _operator(idname: str) -> Any:
    """The bpy.ops operator `module.name`, or None if this build does not have it."""
    import bpy

    module, _, name = idname.partition(".")
    op = getattr(getattr(bpy.ops, module), name)
    try:
        op.get_rna_type()
    except KeyError:  # bpy.ops makes a wrapper for any name; the RNA type exists only if real
        return None
    return op


def missing_importer(spec: Format) -> str | None:
    """Why this build cannot import the format (the importer or its add-on is missing), or None.

    Enables the format's add-on if it has one (once per process)."""
    import addon_utils
    import bpy

    if spec.importer == "append":
        return None
    if spec.addon is not None and not addon_utils.check(spec.addon)[1]:
        try:
            addon_utils.enable(spec.addon, default_set=True, handle_error=_raise)
        except Exception as exc:
            return f"Blender add-on {spec.addon} cannot be enabled in this bpy build: {exc}"
    if _operator(spec.importer) is None:
        return (
            f"Blender's {spec.importer} importer is not available in this bpy build "
            f"({bpy.app.version_string}): cannot import {spec.ext} files"
        )
    return None


def _raise(exc: BaseException) -> None:
    raise exc


def available_importers() -> dict[str, str | None]:
    """Extension -> None if this build imports it, else why not (for tests and diagnostics)."""
    return {ext: missing_importer(spec) for ext, spec in FORMATS.items()}


def import_asset(bproc: Any, path: str) -> None:
    """Import the asset into the current scene; raises Refusal, or the importer's exception."""
    spec = format_for(path)
    if spec is None:
        raise Refusal(Reason.UNSUPPORTED_FORMAT, path, f"no Blender importer for {Path(path).name}")
    if spec.convert_to is not None:
        return _import_converted(bproc, path, spec.convert_to)
    why = missing_importer(spec)
    if why is not None:
        raise Refusal(Reason.UNSUPPORTED_FORMAT, path, why)
    if Path(path).suffix in _BPROC_LOADER:  # exact case: BlenderProc's checks are case-sensitive
        bproc.loader.load_obj(path)
    elif spec.importer == "append":
        _append_blend(path)
    else:
        result = _operator(spec.importer)(filepath=path, **_OPTIONS.get(spec.importer, {}))
        if "FINISHED" not in result:
            raise Refusal(Reason.RENDER_ERROR, path, f"{spec.importer} returned {sorted(result)}")
        if spec.ext == ".ply":  # as BlenderProc's loader does: show the vertex colours
            _vertex_colour_material(bproc)
    _freeze_caches()
    return None


def _import_converted(bproc: Any, path: str, ext: str) -> None:
    """Formats Blender has no importer for (OFF): trimesh writes the mesh as `ext` into a
    temporary folder (the render process's TMPDIR, i.e. the worker's folder), Blender imports it."""
    import trimesh

    folder = Path(tempfile.mkdtemp(prefix="convert-"))
    try:
        converted = folder / (Path(path).stem + ext)
        mesh = trimesh.load(path, force="mesh", process=False)
        mesh.export(converted)
        import_asset(bproc, str(converted))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _append_blend(path: str) -> None:
    """Append every object of a .blend library to the scene. Nothing of the file runs: its
    scripts, drivers and registered text blocks need auto-execution, which stays off."""
    import bpy

    bpy.context.preferences.filepaths.use_scripts_auto_execute = False  # also clears G.f's flag
    with bpy.data.libraries.load(path, link=False) as (source, target):
        target.objects = list(source.objects)
    # Drivers and animation go before anything is evaluated (render.py clears them later anyway).
    for data in (bpy.data.objects, bpy.data.meshes, bpy.data.shape_keys, bpy.data.materials):
        for item in data:
            if item.animation_data is not None:
                item.animation_data_clear()
    collection = bpy.context.scene.collection
    for obj in target.objects:
        if obj is not None and obj.name not in collection.objects:
            collection.objects.link(obj)


def _vertex_colour_material(bproc: Any) -> None:
    import bpy

    material = bproc.material.create("ply_material")
    material.map_vertex_color()
    for obj in bpy.context.selected_objects:
        if obj.type == "MESH" and not obj.data.materials:
            obj.data.materials.append(material.blender_obj)


def _freeze_caches() -> None:
    """Alembic and USD mesh caches play their animation as frames change, and every view of a
    ring is a frame: pin them to the frame the object is normalised at."""
    import bpy

    for cache in bpy.data.cache_files:
        cache.override_frame = True
        cache.frame = float(bpy.context.scene.frame_current)
