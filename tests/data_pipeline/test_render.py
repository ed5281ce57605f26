"""Rendering: settings checks, ring-parameter reproducibility, ring validation, and (slow, Blender)
the proof that stored poses and intrinsics project the object onto its rendered alpha mask."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract import cameras
from contract.schema import RingMeta, encode_png
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.render.blender import main, render_object
from data_pipeline.render.camera_agreement import iou, silhouette
from data_pipeline.render.ring_checks import border_fraction, object_mask, validate_ring
from data_pipeline.render.settings import (
    RenderedRing,
    RenderSettings,
    object_seed,
    sample_ring_params,
)
from data_pipeline.sources.demo_objects import PALETTE

REPO = Path(__file__).resolve().parents[2]

# Tiny but real: 8 views (targets at 0, 2, 4, 6), 80 px, few samples.
TINY = RenderSettings(num_views=8, rings=1, resolution=80, samples=4, denoise=False)


# ----------------------------------------------------------------------------- settings, no Blender


@pytest.mark.parametrize("views", [6, 10, 0, -4])
def test_views_not_a_multiple_of_four_are_refused(views):
    with pytest.raises(ValueError, match="multiple of 4"):
        RenderSettings(num_views=views)


@pytest.mark.parametrize(
    "change",
    [
        {"engine": "luxcore"},
        {"device": "tpu"},
        {"framing": "tight"},
        {"fov_range_deg": (60.0, 15.0)},
        {"rings": 0},
    ],
)
def test_inconsistent_settings_are_refused(change):
    with pytest.raises(ValueError):
        RenderSettings(**change)


def test_same_seed_gives_the_same_rings_and_another_seed_does_not():
    settings = RenderSettings()
    assert sample_ring_params(settings, 7) == sample_ring_params(settings, 7)
    assert sample_ring_params(settings, 7) != sample_ring_params(settings, 8)
    first, second = sample_ring_params(settings, 7)
    assert first.elevation_deg != second.elevation_deg  # each ring draws its own
    assert first.lights != second.lights


def test_ring_parameters_stay_in_their_ranges_and_follow_the_framing():
    for seed in range(50):
        for ring in sample_ring_params(RenderSettings(), seed):
            assert 0.0 <= ring.elevation_deg <= 30.0
            assert 15.0 <= ring.fov_deg <= 60.0
            assert 0.9 <= ring.jitter <= 1.1
            assert ring.distance == pytest.approx(
                cameras.distance_for_fov(ring.fov_deg, "mvdream", ring.jitter)
            )


def test_object_seed_is_stable_and_depends_on_uid_and_base():
    assert (
        object_seed(0, "abc") == object_seed(0, "abc") == 1648071599
    )  # pinned: a change reshuffles every job
    assert object_seed(0, "abc") != object_seed(1, "abc") != object_seed(0, "abd")


# ----------------------------------------------------------------------------- validation, no Blender


def _ring(views: np.ndarray, c2w: np.ndarray | None = None, resolution: int | None = None):
    num = len(views)
    azimuths = cameras.ring_azimuths(num)
    c2w = cameras.ring_c2w(azimuths, 10.0, 2.0) if c2w is None else c2w
    meta = RingMeta(
        uid="obj",
        ring=0,
        caption="",
        source="test",
        asset_path="obj.glb",
        asset_sha256="0" * 64,
        elevation_deg=10.0,
        fov_deg=40.0,
        distance=2.0,
        azimuths_deg=azimuths.tolist(),
        c2w=np.asarray(c2w).tolist(),
        border_fraction=[0.0] * num,
        resolution=resolution or views.shape[1],
    )
    return RenderedRing(meta, [encode_png(v) for v in views], 0.0)


def _disc_views(num: int = 4, size: int = 16) -> np.ndarray:
    views = np.zeros((num, size, size, 4), dtype=np.uint8)
    views[:, 4:12, 4:12] = 255
    return views


def test_border_fraction():
    alpha = np.zeros((10, 10), dtype=np.uint8)
    assert border_fraction(alpha) == 0.0
    alpha[0, :] = 255  # the top row: 10 of the 36 border pixels
    assert border_fraction(alpha) == pytest.approx(10 / 36)
    assert border_fraction(np.ones((10, 10))) == 1.0
    alpha[:] = 0
    alpha[3:7, 3:7] = 255  # inside the frame
    assert border_fraction(alpha) == 0.0


def test_validate_accepts_a_good_ring():
    assert validate_ring(_ring(_disc_views())).shape == (4, 16, 16, 4)


def test_validate_refuses_an_empty_view():
    views = _disc_views()
    views[2, ..., 3] = 0
    with pytest.raises(Refusal) as info:
        validate_ring(_ring(views))
    assert info.value.reason is Reason.EMPTY_RENDER
    assert "[2]" in info.value.detail


@pytest.mark.parametrize("bug", ["nan", "scaled", "mirrored"])
def test_validate_refuses_invalid_poses(bug):
    c2w = cameras.ring_c2w(cameras.ring_azimuths(4), 10.0, 2.0)
    if bug == "nan":
        c2w[1, 0, 3] = np.nan
    elif bug == "scaled":
        c2w[1, :3, :3] *= 1.5
    else:
        c2w[1, :3, 0] *= -1
    with pytest.raises(Refusal) as info:
        validate_ring(_ring(_disc_views(), c2w))
    assert info.value.reason is Reason.INVALID_POSE


def test_validate_refuses_a_wrong_resolution():
    with pytest.raises(Refusal) as info:
        validate_ring(_ring(_disc_views(), resolution=32))
    assert info.value.reason is Reason.RENDER_ERROR


# ----------------------------------------------------------------------------- BlenderProc start-up


def test_importing_the_render_core_starts_no_blender():
    code = (
        "import sys, data_pipeline.render.blender, data_pipeline.formats.mesh_inspection, data_pipeline.render.ring_checks, "
        "data_pipeline.sources.demo_objects, data_pipeline.render.blenderproc_env, data_pipeline.render.blender_import, "
        "data_pipeline.formats, data_pipeline.render.process, data_pipeline.job.worker; "
        "assert 'bpy' not in sys.modules and 'blenderproc' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.slow
def test_blenderproc_starts_once_and_leaves_the_interpreter_clean():
    import bpy  # noqa: F401  (bpy adds Blender's script folders to sys.path itself)

    from data_pipeline.render import blenderproc_env

    path_before = list(sys.path)
    bproc = blenderproc_env.ensure_blenderproc()
    assert blenderproc_env.ensure_blenderproc() is bproc
    assert sys.path == path_before  # BlenderProc removes site-packages; we put it back
    markers = [k for k in os.environ if "BLENDER_PYTHON_ENVIRONMENT" in k]
    assert markers == []  # child processes must not think they run inside Blender
    leftovers = [m for m in sys.modules.values() if isinstance(m, blenderproc_env._MissingModule)]
    assert leftovers == []
    assert hasattr(bproc, "loader") and hasattr(bproc, "renderer")
    assert blenderproc_env.blender_version().startswith("4.2")


# ----------------------------------------------------------------------------- Blender


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory):
    from data_pipeline.sources.demo_objects import write_builtin_samples

    directory = tmp_path_factory.mktemp("samples")
    write_builtin_samples(directory)
    return directory


@pytest.fixture(scope="module")
def robot_ring(samples_dir):
    # 96 px keeps the robot's thin parts (arm, legs) several pixels wide.
    settings = replace(TINY, resolution=96, fov_range_deg=(30.0, 50.0), elevation_range_deg=(5, 20))
    (ring,) = render_object(samples_dir / "robot.glb", "robot", "a robot", "builtin", settings, 3)
    return ring


@pytest.fixture(scope="module")
def house_ring(samples_dir):
    settings = replace(TINY, elevation_range_deg=(5.0, 15.0), fov_range_deg=(35.0, 45.0))
    (ring,) = render_object(samples_dir / "house.glb", "house", "a house", "builtin", settings, 5)
    return ring


@pytest.mark.slow
def test_stored_cameras_project_the_mesh_onto_the_alpha_mask(samples_dir, robot_ring):
    """SPEC 2: the stored c2w and vertical FoV project the normalised mesh onto every view's
    alpha mask. Fails for a wrong axis conversion, normalisation, FoV axis or camera pose."""
    from data_pipeline.formats.mesh_inspection import load_normalised_mesh

    mesh = load_normalised_mesh(samples_dir / "robot.glb")
    meta, size = robot_ring.meta, robot_ring.meta.resolution
    scores = []
    for png, c2w in zip(robot_ring.views_png, meta.c2w, strict=True):
        mask = object_mask(_decode(png))
        scores.append(
            iou(mask, silhouette(mesh.vertices, mesh.faces, np.array(c2w), meta.fov_deg, size))
        )
    assert min(scores) > 0.9, scores


@pytest.mark.slow
def test_a_rotated_or_mirrored_camera_would_be_caught(samples_dir, robot_ring):
    """The same comparison against cameras off by +-90 or 180 degrees of azimuth, or against the
    mirrored scene (a flipped camera axis), scores clearly lower in every view: the IoU test
    above tells those bugs apart from the right convention."""
    from data_pipeline.formats.mesh_inspection import load_normalised_mesh

    mesh = load_normalised_mesh(samples_dir / "robot.glb")
    meta, size = robot_ring.meta, robot_ring.meta.resolution
    wrong_scores = []
    for i, png in enumerate(robot_ring.views_png):
        mask = object_mask(_decode(png))
        c2w = np.array(meta.c2w[i])
        right = iou(mask, silhouette(mesh.vertices, mesh.faces, c2w, meta.fov_deg, size))
        wrong = []
        for offset in (90.0, -90.0, 180.0):
            rotated = cameras.orbit_c2w(
                meta.azimuths_deg[i] + offset, meta.elevation_deg, meta.distance
            )
            wrong.append(
                iou(mask, silhouette(mesh.vertices, mesh.faces, rotated, meta.fov_deg, size))
            )
        mirrored = mesh.vertices * [-1.0, 1.0, 1.0]  # what a camera with a flipped x axis sees
        wrong.append(iou(mask, silhouette(mirrored, mesh.faces, c2w, meta.fov_deg, size)))
        assert max(wrong) < right - 0.05, (i, right, wrong)
        wrong_scores.extend(wrong)
    assert np.mean(wrong_scores) < 0.8


@pytest.mark.slow
def test_alpha_is_straight_not_premultiplied(robot_ring):
    """Anti-aliased edge pixels keep the object's colour; premultiplied alpha would darken them
    in proportion to their alpha (about 4x here)."""
    views = np.stack([_decode(png) for png in robot_ring.views_png]).astype(np.float64)
    alpha = views[..., 3]
    edge = (alpha > 20) & (alpha < 120)
    inside = alpha == 255
    assert edge.sum() > 100
    assert views[edge][:, :3].mean() > 0.7 * views[inside][:, :3].mean()


@pytest.mark.slow
def test_ring_metadata_is_complete(robot_ring):
    meta = robot_ring.meta
    assert len(robot_ring.views_png) == len(meta.c2w) == len(meta.border_fraction) == 8
    assert meta.azimuths_deg == [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0]
    np.testing.assert_allclose(
        meta.c2w, cameras.ring_c2w(np.array(meta.azimuths_deg), meta.elevation_deg, meta.distance)
    )
    assert meta.render["engine"] == "cycles" and meta.render["samples"] == 4
    assert meta.render["renderer"].startswith("blenderproc 2.")
    assert meta.render["blender"].startswith("4.2")
    assert meta.render["device"] in ("CPU", "GPU") and meta.render["seed"] == 3
    assert {"world_color", "world_strength", "key", "fill"} <= set(meta.lights)
    recomputed = [border_fraction(_decode(png)) for png in robot_ring.views_png]
    assert meta.border_fraction == recomputed
    assert robot_ring.blender_seconds > 0
    assert RingMeta.from_json(meta.to_json()) == meta


def _palette_rgb(colour: str) -> np.ndarray:
    """(3,) sRGB 0-255 of a named colour of the built-in objects' palette."""
    return np.asarray(PALETTE[colour], dtype=np.float64)


