"""Data-quality report of a render job's output folder, built from what is on disk only:

    python -m data_pipeline.job.quality OUT [--sample 24] [--workers N] [--allow-incomplete]

writes OUT/quality.html (self-contained: images inlined as base64 PNG) and OUT/quality.json
(the same numbers). The render job writes both after the shards and summary.json, and logs them
to W&B when its wandb is on (summary.log_wandb). Sources, all on disk:

- OUT/shards (complete, see dataset_index): objects, rings, rings with notes; the per-view border
  fraction of every view (RingMeta.border_fraction, no decoding); alpha coverage (fraction of
  pixels with alpha > 0.5) and brightness (mean Rec. 709 luma of those pixels, 0..1) of each
  ring's 4 canonical views (azimuth 0/90/180/270, indices 0, V/4, V/2, 3V/4: the training
  targets); the contact sheet: the `sample` rings whose key has the lowest sha1, each as its
  canonical views (the same rings whatever the shard order; a ring stays on the sheet as the
  dataset grows unless a lower hash displaces it);
- OUT/quarantine.jsonl: quarantined objects by reason, a few examples each;
- OUT/rendered.jsonl: seconds per object (`wall_seconds`: fetch + render + stage in the worker),
  one count per line.

Memory does not grow with the dataset: a shard is streamed member by member (its meta and the 4
canonical views of each ring are read, other views are skipped by seeking), histograms are
counts over fixed bins, the contact sheet a heap of at most `sample` rings, quarantine examples at
most EXAMPLES per reason. Per-shard results merge, so `workers` > 1 reads shards in parallel.
What the report holds is data_pipeline.job.quality_report; how it looks, quality_html.

Shapes: V views, H, W pixels, T thumbnail size.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from contract import cameras, storage
from contract.schema import META_EXT, RingMeta, SchemaError, decode_png, split_member, view_index
from data_pipeline.job.ledger import LEDGER_FILE, RENDERED_FILE, iter_records
from data_pipeline.job.quality_html import render_html
from data_pipeline.job.quality_report import (
    QualityReport,
    ShardStats,
    SheetRing,
    ring_score,
    seconds_histogram,
)
from data_pipeline.render.ring_checks import ALPHA_THRESHOLD

QUALITY_HTML = "quality.html"
QUALITY_JSON = "quality.json"
EXAMPLES = 3  # quarantined objects shown per reason
THUMB = 64  # contact sheet thumbnail size (px)
_LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709


@dataclass
class QualityConfig:
    """The report the render job writes after every run (`quality.*` overrides)."""

    enabled: bool = True
    sample: int = 24  # rings on the contact sheet
    workers: int = 1  # processes reading shards (a large dataset: the driver's cores)

    def __post_init__(self) -> None:
        if self.sample < 0:
            raise ValueError(f"quality.sample must be >= 0, got {self.sample}")
        if self.workers < 1:
            raise ValueError(f"quality.workers must be >= 1, got {self.workers}")


def canonical_views(num_views: int) -> list[int]:
    """Azimuth 0/90/180/270 of a V-view ring (contract.cameras.target_views). A folder the
    job did not write may hold rings of other view counts, which training refuses: the report
    still shows them, with the views nearest those azimuths, instead of failing."""
    if cameras.has_target_views(num_views):
        return cameras.target_views(num_views)
    return sorted({0, num_views // 4, num_views // 2, 3 * num_views // 4})


# -- reading ------------------------------------------------------------------------------------


def iter_ring_members(shard: str | Path) -> Iterator[tuple[str, RingMeta, dict[int, bytes]]]:
    """(sample key, meta, canonical view index -> PNG bytes) per ring of a shard written by
    contract.shard_writer (meta before views), reading only those members; other views are
    skipped by seeking."""
    with storage.open_binary(shard) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        key, meta = "", None
        views: dict[int, bytes] = {}
        wanted: set[int] = set()
        while (info := tar.next()) is not None:
            tar.members = []  # type: ignore[attr-defined]  # TarFile keeps every header it read
            if not info.isfile():
                continue
            member_key, ext = split_member(info.name)
            if member_key != key:
                if meta is not None:
                    yield key, meta, views
                key, meta, views = member_key, None, {}
            index = view_index(ext)
            if ext == META_EXT:
                meta = RingMeta.from_json(_read(tar, info), key)
                wanted = set(canonical_views(len(meta.azimuths_deg)))
            elif index is not None:
                if meta is None:
                    raise SchemaError(f"shard {shard}: {info.name} comes before {key}.{META_EXT}")
                if index in wanted:
                    views[index] = _read(tar, info)
        if meta is not None:
            yield key, meta, views


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(info)
    assert f is not None
    return f.read()


def shard_stats(shard: str, sample: int) -> ShardStats:
    """Stats of one shard (a plain function of its path, for a process pool)."""
    stats = ShardStats(sample=sample, shards=1)
    uids: set[str] = set()  # bounded by one shard
    for key, meta, pngs in iter_ring_members(shard):
        uids.add(meta.uid)
        stats.rings += 1
        stats.rings_with_notes += bool(meta.notes)
        stats.rings_by_source[meta.source] += 1
        stats.border.add(meta.border_fraction)  # (V,)
        views = canonical_views(len(meta.azimuths_deg))
        missing = [v for v in views if v not in pngs]
        if missing:
            raise SchemaError(f"shard {shard}: sample {key} lacks views {missing}")
        rgba = np.stack([decode_png(pngs[v], key, v, meta.resolution) for v in views])  # (4,H,W,4)
        mask = rgba[..., 3] > ALPHA_THRESHOLD * 255  # (4, H, W)
        covered = mask.reshape(len(views), -1).sum(axis=1)
        stats.coverage.add(covered / mask[0].size)
        luma = (rgba[..., :3].astype(np.float64) @ _LUMA) / 255.0  # (4, H, W)
        stats.brightness.add(
            [float(luma[i][mask[i]].mean()) for i in range(len(views)) if covered[i]]
        )
        score = ring_score(key)
        if stats.offer(score):
            stats.keep(
                SheetRing(
                    score=score,
                    key=key,
                    uid=meta.uid,
                    caption=meta.caption,
                    source=meta.source,
                    border=max(meta.border_fraction, default=0.0),
                    strip_png=thumbnail_strip(rgba),
                )
            )
    stats.objects = len(uids)
    return stats


def thumbnail_strip(rgba: np.ndarray, size: int = THUMB) -> bytes:
    """(N, H, W, 4) views -> one PNG of N size x size thumbnails side by side, over grey."""
    strip = Image.new("RGBA", (size * len(rgba), size), (200, 200, 200, 255))
    for i, view in enumerate(rgba):
        thumb = Image.fromarray(view, mode="RGBA").resize((size, size), Image.Resampling.BILINEAR)
        strip.alpha_composite(thumb, (i * size, 0))
    buf = io.BytesIO()
    strip.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def build_report(
    out: str | Path, sample: int = 24, workers: int = 1, allow_incomplete: bool = False
) -> QualityReport:
    """Read OUT's shards, ledger and timings (streaming) into a QualityReport."""
    from contract.shard_reader import list_shards

    out = storage.resolve(out)
    shards_dir = storage.join(out, "shards")
    shards = list_shards(shards_dir, allow_incomplete) if storage.isdir(shards_dir) else []
    stats = ShardStats(sample=sample)
    for part in _map_shards(shards, sample, workers):
        stats.merge(part)

    torn = 0
    quarantined: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    for _, record in iter_records(out, LEDGER_FILE):
        if record is None or "reason" not in record:
            torn += 1
            continue
        reason = str(record["reason"])
        quarantined[reason] += 1
        shown = examples.setdefault(reason, [])
        if len(shown) < EXAMPLES:
            shown.append({k: record.get(k, "") for k in ("uid", "path", "detail")})

    seconds = seconds_histogram()
    for _, record in iter_records(out, RENDERED_FILE):
        if record is None or "wall_seconds" not in record:
            torn += 1
            continue
        seconds.add([float(record["wall_seconds"])])
    return QualityReport(str(out), stats, quarantined, examples, seconds, torn)


