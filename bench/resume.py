"""Resume time against how far a run had read: a new loader resumes from the saved stream
position, whatever the number of samples read before.

    python -m bench.resume [--samples 100 1000 10000]

Writes bench/results/resume.{json,md}. One process, no workers (data.num_workers=0), synthetic
shards of the project's own writer (contract.synthetic_shards.write_synthetic_shards). For each
count N: a loader reads N samples and saves its state; "position" is the time for a new loader to
load that state and give its first batch (warm page cache).

The resume before positions were saved (a replay of the stream from its start) is gone; the
figures a past run measured of it are kept as text, `BEFORE`, written at the end of the report.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.train import RESULTS
from contract.synthetic_shards import write_synthetic_shards

SHARDS, RINGS_PER_SHARD, VIEWS, RES = 40, 100, 8, 32
# The figures of removed code, from the run committed with the position resume (8b78d43):
# copied from that run's resume.{json,md}, not measured again (the replay is gone).
BEFORE = """\
## Before: the resume that replayed the stream (figures of a past run, not measured again)

Until 8b78d43 (2026-12-01) a resume read the consumed records again from the stream's start.
8b78d43's run (x86_64, Python 3.11.7; 40 shards x 100 rings, 8 views at 32 px) timed that
replay (the records read again through webdataset, undecoded, then the first batch) beside the
position resume:

| samples read | position s | replay s | replay / position |
|---:|---:|---:|---:|
| 104 | 0.300 | 0.311 | 1.0 |
| 1004 | 0.893 | 1.201 | 1.3 |
| 10004 | 0.536 | 5.731 | 10.7 |
| 30004 | 0.323 | 11.790 | 36.6 |
"""


def _config(shards: Path) -> Any:
    from training.config import DataConfig

    return DataConfig(
        shards=str(shards), batch_size=4, num_workers=0, image_size=RES, shuffle_buffer=256,
        shuffle_initial=64, prompt_dropout=0.0,
    )  # fmt: skip


def measure(shards: Path, samples: int) -> dict[str, float]:
    from training.data import build_loader

    cfg = _config(shards)
    first = build_loader(cfg, seed=0)
    while first.state.consumed[0] < samples:
        next(first)
    state = first.state_dict()

    start = time.perf_counter()
    resumed = build_loader(cfg, seed=0)
    resumed.load_state_dict(state)
    next(resumed)
    position_s = time.perf_counter() - start
    return {
        "samples": state["consumed"][0],
        "shards_read_before": state["positions"][0]["shard"],
        # what the resume reads again: the shards of the buffer's records and the current one
        "shards_reread": len(
            {k for k, _ in state["positions"][0]["buffer"]} | {state["positions"][0]["shard"]}
        ),
        "position_s": position_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp)
        write_synthetic_shards(shards, SHARDS, RINGS_PER_SHARD, VIEWS, RES)
        rows = [measure(shards, n) for n in args.samples]
    payload = {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "data": f"{SHARDS} shards x {RINGS_PER_SHARD} rings, {VIEWS} views at {RES} px",
        "rows": rows,
    }
    print(write(payload, args.out))


def write(payload: dict[str, Any], out: Path) -> str:
    """OUT/resume.json and OUT/resume.md; returns the markdown."""
    rows = payload["rows"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "resume.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [
        "# Resume time against samples read",
        "",
        f"Written by `python -m bench.resume` ({payload['machine']}; {payload['data']}, "
        "resampled shard order, shuffle buffer 256, one stream). position: load the saved "
        "stream position and give the first batch.",
        "",
        "| samples read | shards visited | shards read again | position s |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['samples']} | {r['shards_read_before']} | {r['shards_reread']} | "
            f"{r['position_s']:.3f} |"
        )
    spread = np.ptp([r["position_s"] for r in rows])
    lines += [
        "",
        f"Spread of the position times over the counts: {spread:.3f} s. The resume reads again "
        "the shards its buffer's records came from: a record leaves a buffer of b after about b "
        "draws, and few stay past b ln b, so that span stops growing after a few thousand "
        "samples, while a replay from the stream's start grows with every sample read (below).",
        "",
        BEFORE,
    ]
    text = "\n".join(lines)
    (out / "resume.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
