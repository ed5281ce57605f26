"""The data-quality report: built from a tiny job output (shards + index + ledger + timings written
here, no Ray), its counts and histogram totals equal what those files hold."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contract.dataset_index import read_index, write_index_from_manifests
from contract.schema import encode_sample, sample_key
from contract.shard_reader import read_rings
from contract.shard_writer import shard_id_for, shard_name, write_shard
from data_pipeline.job.ledger import LedgerEntry, append_rendered, read_ledger, rewrite_ledger
from data_pipeline.job.quality import (
    QUALITY_HTML,
    QUALITY_JSON,
    QualityConfig,
    build_report,
    canonical_views,
    iter_ring_members,
    main,
    write_report,
)
from data_pipeline.job.quality_report import ring_score
from tests.data_pipeline.fakes import fake_ring

NUM_VIEWS, RINGS, NUM_SHARDS = 8, 2, 3
REASONS = {"timeout": 2, "no_faces": 1, "fetch_failed": 1}


def make_job_output(out: Path, objects: int = 7) -> Path:
    """OUT as a finished render job leaves it: shards with index, ledger, rendered.jsonl."""
    by_shard: dict[int, list] = {}
    for i in range(objects):
        uid = f"obj{i:02d}"
        for r in range(RINGS):
            meta, views = fake_ring(uid, r, NUM_VIEWS, resolution=16, seed=10 * i + r)
            # bin centres of the 20 bins over [0, 1]: 0.025, 0.225, 0.425, 0.625, 0.825
            meta.border_fraction = [((i + v) % 5) / 5 + 0.025 for v in range(NUM_VIEWS)]
            meta.source = "objaverse_xl/github" if i % 2 else "local"
            meta.notes = ["fake: texture is missing"] if i == 3 else []
            by_shard.setdefault(shard_id_for(uid, NUM_SHARDS), []).append(
                encode_sample(meta, views)
            )
    for sid, samples in by_shard.items():
        write_shard(out / "shards" / shard_name(sid), samples)
    write_index_from_manifests(out / "shards")
    entries = [
        LedgerEntry(uid=f"bad-{reason}-{n}", path=f"/a/{reason}{n}.glb", reason=reason,
                    detail=f"{reason} <detail> {n}", attempts=1)
        for reason, count in REASONS.items()
        for n in range(count)
    ]  # fmt: skip
    rewrite_ledger(out, entries)
    for i in range(objects):
        append_rendered(out, {"uid": f"obj{i:02d}", "wall_seconds": 0.5 * 3**i, "rings": RINGS})
    return out


@pytest.fixture
def job_output(tmp_path) -> Path:
    return make_job_output(tmp_path / "out")


def test_counts_and_histogram_totals_equal_the_shards_and_ledger(job_output):
    out = job_output
    report = build_report(out, sample=5)
    index = read_index(out / "shards")
    stats = report.shards
    assert (stats.shards, stats.objects, stats.rings) == (
        index.num_shards,
        index.num_objects,
        index.num_rings,
    )
    assert stats.rings_with_notes == RINGS
    assert stats.rings_by_source == Counter({"local": 4 * RINGS, "objaverse_xl/github": 3 * RINGS})
    assert report.quarantined == Counter(e.reason for e in read_ledger(out).values())

    targets = canonical_views(NUM_VIEWS)
    records = list(read_rings(out / "shards", views=targets))
    borders = [b for r in records for b in r.meta.border_fraction]
    assert stats.border.total == len(records) * NUM_VIEWS == len(borders)
    assert stats.border.sum == pytest.approx(sum(borders))
    # 20 bins over [0, 1]: the values fall in bins 0, 4, 8, 12, 16
    expected = Counter(int(b * 20) for b in borders)
    assert {i: n for i, n in enumerate(stats.border.counts) if n} == dict(expected)

    alpha = np.stack([r.images[..., 3] for r in records]) > 127  # (rings, 4, H, W)
    assert stats.coverage.total == stats.brightness.total == len(records) * len(targets)
    assert stats.coverage.sum == pytest.approx(alpha.mean(axis=(2, 3)).sum())
    assert 0.0 < stats.brightness.min <= stats.brightness.max < 1.0
    assert sum(stats.coverage.counts) == stats.coverage.total
    assert report.seconds.total == sum(report.seconds.counts) == 7  # one per rendered.jsonl line
    assert report.seconds.max == pytest.approx(0.5 * 3**6)


def test_contact_sheet_is_a_deterministic_bounded_sample(job_output):
    report = build_report(job_output, sample=5)
    rings = report.shards.sheet_rings()
    keys = [r.key for r in read_rings(job_output / "shards", views=[])]
    assert [r.key for r in rings] == sorted(sorted(keys, key=ring_score)[:5])
    assert all(r.strip_png.startswith(b"\x89PNG") for r in rings)
    parallel = build_report(job_output, sample=5, workers=2)  # merged per-shard results
    assert parallel.to_json() == report.to_json()
    assert len(build_report(job_output, sample=100).shards.sheet_rings()) == len(keys)
    assert build_report(job_output, sample=0).shards.sheet_rings() == []


def test_only_the_canonical_views_are_read():
    assert canonical_views(32) == [0, 8, 16, 24] and canonical_views(4) == [0, 1, 2, 3]


def test_shard_members_are_streamed_canonical_views_only(job_output):
    shard = sorted((job_output / "shards").glob("shard-*.tar"))[0]
    for key, meta, views in iter_ring_members(shard):
        assert key == sample_key(meta.uid, meta.ring)
        assert sorted(views) == canonical_views(len(meta.azimuths_deg))


def test_html_names_every_reason_and_embeds_its_images(job_output):
    report = build_report(job_output, sample=4)
    path = write_report(report, job_output)
    assert path == job_output / QUALITY_HTML
    text = path.read_text()
    for reason in REASONS:
        assert reason in text
    assert "&lt;detail&gt;" in text and "<detail>" not in text  # ledger text is escaped
    assert text.count("data:image/png;base64,") >= 4 + 4  # 4 sheet strips + 4 histograms
    assert "src='http" not in text and 'src="http' not in text  # self-contained
    data = json.loads((job_output / QUALITY_JSON).read_text())
    assert data["quarantined_by_reason"] == dict(sorted(REASONS.items()))
    assert data["histograms"]["border_fraction"]["total"] == report.shards.rings * NUM_VIEWS


def test_cli_rebuilds_the_report(job_output, capsys):
    main([str(job_output), "--sample", "3"])
    assert capsys.readouterr().out.strip().endswith(QUALITY_HTML)
    data = json.loads((job_output / QUALITY_JSON).read_text())
    assert len(data["contact_sheet"]) == 3 and data["rings"] == 7 * RINGS
    with pytest.raises(ValueError, match="workers"):
        QualityConfig(workers=0)


def test_empty_output_and_w_and_b_media(tmp_path, job_output):
    empty = build_report(tmp_path)  # no shards, no ledger: a report that says so
    assert empty.shards.rings == 0 and not empty.quarantined
    assert "No quarantined objects" in write_report(empty, tmp_path).read_text()

    wandb = pytest.importorskip("wandb")
    from data_pipeline.job.quality_html import wandb_media

    media = wandb_media(build_report(job_output, sample=4), wandb)
    assert isinstance(media["quality/contact_sheet"], wandb.Image)
    assert isinstance(media["quality/report"], wandb.Html)
    assert {k for k, v in media.items() if isinstance(v, wandb.Histogram)} == {
        "quality/border_fraction",
        "quality/alpha_coverage",
        "quality/brightness",
        "quality/seconds_per_object",
    }
