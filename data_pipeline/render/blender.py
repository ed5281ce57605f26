"""Render one object into rings of views with Blender (through BlenderProc): a plain function.

`render_object(...)` inspects the asset (data_pipeline.formats.mesh_inspection), imports it into a clean Blender
scene (data_pipeline.render.blender_import: the importer its format names), normalises it (SPEC 2:
bounding-box centre to the origin, largest side 1), and renders `settings.rings` rings of
`settings.num_views` views. Each ring draws its own elevation, FoV, distance and lighting from a
numpy Generator seeded by `seed` (same seed, same rings). Cameras come from contract.cameras
and are checked against Blender's after keyframing, so the stored c2w are exactly the cameras
Blender rendered. Blender errors become `Refusal(Reason.RENDER_ERROR, path, Blender's message)`;
nothing is swallowed. No Ray here: the job (data_pipeline.job) fans this function out.

`render_object` does not validate its rings: whoever stages them does, once (the render process,
data_pipeline.render.process.render_to_tar, and this CLI).

CLI, to render one object by hand (the job renders through the render process,
data_pipeline.render.process, whose protocol is data_pipeline.render.protocol):

    python -m data_pipeline.render.blender --asset PATH --out DIR [--uid U --caption C --source S
        --views N --rings R --resolution R --samples S --seed K --framing F --device D]

writes, for each ring r,
    DIR/{uid}_r{r}/meta.json          RingMeta as JSON (contract.schema; same bytes as shards)
    DIR/{uid}_r{r}/view{i:03d}.png    RGBA straight alpha, view i at azimuth i * 360 / N
and DIR/result.json, a report for a person (ring folders, settings, seed; not a protocol message):
{"ok": true, "rings": [...dirs], "blender_seconds": [...]} or
{"ok": false, "reason": ..., "path": ..., "detail": ...} (exit code 0 / 3 for a refusal).

Shapes: V views, H = W = resolution.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from contract import cameras
from contract.schema import META_EXT, VIEW_EXT, RingMeta, encode_png
from data_pipeline.formats.mesh_inspection import MIN_EXTENT, AssetReport, inspect_asset
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.render.blender_import import import_asset
from data_pipeline.render.scene_setup import configure_scene
from data_pipeline.render.settings import (
    RenderedRing,
    RenderSettings,
    RingParams,
    object_seed,
    sample_ring_params,
)

CLIP_START, CLIP_END = 0.01, 100.0
POSE_TOL = 1e-5  # max |Blender camera - stored c2w| per matrix entry


# ----------------------------------------------------------------------------- Blender side


def _blender_call(path: str, what: str, fn, *args, **kwargs):
    """Run a Blender operation; any exception becomes RENDER_ERROR with Blender's message."""
    try:
        return fn(*args, **kwargs)
    except Refusal:
        raise
    except Exception as exc:  # bpy raises RuntimeError (and others) with Blender's report
        message = " ".join(str(exc).split())
        raise Refusal(
            Reason.RENDER_ERROR, path, f"{what}: {type(exc).__name__}: {message}"
        ) from exc


# Object types whose evaluated geometry is a mesh the render shows (.blend files hold curves,
# text and metaballs besides meshes).
GEOMETRY_TYPES = ("MESH", "CURVE", "SURFACE", "FONT", "META")


def _mesh_world_bounds(objects) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """World-space bounding box of the evaluated (modifiers, skinning) meshes, vertex count,
    polygon count and non-finite vertex count (those are left out of the box)."""
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    lo, hi, count, polygons, nonfinite = np.full(3, np.inf), np.full(3, -np.inf), 0, 0, 0
    for obj in objects:
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            coords = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
            mesh.vertices.foreach_get("co", coords)
            polygons += len(mesh.polygons)
        finally:
            evaluated.to_mesh_clear()
        if not len(coords):
            continue
        matrix = np.array(evaluated.matrix_world)
        with np.errstate(invalid="ignore", over="ignore"):
            world = coords.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
        finite = np.isfinite(world).all(axis=1)
        nonfinite += int((~finite).sum())
        count += len(world)
        if finite.any():
            world = world[finite]
            lo, hi = np.minimum(lo, world.min(axis=0)), np.maximum(hi, world.max(axis=0))
    return lo, hi, count, polygons, nonfinite


