"""Sharding throughput: the job's shard-building Ray tasks at 1, 2 and 4 at once against the
in-driver writer, and the driver's peak Python memory while it shards.

    python -m bench.shards [--objects 10000] [--shards 64]

Writes bench/results/shards.{json,md}. The staged objects are synthetic (one ring of 8 views at
16 px each, written with the project's own encoders); every configuration writes the same shards
from scratch into its own folder, in one run, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from contract.shard_writer import tar_bytes

RESULTS = Path("bench/results")


def _stage(folder: Path, count: int) -> dict[str, Path]:
    """`count` staged objects (uid -> tar), as render actors leave them."""
    from contract.synthetic_shards import synthetic_ring

    folder.mkdir(parents=True, exist_ok=True)
    staged = {}
    for i in range(count):
        uid = f"obj{i:06d}"
        sample = synthetic_ring(uid, num_views=8, resolution=16, seed=i)
        path = folder / f"{uid}.tar"
        path.write_bytes(tar_bytes([sample]))
        staged[uid] = path
    return staged


def measure(staged: dict[str, Path], out: Path, num_shards: int, workers: int) -> dict[str, Any]:
    """Time one sharding from scratch, then (into another folder, traced) the driver's peak
    Python memory: tracing slows the traced process, which is the whole job when workers=0, so
    the two are measured apart."""
    from data_pipeline.job.config import RenderJobConfig
    from data_pipeline.job.run import write_shards

    cfg = RenderJobConfig(source={}, num_shards=num_shards, shard_workers=workers)
    start = time.perf_counter()
    manifests = write_shards(cfg, staged, out / "timed").manifests
    seconds = time.perf_counter() - start
    tracemalloc.start()
    write_shards(cfg, staged, out / "traced")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "workers": workers,
        "seconds": seconds,
        "objects_per_s": len(staged) / seconds,
        "driver_peak_mib": peak / 2**20,
        "shards": len(manifests),
        "bytes": sum(m.tar_bytes for m in manifests),
    }


def main() -> None:
    from data_pipeline.job.config import RayConfig, RenderJobConfig
    from data_pipeline.job.run import start_ray, stop_ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        staged = _stage(Path(tmp) / "staging", args.objects)
        start_ray(RenderJobConfig(source={}, ray=RayConfig(num_cpus=4)))  # one session for all
        try:
            # warm-up, untimed: Ray starts and imports its worker processes once
            few = dict(list(staged.items())[:64])
            measure(few, Path(tmp) / "warm_up", 4, 4)
            for workers in (0, 1, 2, 4):
                rows.append(measure(staged, Path(tmp) / f"shards_{workers}", args.shards, workers))
                print(rows[-1], flush=True)
        finally:
            stop_ray()
    payload = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "objects": args.objects,
        "num_shards": args.shards,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shards.json").write_text(json.dumps(payload, indent=1) + "\n")
    base = rows[0]["seconds"]
    lines = [
        "# Sharding throughput",
        "",
        f"Written by `python -m bench.shards` ({payload['machine']}): "
        f"{args.objects} staged objects (one 8-view ring at 16 px each) into {args.shards} "
        "shards, from scratch, each configuration in its own folder in one run. workers 0: the "
        "driver writes every shard itself (the job before parallel sharding); 1 / 2 / 4: that "
        "many Ray tasks at once (after an untimed warm-up that starts Ray's worker processes), "
        "each building one shard from its own objects. Driver peak: "
        "Python allocations of the driver process while it shards (tracemalloc, in a second "
        "pass, so that tracing does not slow the timed one).",
        "",
        "| workers | seconds | objects/s | vs driver-only | driver peak MiB |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['seconds']:.1f} | {r['objects_per_s']:.0f} | "
            f"{base / r['seconds']:.2f} | {r['driver_peak_mib']:.1f} |"
        )
    lines.append("")
    (args.out / "shards.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
