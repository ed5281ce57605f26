"""Fixtures for the evaluation tests: tiny models and shards built in tmp folders, no downloads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.cameras import distance_for_fov, ring_azimuths, ring_c2w
from data_pipeline.dataset_index import write_index_from_manifests
from data_pipeline.schema import RingMeta, encode_png, encode_sample
from data_pipeline.shards import write_shard
from evaluation.metrics.models import write_tiny_clip
from training.model import ImageDream, build_imagedream, compose_model_configs
from training.pipeline import ImageDreamPipeline


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP's
    spinning threads made a 0.05 s forward pass take up to 10 s; restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(controller: str = "local_pixel", seed: int = 0) -> ImageDream:
    """The tiny random model of conf/model/tiny.yaml with a controller of conf/controller/."""
    configs = compose_model_configs("tiny", controller)
    torch.manual_seed(seed)
    return build_imagedream(*configs)


@pytest.fixture(scope="session")
def tiny_local_pixel() -> ImageDream:
    return tiny_model("local_pixel")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_local_pixel: ImageDream) -> Path:
    folder = tmp_path_factory.mktemp("model") / "export"
    ImageDreamPipeline.from_model(tiny_local_pixel).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def ring_meta(uid: str, num_views: int = 8, sha: str | None = None, res: int = 32) -> RingMeta:
    az = ring_azimuths(num_views)
    c2w = ring_c2w(az, 12.0, distance_for_fov(40.0, "mvdream"))
    return RingMeta(
        uid=uid,
        ring=0,
        caption=f"a toy {uid}",
        source="local",
        asset_path=f"/assets/{uid}.glb",
        asset_sha256=sha or f"{uid:0>64}"[-64:],
        elevation_deg=12.0,
        fov_deg=40.0,
        distance=float(np.linalg.norm(c2w[0, :3, 3])),
        azimuths_deg=[float(a) for a in az],
        c2w=c2w.tolist(),
        border_fraction=[0.0] * num_views,
        resolution=res,
    )


def ring_views(num_views: int, res: int = 32, seed: int = 0) -> np.ndarray:
    """(V, H, W, 4) RGBA: a coloured square whose colour encodes the view index."""
    rng = np.random.default_rng(seed)
    views = np.zeros((num_views, res, res, 4), dtype=np.uint8)
    for i in range(num_views):
        views[i, res // 4 : 3 * res // 4, res // 4 : 3 * res // 4] = [*rng.integers(0, 256, 3), 255]
    return views


def write_ring_shard(path: Path, uids: Sequence[str], shas: Sequence[str] | None = None) -> Path:
    """One shard of 8-view rings (with its manifest) at `path` (.../shard-00000.tar)."""
    samples = []
    for i, uid in enumerate(uids):
        meta = ring_meta(uid, sha=None if shas is None else shas[i])
        pngs = [encode_png(v) for v in ring_views(len(meta.azimuths_deg), seed=i)]
        samples.append(encode_sample(meta, pngs))
    write_shard(path, samples)
    write_index_from_manifests(path.parent)  # the folder reads as a complete dataset
    return path