def _import_and_normalise(bproc, path: str, inspected: bool = True) -> dict[str, Any]:
    """Import the asset, freeze it at its rest pose, normalise it; returns what was done.

    `inspected`: trimesh checked the geometry before Blender (AssetReport.has_geometry), so a
    geometry problem here is Blender's; otherwise (scene formats) it is the asset's refusal."""
    import bpy
    from mathutils import Matrix

    before = set(bpy.data.objects)
    _blender_call(path, "import", import_asset, bproc, path)
    imported = [obj for obj in bpy.data.objects if obj not in before]
    removed = []
    for obj in imported:
        # Animations and imported cameras/lights would make views inconsistent or uncontrolled.
        obj.animation_data_clear()
        if obj.type == "ARMATURE":
            obj.data.pose_position = "REST"
        if obj.type in ("CAMERA", "LIGHT", "LIGHT_PROBE", "SPEAKER"):
            removed.append(obj.type.lower())
            bpy.data.objects.remove(obj, do_unlink=True)
    bpy.context.view_layer.update()
    # Only what the render sees: the glTF importer parks bone shapes in an excluded collection.
    meshes = [
        obj
        for obj in bpy.context.view_layer.objects
        if obj.type in GEOMETRY_TYPES and obj.visible_get() and not obj.hide_render
    ]
    if not meshes and inspected:
        # inspect_asset found faces, so this is Blender's importer failing (it may only log).
        raise Refusal(Reason.RENDER_ERROR, path, "Blender's importer created no visible mesh")
    bpy.context.view_layer.update()
    lo, hi, count, polygons, nonfinite = _mesh_world_bounds(meshes)
    if not inspected and polygons == 0:
        raise Refusal(Reason.NO_FACES, path, f"no visible polygons in the file ({count} vertices)")
    if nonfinite:
        raise Refusal(
            Reason.NONFINITE_VERTICES, path, f"{nonfinite} of {count} vertices are NaN or inf"
        )
    extent = hi - lo
    if not np.isfinite(extent).all() or extent.max() <= (0.0 if inspected else MIN_EXTENT):
        raise Refusal(Reason.DEGENERATE_EXTENT, path, f"Blender bounding box {lo} .. {hi}")
    centre, scale = (lo + hi) / 2.0, 1.0 / float(extent.max())
    normalise = Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(-centre)
    for obj in bpy.context.scene.objects:
        if obj.parent is None and obj != bpy.context.scene.camera:
            obj.matrix_world = normalise @ obj.matrix_world
    bpy.context.view_layer.update()
    lo2, hi2, *_ = _mesh_world_bounds(meshes)
    if abs(float((hi2 - lo2).max()) - 1.0) > 1e-3 or np.abs((lo2 + hi2) / 2).max() > 1e-3:
        raise Refusal(
            Reason.RENDER_ERROR, path, f"normalisation failed: bounding box {lo2} .. {hi2}"
        )
    return {
        "centre": [float(c) for c in centre],
        "scale": scale,
        "blender_vertices": count,
        "mesh_objects": len(meshes),
        "removed_objects": sorted(removed),
    }


def _setup_lights(bproc, lights: dict[str, Any]) -> list:
    """World colour and the two suns of one ring; returns the created light objects."""
    bproc.renderer.set_world_background(lights["world_color"], strength=lights["world_strength"])
    created = []
    for name in ("key", "fill"):
        spec = lights[name]
        light = bproc.types.Light(light_type="SUN", name=f"{name}_light")
        light.set_energy(spec["energy"])
        light.set_color(spec["color"])
        # A sun shines along its -z: the look-at from its direction towards the origin.
        pose = cameras.orbit_c2w(spec["azimuth_deg"], spec["elevation_deg"], 10.0)
        light.set_local2world_mat(pose)
        created.append(light)
    return created


