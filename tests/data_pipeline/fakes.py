"""Stand-ins for Blender and its inputs in the data_pipeline tests: `fake_ring` (a ring as a
renderer returns it, without Blender), `fake_render` (a renderer whose behaviour the asset's
bytes choose), the assets that drive it and the render job's config at tiny settings.

`FAKE` names `fake_render` as `module:function`: the render worker imports it in its own
process, so it must stay importable from the repository root under this name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract import cameras
from contract.schema import RingMeta, encode_png
from data_pipeline.job.config import RayConfig, RenderJobConfig
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.render.settings import RenderedRing, RenderSettings
from data_pipeline.sources import LocalSourceConfig


def fake_ring(
    uid: str, ring: int = 0, num_views: int = 8, resolution: int = 16, seed: int = 0
) -> tuple[RingMeta, list[bytes]]:
    """A schema-valid ring: real cameras, random opaque-square RGBA views."""
    rng = np.random.default_rng(seed)
    az = cameras.ring_azimuths(num_views)
    elevation, fov = 15.0, 40.0
    distance = cameras.distance_for_fov(fov, "bounding_sphere")
    meta = RingMeta(
        uid=uid,
        ring=ring,
        caption=f"a test object {uid}",
        source="test",
        asset_path=f"/assets/{uid}.glb",
        asset_sha256=f"{seed:064x}",
        elevation_deg=elevation,
        fov_deg=fov,
        distance=distance,
        azimuths_deg=az.tolist(),
        c2w=cameras.ring_c2w(az, elevation, distance).tolist(),
        border_fraction=[0.0] * num_views,
        resolution=resolution,
        render={"engine": "synthetic", "seed": seed},
    )
    views = []
    for _ in range(num_views):
        img = rng.integers(0, 256, size=(resolution, resolution, 4), dtype=np.uint8)
        img[..., 3] = 0
        img[4:-4, 4:-4, 3] = 255
        views.append(encode_png(img))
    return meta, views


FAKE = "tests.data_pipeline.fakes:fake_render"  # imported by the render process
TINY = dict(num_views=4, rings=2, resolution=16, samples=1)


def fake_render(asset_path, uid, caption, source, settings, seed, sha256=None):
    """Behaves as the asset's bytes say: hang, crash, boom (an error that is not a refusal),
    refuse, killactor (kill the Ray actor once), flaky (crash once), or render
    (after `sleep=SECONDS` if given; with a note in every ring for `note`). The bytes decide, not
    the environment: Ray actors inherit the cluster's environment, not the driver's."""
    data = Path(asset_path).read_bytes()
    if b"hang" in data:
        time.sleep(3600)
    if b"crash" in data:
        os._exit(3)
    if b"boom" in data:  # an error that is not a refusal (environment, config, bug)
        raise RuntimeError("boom: not the asset's fault")
    if b"refuse" in data:
        raise Refusal(Reason.NO_FACES, str(asset_path), "fake: no faces")
    if b"killactor" in data:  # the Ray actor itself dies (once), not only its render process
        marker = Path(f"{asset_path}.tried")
        if not marker.exists():
            marker.touch()
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(3600)
    if b"flaky" in data:
        marker = Path(f"{asset_path}.tried")
        if not marker.exists():
            marker.touch()
            os._exit(4)
    delay = float(data.split(b"sleep=")[1]) if b"sleep=" in data else 0.0
    time.sleep(delay)
    rings = []
    for r in range(settings.rings):
        meta, views = fake_ring(uid, r, settings.num_views, settings.resolution, seed % 1000)
        meta.caption, meta.source, meta.asset_path = caption, source, str(asset_path)
        if b"note" in data:
            meta.notes = ["fake: texture 'wood.png' is missing: rendered without it"]
        rings.append(RenderedRing(meta, views, blender_seconds=delay / settings.rings + 0.001))
    return rings


def make_assets(root: Path, kinds: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in kinds.items():
        (root / f"{name}.glb").write_text(content)
    return root


def job_config(out: Path, root: Path, **kw) -> RenderJobConfig:
    settings = RenderSettings(**{**TINY, **kw.pop("render", {})})
    kw.setdefault("ray", RayConfig(workers=2))
    return RenderJobConfig(
        source=LocalSourceConfig(root=str(root)),
        render=settings,
        output_dir=str(out),
        num_shards=3,
        progress=False,
        **kw,
    )


def kill_when(
    cmd: list[str], env: dict[str, str], done: Callable[[], bool], timeout: float
) -> None:
    """Start `cmd` (its own process group), wait until `done()` is true, then SIGKILL the whole
    group: a job killed mid-way. Fails if the process ends first or `done` never comes."""
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, f"still not done after {timeout:.0f} s"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
