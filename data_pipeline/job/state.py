"""The render job's state as the driver holds it (`JobState`): the plan (what the source lists,
what earlier runs staged or quarantined, what is left to render) and what this run has recorded
so far. `plan_job` builds it from the source and OUT; `record` makes each result durable in OUT
as it arrives (a staged tar or a ledger line) and adds it to the state. No Ray in here: the
driver (data_pipeline.job.run) fans the pending objects out, summary.make_summary reads the state
at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contract.schema import ShardManifest
from data_pipeline.job.ledger import (
    LedgerEntry,
    Location,
    append_ledger,
    append_rendered,
    read_ledger,
    rewrite_ledger,
    stage_object,
    staged_objects,
)
from data_pipeline.job.worker import ObjectResult
from data_pipeline.refusals import TRANSIENT, Reason
from data_pipeline.sources import ObjectSpec, Source

# Seconds per phase, in this order in summary.json: prepare (list the source, read OUT), ray_start,
# actor_start (Ray workers + Blender import in their render processes), render, shards, total.
PHASES = ("prepare", "ray_start", "actor_start", "render", "shards", "total")


@dataclass
class JobState:
    """One run of the render job: its plan, and every result recorded so far."""

    out: Location
    source_name: str  # in every ledger entry
    # the plan
    specs: list[ObjectSpec] = field(default_factory=list)  # the source's objects, one per uid
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # uids listed again
    resumed: dict[str, int] = field(default_factory=dict)  # already_staged, already_quarantined
    pending: list[ObjectSpec] = field(default_factory=list)  # to render in this run
    # recorded (record): earlier runs' and this run's objects
    staged: dict[str, Location] = field(default_factory=dict)  # uid -> OUT/staging/<uid>.tar
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)  # uid -> quarantine entry
    results: list[ObjectResult] = field(default_factory=list)  # this run's, as they arrived
    # the run itself
    workers: int = 0  # render actors started (0: nothing to render)
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    manifests: list[ShardManifest] = field(default_factory=list)  # the shards written
    # object-store requests retried this run, by who retried them (each process counts its own)
    store_retries: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined(self) -> dict[str, LedgerEntry]:
        """Ledger entries of objects that are not staged (the ledger file can still list an object
        that a later attempt staged, until the job rewrites it)."""
        return {u: e for u, e in self.ledger.items() if u not in self.staged}


def find_duplicates(specs: list[ObjectSpec]) -> tuple[list[ObjectSpec], list[dict[str, Any]]]:
    """First spec per uid, and a report of every uid the source listed more than once."""
    first: dict[str, ObjectSpec] = {}
    dropped: dict[str, list[str]] = {}
    for spec in specs:
        if spec.uid in first:
            dropped.setdefault(spec.uid, []).append(spec.path)
        else:
            first[spec.uid] = spec
    report = [
        {"uid": uid, "kept": first[uid].path, "dropped": paths} for uid, paths in dropped.items()
    ]
    return list(first.values()), report


def plan_job(out: Location, source: Source, retry_quarantined: bool) -> JobState:
    """List the source and read what earlier runs left in OUT: every object that is neither
    staged nor quarantined is pending (with `retry_quarantined`, transient refusals are forgotten
    first); files of unsupported formats are quarantined at once."""
    specs, duplicates = find_duplicates(list(source.list_objects()))
    for dup in duplicates:
        print(f"warning: uid {dup['uid']} listed again by {dup['dropped']}; kept {dup['kept']}")

    staged = staged_objects(out)
    ledger = read_ledger(out)
    if retry_quarantined:
        ledger = {u: e for u, e in ledger.items() if Reason(e.reason) not in TRANSIENT}
    rewrite_ledger(out, ledger.values())  # drops a torn line left by a killed run
    job = JobState(
        out=out,
        source_name=source.name,
        specs=specs,
        duplicates=duplicates,
        resumed={  # before this run quarantines anything
            "already_staged": sum(s.uid in staged for s in specs),
            "already_quarantined": sum(s.uid in ledger and s.uid not in staged for s in specs),
        },
        pending=[s for s in specs if s.uid not in staged and s.uid not in ledger],
        staged=staged,
        ledger=ledger,
    )
    unsupported = quarantine_unsupported(job)
    job.pending = [s for s in job.pending if not s.unsupported]
    note = f"{len(unsupported)} of unsupported formats quarantined, " if unsupported else ""
    print(
        f"{len(specs)} objects in source {source.name}: {job.resumed['already_staged']} already "
        f"staged, {job.resumed['already_quarantined']} already quarantined, {note}"
        f"{len(job.pending)} to render"
    )
    return job


def quarantine_unsupported(job: JobState) -> list[ObjectResult]:
    """Quarantine the pending files the source marked `unsupported` (a format no importer reads)
    at once, in the driver: no render actor is started for them. Returns their results."""
    results = []
    for spec in job.pending:
        if spec.unsupported:
            result = ObjectResult(
                uid=spec.uid,
                path=spec.path,
                attempts=1,
                reason=Reason.UNSUPPORTED_FORMAT.value,
                detail=spec.unsupported,
            )
            record(job, result)
            results.append(result)
    return results


def record(job: JobState, result: ObjectResult) -> None:
    """Make one finished object durable (staged tar, or a ledger line) and add it to the job's
    results. An unexpected error (not a refusal: environment, config, bug) is reported but not
    quarantined, so the next run tries the object again."""
    job.results.append(result)
    if result.ok:
        assert result.staged is not None
        job.staged[result.uid] = stage_object(job.out, result.uid, result.staged)
        result.staged = b""  # the bytes are on disk now; keep memory flat
        job.ledger.pop(result.uid, None)
        append_rendered(
            job.out,
            {
                "uid": result.uid,
                "path": result.path,
                "rings": result.rings,
                "attempts": result.attempts,
                "wall_seconds": round(result.wall_seconds, 4),
                "blender_seconds": round(result.blender_seconds, 4),
                "notes": result.notes,
                "rings_with_notes": result.rings_with_notes,
            },
        )
        for note in result.notes:
            print(f"note: {result.path}: {note}")
        return
    if result.unexpected:
        print(f"error: {result.path}: {result.detail} (not quarantined; retried next run)")
        return
    entry = LedgerEntry(
        uid=result.uid,
        path=result.path,
        reason=str(result.reason),
        detail=result.detail,
        attempts=result.attempts,
        source=job.source_name,
        history=result.history,
    )
    append_ledger(job.out, entry)
    job.ledger[result.uid] = entry
