"""Leakage check (SPEC 7): no evaluation object may be in the training set.

An evaluation prompt leaks when its object uid or its asset's sha256 appears in the manifests of
the training shards (`<shard>.manifest.json`, contract.schema.ShardManifest). The training
shards are given (`leakage.training_shards`) or read from the evaluated run's config.yaml
(`data.shards`). Matching the hash catches the same
asset imported twice under different uids. Prompts with neither id (plain images) cannot be
checked; the report counts them.

mode "refuse" (default) raises `LeakageError` naming every leaked prompt; "flag" keeps them and
marks them in the report; "off" skips the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.prompts import EvalPrompt

MODES = ("refuse", "flag", "off")


class LeakageError(RuntimeError):
    """Evaluation objects were found in the training shards."""


@dataclass
class TrainingIndex:
    uids: set[str] = field(default_factory=set)
    asset_hashes: set[str] = field(default_factory=set)
    shards: int = 0

    @classmethod
    def from_shards(
        cls, sources: Sequence[str | Path], allow_incomplete: bool = False
    ) -> TrainingIndex:
        """From the manifests beside the training shards: folders (OUT or OUT/shards), brace
        patterns, globs or tar paths, local or fsspec URLs (s3://bucket/ds), several per string
        joined by "::" as in data.shards."""
        from contract import storage
        from contract.schema import ShardManifest, manifest_path_for
        from contract.shard_reader import expand_urls

        index = cls()
        urls = [u for source in sources for u in str(source).split("::") if u]
        for shard in expand_urls(urls, allow_incomplete=allow_incomplete):
            manifest = manifest_path_for(shard)
            name = storage.split(manifest)[1]
            if not storage.isfile(manifest):
                raise FileNotFoundError(
                    f"training shard {shard} has no manifest {name}: cannot check leakage"
                )
            parsed = ShardManifest.from_json(storage.read_bytes(manifest), name)
            index.uids |= parsed.uids
            index.asset_hashes |= parsed.asset_hashes
            index.shards += 1
        return index


@dataclass
class Leak:
    prompt: str
    by: list[str]  # "uid" and/or "asset_sha256"
    uid: str | None
    asset_sha256: str | None


@dataclass
class LeakageReport:
    mode: str
    training_shards: int
    checked: int  # prompts with a uid or hash
    unchecked: list[str]  # prompts with neither (plain images)
    leaks: list[Leak]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_leaks(prompts: Sequence[EvalPrompt], index: TrainingIndex) -> tuple[list[Leak], list[str]]:
    """(leaked prompts, prompts that carry no id)."""
    leaks, unchecked = [], []
    for p in prompts:
        if p.uid is None and p.asset_sha256 is None:
            unchecked.append(p.name)
            continue
        by = []
        if p.uid is not None and p.uid in index.uids:
            by.append("uid")
        if p.asset_sha256 is not None and p.asset_sha256 in index.asset_hashes:
            by.append("asset_sha256")
        if by:
            leaks.append(Leak(p.name, by, p.uid, p.asset_sha256))
    return leaks, unchecked


def check_leakage(
    prompts: Sequence[EvalPrompt],
    training_shards: Sequence[str | Path],
    mode: str = "refuse",
    allow_incomplete: bool = False,
) -> LeakageReport:
    """Check `prompts` against the manifests in `training_shards` (folders); see module doc."""
    if mode not in MODES:
        raise ValueError(f"leakage.mode must be one of {MODES}, got {mode!r}")
    if mode == "off" or not training_shards:
        names = [p.name for p in prompts]
        return LeakageReport(mode if training_shards else "off", 0, 0, names, [])
    index = TrainingIndex.from_shards(training_shards, allow_incomplete)
    leaks, unchecked = find_leaks(prompts, index)
    report = LeakageReport(mode, index.shards, len(prompts) - len(unchecked), unchecked, leaks)
    if leaks and mode == "refuse":
        listing = "; ".join(f"{leak.prompt} (by {', '.join(leak.by)})" for leak in leaks)
        raise LeakageError(
            f"{len(leaks)} evaluation object(s) are in the training shards: {listing}. "
            f"Remove them, or set leakage.mode=flag to evaluate anyway with a warning."
        )
    return report