def _colour_fraction(rgba: np.ndarray, rgb, tolerance_deg: float = 20.0) -> float:
    """Fraction of the image covered by saturated object pixels with the hue of `rgb`. Hue, not
    RGB distance: the random lights change brightness a lot and hue little."""
    hsv = np.asarray(Image.fromarray(rgba[..., :3]).convert("HSV"), dtype=np.float64)
    target = np.asarray(Image.fromarray(np.uint8([[rgb]])).convert("HSV"), dtype=np.float64)[0, 0]
    delta = np.abs(hsv[..., 0] - target[0]) * 360.0 / 256.0
    delta = np.minimum(delta, 360.0 - delta)
    saturated = (hsv[..., 1] > 0.4 * 255) & (hsv[..., 2] > 0.1 * 255)
    return float(((delta < tolerance_deg) & saturated & (rgba[..., 3] > 128)).mean())


@pytest.mark.slow
def test_the_front_is_seen_at_azimuth_zero(house_ring):
    """The house's blue door is on its front (glTF +Z, Blender -Y): it covers a good part of
    view 0 and is absent from the back view (V/2) and the side views."""
    views = [_decode(png) for png in house_ring.views_png]
    door = _palette_rgb("door_blue")
    front = _colour_fraction(views[0], door)
    assert front > 0.03, front
    for back_or_side in (2, 4, 6):
        assert _colour_fraction(views[back_or_side], door) < 0.002
    window = _palette_rgb("window_yellow")  # on the house's right (+X): seen from azimuth 90
    assert _colour_fraction(views[2], window) > 0.02
    assert _colour_fraction(views[6], window) < 0.002