def _set_ring_cameras(bproc, path: str, params: RingParams, c2w: np.ndarray) -> None:
    import bpy

    scene = bpy.context.scene
    camera = scene.camera
    bproc.utility.reset_keyframes()
    camera.data.sensor_fit = "VERTICAL"  # our FoV is vertical (SPEC 2); square images anyway
    camera.data.lens_unit = "FOV"
    camera.data.angle_y = math.radians(params.fov_deg)
    camera.data.clip_start, camera.data.clip_end = CLIP_START, CLIP_END
    camera.data.shift_x = camera.data.shift_y = 0.0
    for frame, pose in enumerate(c2w):
        bproc.camera.add_camera_pose(pose, frame=frame)
    # The stored c2w must be exactly what Blender renders with: read them back per frame.
    for frame, pose in enumerate(c2w):
        scene.frame_set(frame)
        used = np.array(camera.matrix_world)
        if np.abs(used - pose).max() > POSE_TOL:
            raise Refusal(
                Reason.INVALID_POSE, path, f"Blender's camera at frame {frame} differs from c2w"
            )
    if abs(camera.data.angle_y - math.radians(params.fov_deg)) > 1e-6:
        raise Refusal(Reason.RENDER_ERROR, path, "Blender did not take the vertical FoV")


def _render_frames(bproc, path: str, num_views: int, resolution: int) -> tuple[list, float]:
    """Render frames 0..V-1 to PNG files and read them back.  -> (V,) of (H, W, 4) uint8"""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="render-") as out_dir:
        start = time.perf_counter()
        _blender_call(
            path,
            "render",
            bproc.renderer.render,
            output_dir=out_dir,
            file_prefix="view_",
            output_key=None,  # no registration in BlenderProc's global output list
            return_data=False,
            verbose=True,  # Blender's own log goes to stdout; no progress bar thread
        )
        seconds = time.perf_counter() - start
        views = []
        for i in range(num_views):
            file = Path(out_dir) / f"view_{i:04d}.png"
            if not file.is_file():
                raise Refusal(Reason.RENDER_ERROR, path, f"Blender wrote no image for view {i}")
            with Image.open(file) as image:
                image.load()
                if image.mode != "RGBA" or image.size != (resolution, resolution):
                    raise Refusal(
                        Reason.RENDER_ERROR, path, f"view {i} is {image.mode} {image.size}"
                    )
                views.append(np.asarray(image).copy())
    return views, seconds


def render_object(
    asset_path: str | Path,
    uid: str,
    caption: str,
    source: str,
    settings: RenderSettings,
    seed: int,
    sha256: str | None = None,
) -> list[RenderedRing]:
    """Render `settings.rings` rings of one asset; raises `Refusal` (never returns partial rings).

    The scene is reset before and after, so the function can be called many times per process.
    """
    from data_pipeline.render.blenderproc_env import (
        blender_version,
        blenderproc_version,
        ensure_blenderproc,
    )
    from data_pipeline.render.ring_checks import border_fraction

    path = str(asset_path)
    report: AssetReport = inspect_asset(path)
    # A Blender that cannot start is the machine's problem, not the asset's: no Refusal (which
    # would quarantine every object), the error propagates and stops the worker.
    bproc = ensure_blenderproc()
    render_info = {
        "renderer": f"blenderproc {blenderproc_version()}",
        "blender": blender_version(),
        "engine": settings.engine,
        "samples": settings.samples,
        "denoise": settings.denoise,
        "cycles": asdict(settings.cycles),
        "resolution": settings.resolution,
        "framing": settings.framing,
        "view_transform": settings.view_transform,
        "seed": seed,
    }
    rings: list[RenderedRing] = []
    try:
        _blender_call(path, "reset scene", bproc.clean_up, clean_up_camera=True)
        render_info.update(configure_scene(bproc, settings))  # config errors are not refusals
        render_info["normalisation"] = _import_and_normalise(bproc, path, report.has_geometry)
        azimuths = cameras.ring_azimuths(settings.num_views)
        for params in sample_ring_params(settings, seed):
            c2w = cameras.ring_c2w(azimuths, params.elevation_deg, params.distance)  # (V, 4, 4)
            lights = _blender_call(path, "lights", _setup_lights, bproc, params.lights)
            _set_ring_cameras(bproc, path, params, c2w)
            import bpy

            bpy.context.scene.cycles.seed = params.cycles_seed
            views, seconds = _render_frames(bproc, path, settings.num_views, settings.resolution)
            for light in lights:
                bpy.data.objects.remove(light.blender_obj, do_unlink=True)
            meta = RingMeta(
                uid=uid,
                ring=params.ring,
                caption=caption,
                source=source,
                asset_path=path,
                asset_sha256=sha256 or report.sha256,
                elevation_deg=params.elevation_deg,
                fov_deg=params.fov_deg,
                distance=params.distance,
                azimuths_deg=[float(a) for a in azimuths],
                c2w=c2w.tolist(),
                border_fraction=[border_fraction(v) for v in views],
                resolution=settings.resolution,
                lights=params.lights,
                render={
                    **render_info,
                    "distance_jitter": params.jitter,
                    "cycles_seed": params.cycles_seed,
                },
                notes=list(report.notes),
            )
            rings.append(RenderedRing(meta, [encode_png(v) for v in views], seconds))
    except BaseException:
        with contextlib.suppress(Exception):  # the error that got us here matters more
            bproc.clean_up(clean_up_camera=True)
        raise
    _blender_call(path, "reset scene", bproc.clean_up, clean_up_camera=True)
    return rings


