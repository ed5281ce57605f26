"""What the data-quality report holds (data_pipeline.job.quality reads it from OUT,
data_pipeline.job.quality_html draws it): counts over fixed bins, the contact sheet's rings, and
the QualityReport of a whole output folder with its JSON form (OUT/quality.json).

Every part merges with another of its kind, so shards can be read in parallel and memory does
not grow with the dataset. Shapes: T thumbnail size.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Histogram:
    """Counts over fixed bins (values outside go to the first or last bin), plus n/sum/min/max."""

    title: str
    unit: str
    edges: list[float]  # (bins + 1,) increasing
    log: bool = False  # log-spaced edges (plot on a log axis)
    counts: list[int] = field(default_factory=list)
    total: int = 0
    nonfinite: int = 0  # NaN / inf values: counted here, not binned
    sum: float = 0.0
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.edges) - 1)

    @classmethod
    def linear(cls, title: str, lo: float, hi: float, bins: int, unit: str = "") -> Histogram:
        return cls(title, unit, [float(x) for x in np.linspace(lo, hi, bins + 1)])

    @classmethod
    def logspace(cls, title: str, lo: float, hi: float, per_decade: int, unit: str) -> Histogram:
        decades = round(float(np.log10(hi / lo)))
        edges = np.logspace(np.log10(lo), np.log10(hi), decades * per_decade + 1)
        return cls(title, unit, [float(x) for x in edges], log=True)

    def add(self, values: Iterable[float] | np.ndarray) -> None:
        arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, float)
        finite = arr[np.isfinite(arr)]
        self.nonfinite += int(arr.size - finite.size)
        if not finite.size:
            return
        bins = len(self.counts)
        idx = np.clip(np.searchsorted(self.edges, finite, side="right") - 1, 0, bins - 1)
        for i, n in enumerate(np.bincount(idx, minlength=bins)):
            self.counts[i] += int(n)
        self.total += int(finite.size)
        self.sum += float(finite.sum())
        lo, hi = float(finite.min()), float(finite.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def merge(self, other: Histogram) -> None:
        assert self.edges == other.edges, (self.title, other.title)
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.nonfinite += other.nonfinite
        self.sum += other.sum
        for value in (other.min, other.max):
            if value is not None:
                self.min = value if self.min is None else min(self.min, value)
                self.max = value if self.max is None else max(self.max, value)

    @property
    def mean(self) -> float | None:
        return self.sum / self.total if self.total else None


@dataclass
class SheetRing:
    """One ring of the contact sheet: its canonical views side by side, (T, 4T, 4) RGBA PNG."""

    score: int  # first 8 bytes of sha1(key): the sample is the lowest scores
    key: str
    uid: str = field(compare=False)
    caption: str = field(compare=False)
    source: str = field(compare=False)
    border: float = field(compare=False)  # max border fraction over its views
    strip_png: bytes = field(compare=False, repr=False)


def ring_score(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")


@dataclass
class ShardStats:
    """What one or more shards hold; `merge` adds another's (sheet: the lowest scores)."""

    sample: int
    shards: int = 0
    objects: int = 0  # a uid lives in one shard only, so per-shard counts add up
    rings: int = 0
    rings_with_notes: int = 0
    rings_by_source: Counter[str] = field(default_factory=Counter)  # RingMeta.source
    border: Histogram = field(
        default_factory=lambda: Histogram.linear("border fraction (every view)", 0.0, 1.0, 20)
    )
    coverage: Histogram = field(
        default_factory=lambda: Histogram.linear("alpha coverage (canonical views)", 0, 1, 20)
    )
    brightness: Histogram = field(
        default_factory=lambda: Histogram.linear("brightness (canonical views)", 0, 1, 20)
    )
    sheet: list[tuple[int, str, SheetRing]] = field(default_factory=list)  # max-heap by score

    def offer(self, score: int) -> bool:
        """Would a ring with this score enter the sheet (before its thumbnails are made)?"""
        return len(self.sheet) < self.sample or (self.sample > 0 and score < -self.sheet[0][0])

    def keep(self, ring: SheetRing) -> None:
        item = (-ring.score, ring.key, ring)
        if len(self.sheet) < self.sample:
            heapq.heappush(self.sheet, item)
        elif self.sample and ring.score < -self.sheet[0][0]:
            heapq.heapreplace(self.sheet, item)

    def merge(self, other: ShardStats) -> None:
        self.shards += other.shards
        self.objects += other.objects
        self.rings += other.rings
        self.rings_with_notes += other.rings_with_notes
        self.rings_by_source.update(other.rings_by_source)
        for mine, theirs in zip(self.histograms(), other.histograms(), strict=True):
            mine.merge(theirs)
        for _, _, ring in other.sheet:
            self.keep(ring)

    def histograms(self) -> list[Histogram]:
        return [self.border, self.coverage, self.brightness]

    def sheet_rings(self) -> list[SheetRing]:
        return sorted((ring for _, _, ring in self.sheet), key=lambda r: r.key)


@dataclass
class QualityReport:
    """Everything quality.html shows; `to_json` is quality.json."""

    output_dir: str
    shards: ShardStats
    quarantined: Counter[str]
    examples: dict[str, list[dict[str, Any]]]  # reason -> a few {uid, path, detail}
    seconds: Histogram
    torn_lines: int = 0  # unparsable lines of the ledger files (a killed job's last line)

    def histograms(self) -> list[Histogram]:
        return [*self.shards.histograms(), self.seconds]

    def to_json(self) -> dict[str, Any]:
        s = self.shards
        return {
            "output_dir": self.output_dir,
            "shards": s.shards,
            "objects": s.objects,
            "rings": s.rings,
            "rings_with_notes": s.rings_with_notes,
            "rings_by_source": dict(sorted(s.rings_by_source.items())),
            "quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
            "quarantine_examples": self.examples,
            "torn_lines": self.torn_lines,
            "histograms": {
                name: {
                    "title": h.title,
                    "unit": h.unit,
                    "edges": h.edges,
                    "counts": h.counts,
                    "total": h.total,
                    "nonfinite": h.nonfinite,
                    "mean": h.mean,
                    "min": h.min,
                    "max": h.max,
                }
                for name, h in zip(HISTOGRAMS, self.histograms(), strict=True)
            },
            "contact_sheet": [
                {"key": r.key, "uid": r.uid, "caption": r.caption, "source": r.source}
                for r in s.sheet_rings()
            ],
        }


HISTOGRAMS = ("border_fraction", "alpha_coverage", "brightness", "seconds_per_object")


def seconds_histogram() -> Histogram:
    return Histogram.logspace("seconds per object", 0.01, 1e5, 4, unit="s")