@pytest.mark.slow
def test_same_seed_renders_the_same_ring_parameters(samples_dir, house_ring):
    settings = replace(TINY, elevation_range_deg=(5.0, 15.0), fov_range_deg=(35.0, 45.0))
    (again,) = render_object(samples_dir / "house.glb", "house", "a house", "builtin", settings, 5)
    for name in ("elevation_deg", "fov_deg", "distance", "c2w", "lights", "azimuths_deg"):
        assert getattr(again.meta, name) == getattr(house_ring.meta, name)
    # The scene was reset in between: only the house's vertices were normalised.
    assert again.meta.render["normalisation"] == house_ring.meta.render["normalisation"]


@pytest.mark.slow
def test_obj_with_a_missing_texture_renders_and_its_rings_say_so(tmp_path):
    from tests.data_pipeline.assets import CUBE_OBJ

    (tmp_path / "cube.mtl").write_text("newmtl wood\nKd 0.8 0.5 0.2\nmap_Kd wood.png\n")
    obj = tmp_path / "cube.obj"
    obj.write_text("mtllib cube.mtl\nusemtl wood\n" + CUBE_OBJ)
    settings = replace(TINY, num_views=4, resolution=32, samples=2)
    (ring,) = render_object(obj, "cube", "a cube", "local", settings, 0)
    assert ring.meta.notes == [
        "texture 'wood.png' (map_Kd in cube.mtl) is missing: rendered without it"
    ]
    assert all((_decode(png)[..., 3] > 127).any() for png in ring.views_png)  # still rendered
    assert RingMeta.from_json(ring.meta.to_json()).notes == ring.meta.notes


