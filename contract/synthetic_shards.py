"""Synthetic rings and shards for the tests and the benchmarks, made without Blender.

Each ring is schema-valid (real cameras, the shard format's encoders, the project's shard writer),
so the reader and the training stream take it as a rendered one; its views are a coloured disc
that tells which view it is (`synthetic_views`). The render-job tests have their own stand-in for
Blender's output (tests/data_pipeline/fakes.py: `fake_ring`, noise views, a (meta, PNGs) pair, as
a renderer returns it); tests of both kinds assert on the exact values of their own generator.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from contract.cameras import distance_for_fov, ring_azimuths, ring_c2w
from contract.schema import RingMeta, encode_png, encode_sample
from contract.shard_writer import shard_name, write_shard


def synthetic_views(num_views: int, resolution: int, seed: int) -> np.ndarray:
    """(V, H, W, 4) uint8 RGBA: a coloured disc on a transparent background. The disc's red
    channel encodes the view index (4 x index) and it moves with the azimuth, so a model can learn
    something view-dependent and a test can tell which view an image came from."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    views = np.zeros((num_views, resolution, resolution, 4), dtype=np.uint8)
    for i in range(num_views):
        cx = 0.5 + 0.2 * math.sin(2 * math.pi * i / num_views)
        inside = (xx - cx) ** 2 + (yy - 0.5) ** 2 < 0.3**2
        views[i][inside] = [4 * i % 256, base[1], base[2], 255]
    return views


def synthetic_ring(uid: str, num_views: int = 8, resolution: int = 32, seed: int = 0) -> dict:
    """One schema-valid WebDataset sample of a synthetic ring."""
    rng = np.random.default_rng(seed)
    elevation, fov = float(rng.uniform(0, 30)), float(rng.uniform(15, 60))
    distance = distance_for_fov(fov, "mvdream")
    azimuths = ring_azimuths(num_views)
    meta = RingMeta(
        uid=uid,
        ring=0,
        caption=f"a synthetic object {uid}",
        source="synthetic",
        asset_path="synthetic",
        asset_sha256=f"{seed:064x}",
        elevation_deg=elevation,
        fov_deg=fov,
        distance=distance,
        azimuths_deg=azimuths.tolist(),
        c2w=ring_c2w(azimuths, elevation, distance).tolist(),
        border_fraction=[0.0] * num_views,
        resolution=resolution,
    )
    views = synthetic_views(num_views, resolution, seed)
    return encode_sample(meta, [encode_png(v) for v in views])


def write_synthetic_shards(
    directory: str | Path,
    num_shards: int = 2,
    rings_per_shard: int = 8,
    num_views: int = 8,
    resolution: int = 32,
) -> list[str]:
    """Shards of synthetic rings written with the project's shard writer, and their dataset
    index (as a render job writes it, last); returns their paths."""
    from contract.dataset_index import write_index

    directory = Path(directory)
    paths, manifests = [], []
    for s in range(num_shards):
        samples = [
            synthetic_ring(f"obj{s:03d}x{i:04d}", num_views, resolution, seed=s * 10_000 + i)
            for i in range(rings_per_shard)
        ]
        path = directory / shard_name(s)
        manifests.append(write_shard(path, samples))
        paths.append(str(path))
    write_index(directory, manifests)
    return paths
