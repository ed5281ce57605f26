"""Helpers of the evaluation tests: shards of small 8-view rings (with their dataset index) and
prompt images, built in tmp folders."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from contract.cameras import distance_for_fov, ring_azimuths, ring_c2w
from contract.dataset_index import write_index_from_manifests
from contract.schema import RingMeta, encode_png, encode_sample
from contract.shard_writer import write_shard


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


def rgba_object(size=100, box=(10, 30, 40, 50), colour=(200, 20, 20)) -> np.ndarray:
    """A transparent image with an opaque rectangle at box = (top, left, height, width)."""
    img = np.zeros((size, size, 4), dtype=np.uint8)
    top, left, h, w = box
    img[top : top + h, left : left + w] = [*colour, 255]
    img[:, :, :3][img[:, :, 3] == 0] = (0, 255, 0)  # garbage colour under alpha 0
    return img


def encoded_image(fmt: str, mode: str = "RGB", size: int = 48) -> bytes:
    """A real image file's bytes: seeded noise, so the compressed stream is long."""
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, fmt)
    return buf.getvalue()