@pytest.mark.slow
def test_blender_errors_become_render_error_refusals(samples_dir, monkeypatch):
    from data_pipeline.render.blenderproc_env import ensure_blenderproc

    bproc = ensure_blenderproc()

    def broken_render(*_args, **_kwargs):
        raise RuntimeError("Error: out of GPU memory (simulated)")

    monkeypatch.setattr(bproc.renderer, "render", broken_render)
    with pytest.raises(Refusal) as info:
        render_object(samples_dir / "mug.glb", "mug", "", "builtin", TINY, 0)
    assert info.value.reason is Reason.RENDER_ERROR
    assert "out of GPU memory (simulated)" in info.value.detail


@pytest.mark.slow
def test_an_importer_that_silently_imports_nothing_is_a_render_error(samples_dir, monkeypatch):
    from data_pipeline.render.blenderproc_env import ensure_blenderproc

    bproc = ensure_blenderproc()
    monkeypatch.setattr(bproc.loader, "load_obj", lambda *_args, **_kwargs: [])
    with pytest.raises(Refusal) as info:
        render_object(samples_dir / "mug.glb", "mug", "", "builtin", TINY, 0)
    assert info.value.reason is Reason.RENDER_ERROR
    assert "no visible mesh" in info.value.detail


# ----------------------------------------------------------------------------- real assets

