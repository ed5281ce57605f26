"""The bad-data budget of the training stream (see training.data): each distinct bad record
logged and counted once; the run stops when their share passes data.max_bad_fraction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from training.config import DataConfig

log = logging.getLogger("training.data")  # the stream's logger: one place to watch bad data


class BadDataError(RuntimeError):
    """Too much of the training data is unreadable (data.max_bad_fraction)."""


class BadDataBudget:
    """One stream's bad records: each distinct one logged and counted once; the run stops when
    their share of what the stream read passes data.max_bad_fraction."""

    def __init__(
        self,
        cfg: DataConfig,
        where: str,
        events: int,
        records: int,
        ids: list[str],
        dropped: Sequence[str] = (),
    ) -> None:
        self.cfg, self.where = cfg, where
        self.events = events  # bad records met (weighted), repeats included
        self.records = records  # records read (weighted), the good ones included
        self.seen: dict[str, str] = dict.fromkeys(ids, "(met before the resume)")
        self.new: list[tuple[str, str]] = []
        self.dropped: set[str] = set(dropped)
        self.new_dropped: list[str] = []

    def read(self, weight: int) -> None:
        self.records += weight

    def add(self, record_id: str, reason: str, weight: int) -> None:
        """A bad record; `weight` more records read (0 for a sample already counted by read)."""
        self.read(weight)
        self.events += max(1, weight)
        if record_id not in self.seen:
            self.seen[record_id] = reason
            self.new.append((record_id, reason))
            log.warning(
                "bad training data skipped (%d distinct so far in %s): %s: %s",
                len(self.seen),
                self.where,
                record_id,
                reason,
            )
        cfg = self.cfg
        if self.records >= cfg.bad_data_min_records and (
            self.events > cfg.max_bad_fraction * self.records
        ):
            raise BadDataError(self.message())

    def drop(self, record_id: str, reason: str) -> None:
        """A good ring a setting leaves out: logged and counted once, not bad data."""
        if record_id not in self.dropped:
            self.dropped.add(record_id)
            self.new_dropped.append(record_id)
            log.info("ring left out (%d so far in %s): %s: %s",
                     len(self.dropped), self.where, record_id, reason)  # fmt: skip

    def take_dropped(self) -> list[str]:
        new, self.new_dropped = self.new_dropped, []
        return new

    def take_new(self) -> list[tuple[str, str]]:
        new, self.new = self.new, []
        return new

    def message(self) -> str:
        shown = list(self.seen.items())[:10]
        files = "; ".join(f"{i}: {r}" for i, r in shown)
        more = f" (and {len(self.seen) - len(shown)} more)" if len(self.seen) > len(shown) else ""
        return (
            f"{self.events} of the {self.records} records {self.where} read were unreadable "
            f"({self.events / self.records:.1%} > data.max_bad_fraction="
            f"{self.cfg.max_bad_fraction}; a shard that failed counts as the rings its index "
            f"lists and it did not give); {len(self.seen)} distinct: {files}{more}. Repair or "
            "re-render them (contract.dataset_index.verify_dataset checks a folder against "
            "its index, contract.shard_reader.verify_shard a shard against its manifest), or "
            "raise data.max_bad_fraction."
        )
