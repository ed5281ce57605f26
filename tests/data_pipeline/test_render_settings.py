"""The render-speed settings (issue 20): Cycles' settings are typed, validated and reach Blender;
the job gives each worker its share of threads; throughput figures for planning a cluster; one
object rendered with the defaults passes the ring checks. No timing assertions: the figures live
in bench/results/render_quality.md."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data_pipeline.job.config import RayConfig, RenderJobConfig
from data_pipeline.job.run import check_settings, worker_settings
from data_pipeline.job.summary import objects_per_hour
from data_pipeline.render.camera_agreement import ring_iou
from data_pipeline.render.ring_checks import validate_ring
from data_pipeline.render.settings import CyclesSettings, RenderSettings, object_seed
from data_pipeline.sources import BuiltinSourceConfig


@pytest.mark.parametrize(
    "change",
    [
        {"denoise_prefilter": "SMART"},
        {"denoise_quality": "ULTRA"},
        {"adaptive_threshold": -0.1},
        {"adaptive_min_samples": -1},
        {"diffuse_bounces": -1},
        {"transparent_max_bounces": -2},
        {"pixel_filter_width": 0.0},
    ],
)
def test_inconsistent_cycles_settings_are_refused(change):
    with pytest.raises(ValueError, match=r"cycles\."):
        CyclesSettings(**change)


def test_cycles_settings_come_from_plain_dicts_as_hydra_gives_them():
    settings = RenderSettings(cycles={"glossy_bounces": 2, "denoise_prefilter": "FAST"})
    assert isinstance(settings.cycles, CyclesSettings)
    assert settings.cycles.glossy_bounces == 2 and settings.cycles.denoise_prefilter == "FAST"
    with pytest.raises(ValueError, match="threads"):
        RenderSettings(threads=-1)


def test_each_worker_gets_its_share_of_threads_and_an_explicit_count_is_kept():
    def cfg(render=None, **ray):
        return RenderJobConfig(
            source=BuiltinSourceConfig(), render=render or RenderSettings(), ray=RayConfig(**ray)
        )

    # a local cluster: the machine's cores shared among the workers that actually start
    assert worker_settings(cfg(num_cpus=16), workers=16).threads == 1
    assert worker_settings(cfg(num_cpus=16), workers=2).threads == 8  # e.g. 2 objects left
    assert worker_settings(cfg(num_cpus=2), workers=4).threads == 1
    # a cluster the job joined: what Ray reserves per worker
    assert worker_settings(cfg(address="auto", cpus_per_worker=4.0), workers=2).threads == 4
    assert worker_settings(cfg(address="auto", cpus_per_worker=0.5), workers=2).threads == 1
    assert worker_settings(cfg(render=RenderSettings(threads=3), num_cpus=16), 2).threads == 3


def test_a_job_resumes_with_other_threads_but_not_with_other_cycles_settings(tmp_path):
    from data_pipeline.job.run import JobError

    def cfg(**render):
        return RenderJobConfig(
            source=BuiltinSourceConfig(), render=RenderSettings(**render), output_dir=str(tmp_path)
        )

    check_settings(str(tmp_path), cfg())
    (tmp_path / "staging").mkdir()  # an object already staged: settings must match from now on
    (tmp_path / "staging" / "obj.tar").write_bytes(b"")
    check_settings(str(tmp_path), cfg(threads=4))
    with pytest.raises(JobError, match="cycles"):
        check_settings(str(tmp_path), cfg(cycles={"glossy_bounces": 4}))


def test_objects_per_hour_per_worker_and_per_cpu():
    rate = objects_per_hour(4, 100.0, [20.0, 30.0, 10.0, 20.0], cpus_per_worker=2.0)
    assert rate["job"] == pytest.approx(144.0)  # 4 objects in 100 s
    assert rate["per_worker"] == pytest.approx(180.0)  # 20 s per object
    assert rate["per_cpu"] == pytest.approx(90.0)
    empty = objects_per_hour(0, 5.0, [], cpus_per_worker=1.0)
    assert empty["job"] is None and empty["per_worker"] is None and empty["per_cpu"] is None


# ----------------------------------------------------------------------------- Blender


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory):
    from data_pipeline.sources.demo_objects import write_builtin_samples

    directory = tmp_path_factory.mktemp("samples")
    write_builtin_samples(directory)
    return directory


@pytest.mark.slow
def test_a_ring_rendered_with_the_defaults_passes_the_ring_checks(samples_dir):
    """The robot with every default sampling, denoising and light-path setting (views, size and
    the camera ranges reduced as in test_render.py's robot ring, so thin parts stay pixels wide)."""
    from contract.schema import decode_png
    from data_pipeline.formats.mesh_inspection import load_normalised_mesh
    from data_pipeline.render.blender import render_object

    settings = RenderSettings(
        num_views=8, rings=1, resolution=96, fov_range_deg=(30.0, 50.0),
        elevation_range_deg=(5.0, 20.0),
    )  # fmt: skip
    assert settings.cycles == CyclesSettings() and settings.samples == RenderSettings().samples
    seed = object_seed(0, "robot")
    (ring,) = render_object(
        samples_dir / "robot.glb", "robot", "a robot", "builtin", settings, seed
    )
    validate_ring(ring)  # alpha present, object off the border, poses, resolution
    assert ring.meta.render["cycles"] == dataclasses.asdict(CyclesSettings())  # what Blender got
    assert ring.meta.render["threads"] >= 1
    views = np.stack([decode_png(png, "robot", i) for i, png in enumerate(ring.views_png)])
    scores = ring_iou(load_normalised_mesh(samples_dir / "robot.glb"), ring.meta, views)
    assert min(scores) > 0.9, scores  # the stored cameras agree with the images


def test_a_folder_rendered_before_the_cycles_settings_resumes_only_with_the_settings_it_had(
    tmp_path,
):
    """job.json from before issue 20 has no "cycles": it stands for what Blender then used."""
    import json

    from data_pipeline.job.run import JOB_FILE, JobError
    from data_pipeline.job.summary import plain_config
    from data_pipeline.render.settings import UNRECORDED_CYCLES

    def cfg(**render):
        return RenderJobConfig(
            source=BuiltinSourceConfig(), render=RenderSettings(**render), output_dir=str(tmp_path)
        )

    old = plain_config(cfg().render)
    del old["cycles"], old["threads"]
    (tmp_path / JOB_FILE).write_text(json.dumps({"render": old}))
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "obj.tar").write_bytes(b"")
    with pytest.raises(JobError, match="cycles"):
        check_settings(str(tmp_path), cfg())  # the new defaults render other images
    check_settings(str(tmp_path), cfg(cycles=dataclasses.asdict(UNRECORDED_CYCLES)))