TINY_REAL = RenderSettings(num_views=4, rings=1, resolution=48, samples=2, denoise=False)


@pytest.mark.slow
@pytest.mark.assets
@pytest.mark.parametrize(
    "relative",
    [
        "meshes/Duck.glb",
        "meshes/Fox.gltf",
        "meshes/stanford_bunny.obj",
        "meshes/colored_airplane.ply",
        "broken/issue1580-zero-area-triangle.stl",  # merely odd: must render
    ],
)
def test_real_assets_render_with_non_empty_alpha(assets_dir, relative):
    (ring,) = render_object(assets_dir / relative, "asset", "", "test", TINY_REAL, 1)
    views = validate_ring(ring)
    assert all(object_mask(v).any() for v in views)
    normalisation = ring.meta.render["normalisation"]
    assert normalisation["mesh_objects"] >= 1


@pytest.mark.slow
@pytest.mark.assets
def test_vertex_colours_from_ply_show(assets_dir):
    (ring,) = render_object(assets_dir / "meshes/colored_airplane.ply", "a", "", "t", TINY_REAL, 1)
    rgba = _decode(ring.views_png[0])
    pixels = rgba[rgba[..., 3] > 128][:, :3].astype(float)
    saturation = pixels.max(axis=1) - pixels.min(axis=1)
    assert np.median(saturation) > 60  # rainbow vertex colours, not the grey default material