# ----------------------------------------------------------------------------- CLI


def write_ring_dir(ring: RenderedRing, out: Path) -> Path:
    """DIR/{uid}_r{ring}/meta.json and view{i:03d}.png (the CLI layout)."""
    ring_dir = out / f"{ring.meta.uid}_r{ring.meta.ring}"
    ring_dir.mkdir(parents=True, exist_ok=True)
    (ring_dir / META_EXT).write_bytes(ring.meta.to_json())
    for i, png in enumerate(ring.views_png):
        (ring_dir / VIEW_EXT.format(index=i)).write_bytes(png)
    return ring_dir


def main(argv: list[str] | None = None) -> int:
    from data_pipeline.render.ring_checks import validate_ring

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--asset", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--uid", default=None, help="default: the file name without extension")
    parser.add_argument("--caption", default="")
    parser.add_argument("--source", default="local")
    parser.add_argument("--sha256", default=None)
    defaults = RenderSettings()
    parser.add_argument("--views", type=int, default=defaults.num_views)
    parser.add_argument("--rings", type=int, default=defaults.rings)
    parser.add_argument("--resolution", type=int, default=defaults.resolution)
    parser.add_argument("--samples", type=int, default=defaults.samples)
    parser.add_argument("--seed", type=int, default=None, help="default: object_seed(0, uid)")
    parser.add_argument("--framing", default=defaults.framing)
    parser.add_argument("--device", default=defaults.device)
    args = parser.parse_args(argv)

    uid = args.uid or args.asset.stem
    settings = RenderSettings(
        num_views=args.views, rings=args.rings, resolution=args.resolution,
        samples=args.samples, framing=args.framing, device=args.device,
    )  # fmt: skip
    seed = object_seed(settings.seed, uid) if args.seed is None else args.seed
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        rings = render_object(
            args.asset, uid, args.caption, args.source, settings, seed, args.sha256
        )
        for ring in rings:
            validate_ring(ring)
    except Refusal as refusal:
        result: dict[str, Any] = {"ok": False, "reason": refusal.reason.value, "path": refusal.path,
                  "detail": refusal.detail}  # fmt: skip
        (args.out / "result.json").write_text(json.dumps(result, indent=1))
        print(f"refused: {refusal}", file=sys.stderr)
        return 3
    dirs = [str(write_ring_dir(ring, args.out)) for ring in rings]
    result = {
        "ok": True,
        "rings": dirs,
        "blender_seconds": [ring.blender_seconds for ring in rings],
        "settings": asdict(settings),
        "seed": seed,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