def _map_shards(shards: list[str], sample: int, workers: int) -> Iterator[ShardStats]:
    if workers <= 1 or len(shards) <= 1:
        yield from (shard_stats(s, sample) for s in shards)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the driver may still run threads (Ray's, W&B's) that fork would copy
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(shards)), mp_context=context) as pool:
        yield from pool.map(shard_stats, shards, [sample] * len(shards))


def write_report(report: QualityReport, out: str | Path) -> Path | str:
    """OUT/quality.html and OUT/quality.json (each complete or absent); returns the HTML's path."""
    out = storage.resolve(out)
    data = (json.dumps(report.to_json(), indent=1) + "\n").encode()
    storage.write_bytes(storage.join(out, QUALITY_JSON), data)
    storage.write_bytes(storage.join(out, QUALITY_HTML), render_html(report).encode("utf-8"))
    html = storage.join(out, QUALITY_HTML)
    return html if storage.is_url(out) else Path(html)


def report_after_job(out: Path | str, cfg: QualityConfig) -> QualityReport | None:
    """The render job's hook: build and write the report; a failure is a warning, never fatal
    (the rendered dataset is complete at this point; `python -m data_pipeline.job.quality` retries)."""
    if not cfg.enabled:
        return None
    try:
        report = build_report(out, cfg.sample, cfg.workers)
        path = write_report(report, out)
    except Exception as exc:
        print(f"warning: quality report failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    print(f"quality report: {path}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write OUT/quality.html from a render output.")
    parser.add_argument("out", help="the render job's output_dir (a folder or a URL)")
    parser.add_argument("--sample", type=int, default=24, help="rings on the contact sheet")
    parser.add_argument("--workers", type=int, default=1, help="processes reading shards")
    parser.add_argument("--allow-incomplete", action="store_true", help="read shards anyway")
    args = parser.parse_args(argv)
    cfg = QualityConfig(sample=args.sample, workers=args.workers)  # checks the values
    if not storage.isdir(args.out):
        parser.error(f"{args.out} is not a folder")
    try:
        report = build_report(args.out, cfg.sample, cfg.workers, args.allow_incomplete)
    except SchemaError as exc:  # IncompleteDatasetError included: it names the override
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