@pytest.mark.slow
@pytest.mark.assets
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("malformed.obj", Reason.INDEX_OUT_OF_RANGE),
        ("pond.0.ply", Reason.NO_FACES),
        ("BoxWithInfinites.glb", Reason.NONFINITE_VERTICES),
    ],
)
def test_broken_real_assets_are_refused_by_render_object(assets_dir, name, reason):
    with pytest.raises(Refusal) as info:
        render_object(assets_dir / "broken" / name, "broken", "", "test", TINY_REAL, 1)
    assert info.value.reason is reason


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_writes_rings_and_a_result(samples_dir, tmp_path):
    out = tmp_path / "out"
    args = ["--asset", str(samples_dir / "mug.glb"), "--out", str(out), "--views", "4"]
    assert main([*args, "--resolution", "32", "--samples", "2", "--rings", "2"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["ok"] and len(result["rings"]) == 2
    meta = RingMeta.from_json((out / "mug_r1" / "meta.json").read_bytes())
    assert meta.ring == 1 and meta.uid == "mug"
    assert Image.open(out / "mug_r1" / "view003.png").size == (32, 32)


def test_cli_reports_a_refusal(tmp_path):
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nf 1 2 3\n")
    assert main(["--asset", str(bad), "--out", str(tmp_path / "out")]) == 3
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result == {
        "ok": False,
        "reason": "index_out_of_range",
        "path": str(bad),
        "detail": result["detail"],
    }


# ----------------------------------------------------------------------------- every format

# Written by Blender's own exporters in a child process (a clean Blender, and the test's scene
# untouched): an asymmetric object (a box with a smaller box on its +X side), one file per
# format whose exporter this build has, and a .blend whose driver would write MARKER if scripts
# ran. OFF is written by trimesh (the smaller box on top).
_EXPORT = r"""
import sys, bpy
out, marker = sys.argv[1], sys.argv[2]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0))
bpy.ops.mesh.primitive_cube_add(size=0.4, location=(0.7, 0, 0))
written = []
def export(name, fn, **kw):
    try:
        fn(filepath=f"{out}/{name}", **kw)
        written.append(name)
    except (AttributeError, RuntimeError) as exc:
        print("no exporter for", name, exc, file=sys.stderr)
export("boxes.fbx", bpy.ops.export_scene.fbx)
export("boxes.usdc", bpy.ops.wm.usd_export)
export("boxes.usda", bpy.ops.wm.usd_export)
export("boxes.usdz", bpy.ops.wm.usd_export)
export("boxes.abc", bpy.ops.wm.alembic_export, as_background_job=False)
export("boxes.dae", bpy.ops.wm.collada_export)
cube = bpy.context.scene.objects[0]
driver = cube.driver_add("location", 2).driver
driver.type = "SCRIPTED"
driver.expression = f"__import__('pathlib').Path(r'{marker}').write_text('ran') and 0"
export("boxes.blend", bpy.ops.wm.save_as_mainfile, copy=True)
print("WRITTEN", " ".join(written), flush=True)
import os
os._exit(0)  # Blender's teardown after read_factory_settings segfaults in this wheel
"""


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory):
    import trimesh

    folder = tmp_path_factory.mktemp("exported")
    marker = folder / "scripts-ran.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT, str(folder), str(marker)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    marker.unlink(missing_ok=True)  # saving evaluated the driver once in the exporter
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    box = trimesh.util.concatenate([box, trimesh.creation.box(extents=(0.4, 0.4, 0.4))])
    box.vertices[len(box.vertices) // 2 :] += [0.0, 0.0, 0.7]  # on top: tells z-up from y-up
    (folder / "boxes.off").write_text(box.export(file_type="off"))
    return folder


@pytest.mark.slow
def test_blender_exported_files_of_every_new_format_pass_inspection_and_cut_ones_fail(
    exported_dir, tmp_path
):
    from data_pipeline.formats.mesh_inspection import inspect_asset

    files = sorted(p for p in exported_dir.iterdir() if p.name.startswith("boxes."))
    assert {".off", ".fbx", ".usdc", ".usda", ".usdz", ".abc", ".blend"} <= {
        p.suffix for p in files
    }
    for path in files:
        inspect_asset(path)  # real exporter output is accepted
        if path.suffix in (".usda", ".off"):
            continue  # text cut at a line end is a shorter valid file; test_formats cuts them
        cut = tmp_path / path.name
        cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
        with pytest.raises(Refusal) as info:
            inspect_asset(cut)
        assert info.value.reason is Reason.UNDECODABLE, (path.name, info.value)


def _missing(ext: str) -> str | None:
    from data_pipeline.formats import FORMATS
    from data_pipeline.render.blender_import import missing_importer
    from data_pipeline.render.blenderproc_env import ensure_blenderproc

    ensure_blenderproc()
    return missing_importer(FORMATS[ext])


@pytest.mark.slow
@pytest.mark.parametrize(
    "ext", [".off", ".fbx", ".usdc", ".usda", ".usdz", ".abc", ".blend", ".dae"]
)
def test_new_formats_render_into_valid_rings(exported_dir, ext):
    """Every new format this wheel imports renders into rings that pass validation (poses,
    alpha in every view), normalised to a unit box; one it cannot import is refused as
    unsupported_format naming the missing importer."""
    path = exported_dir / f"boxes{ext}"
    if not path.exists():
        pytest.skip(f"this bpy build has no exporter for {ext}")
    settings = replace(TINY, num_views=4, resolution=48, samples=2)
    why = _missing(ext)
    if why is not None:
        with pytest.raises(Refusal) as info:
            render_object(path, "boxes", "", "test", settings, 1)
        assert info.value.reason is Reason.UNSUPPORTED_FORMAT
        assert "importer is not available" in info.value.detail
        return
    (ring,) = render_object(path, "boxes", "two boxes", "test", settings, 1)
    views = validate_ring(ring)
    assert all(object_mask(v).any() for v in views)
    normalisation = ring.meta.render["normalisation"]
    assert normalisation["mesh_objects"] >= 1
    assert normalisation["scale"] == pytest.approx(1 / 1.4, rel=1e-3)  # 0.5 + 0.7 + 0.2 wide


@pytest.mark.slow
def test_off_renders_in_its_own_frame(exported_dir):
    """OFF goes through trimesh -> PLY -> Blender unchanged (z up): the stored cameras project
    the normalised mesh onto every view's alpha mask."""
    from data_pipeline.formats.mesh_inspection import load_normalised_mesh

    settings = replace(TINY, resolution=64, fov_range_deg=(35.0, 45.0))
    (ring,) = render_object(exported_dir / "boxes.off", "boxes", "", "test", settings, 2)
    mesh = load_normalised_mesh(exported_dir / "boxes.off")
    for png, c2w in zip(ring.views_png, ring.meta.c2w, strict=True):
        expected = silhouette(mesh.vertices, mesh.faces, np.array(c2w), ring.meta.fov_deg, 64)
        assert iou(object_mask(_decode(png)), expected) > 0.9


@pytest.mark.slow
def test_blend_files_are_appended_without_running_their_scripts(exported_dir):
    """boxes.blend has a Python driver that writes a file when evaluated; even with Blender's
    "auto-run scripts" preference on (as a user may have it), appending it runs nothing."""
    import bpy

    from data_pipeline.render.blender_import import import_asset
    from data_pipeline.render.blenderproc_env import ensure_blenderproc

    bproc = ensure_blenderproc()
    filepaths = bpy.context.preferences.filepaths
    filepaths.use_scripts_auto_execute = True
    try:
        bproc.clean_up(clean_up_camera=True)
        import_asset(bproc, str(exported_dir / "boxes.blend"))
        bpy.context.view_layer.update()  # evaluates drivers, if any were left
        bpy.context.scene.frame_set(3)
        assert len([o for o in bpy.context.scene.objects if o.type == "MESH"]) == 2
        assert not (exported_dir / "scripts-ran.txt").exists()
        filepaths.use_scripts_auto_execute = True
        (ring,) = render_object(exported_dir / "boxes.blend", "b", "", "test", TINY, 1)
    finally:
        filepaths.use_scripts_auto_execute = False
    validate_ring(ring)
    assert not (exported_dir / "scripts-ran.txt").exists()


@pytest.mark.slow
def test_a_missing_importer_is_an_unsupported_format_refusal(exported_dir, monkeypatch):
    """A bpy build without an importer (every importer exists in the 4.2 wheel we pin, so one is
    faked away) refuses the format's files as unsupported_format naming the importer."""
    from data_pipeline.formats import FORMATS

    assert _missing(".abc") is None
    monkeypatch.setitem(FORMATS, ".abc", replace(FORMATS[".abc"], importer="wm.nonexistent_import"))
    why = _missing(".abc")
    assert why is not None and "wm.nonexistent_import importer is not available" in why
    with pytest.raises(Refusal) as info:
        render_object(exported_dir / "boxes.abc", "boxes", "", "test", TINY, 1)
    assert info.value.reason is Reason.UNSUPPORTED_FORMAT
    assert info.value.detail == why and ".abc files" in why
