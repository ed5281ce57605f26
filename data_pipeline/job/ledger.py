"""The render job's state in OUT (a local folder or an object-store URL), which is all a resumed
job needs:

    OUT/staging/<uid>.tar    one per rendered object (all its rings); a file under its final name
                             is a complete object (contract.storage.write_bytes)
    OUT/quarantine.jsonl     one JSON line per refused object: uid, path, reason, detail,
                             attempts (+ source, history); a line is written only once the
                             object's reason is final (non-transient, or attempts exhausted)
    OUT/rendered.jsonl       one JSON line per staged object: uid, path, rings, attempts,
                             wall and Blender seconds (for humans and the benchmark; resume
                             trusts staging/ only)

Locally a record is a line appended to its file (fsynced for the ledger). Object stores cannot
append, so in a URL OUT each record is first its own object, `<file>.d/<uid>.json`, and the job
folds these into the .jsonl file when it finishes (`compact_records`); readers take the file's
lines and then the pending parts, so a killed job's records are read either way.

An object is done when it is staged or quarantined; a killed job loses at most the objects that
were in flight. Nothing here knows about Ray.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract import storage

Location = Path | str  # a local path, or a URL (contract.storage)

STAGING_DIR = "staging"
LEDGER_FILE = "quarantine.jsonl"
RENDERED_FILE = "rendered.jsonl"  # per-object timings of staged objects (informational)


@dataclass
class LedgerEntry:
    uid: str
    path: str
    reason: str  # errors.Reason value
    detail: str
    attempts: int
    source: str = ""
    history: list[str] = field(default_factory=list)

    def to_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"


def staging_path(out: Location, uid: str) -> Location:
    folder = storage.join(out, STAGING_DIR)
    return (
        storage.join(folder, f"{uid}.tar") if storage.is_url(out) else Path(folder) / f"{uid}.tar"
    )


def stage_object(out: Location, uid: str, data: bytes) -> Location:
    path = staging_path(out, uid)
    storage.makedirs(storage.join(out, STAGING_DIR))
    storage.write_bytes(path, data)
    return path


def staged_objects(out: Location) -> dict[str, Location]:
    """uid -> staged tar; leftovers of a killed local writer (hidden temporaries) are removed."""
    folder = storage.join(out, STAGING_DIR)
    if storage.is_url(out):
        storage.forget(folder)
        names = storage.names(folder, "*.tar") if storage.isdir(folder) else []
        return {n.removesuffix(".tar"): storage.join(folder, n) for n in sorted(names)}
    local = Path(folder)
    if not local.is_dir():
        return {}
    for tmp in local.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)
    return {p.stem: p for p in sorted(local.glob("*.tar"))}


# -- JSON-line records (the ledger, the timings) -------------------------------------------------


def _parts_dir(out: Location, name: str) -> str:
    return storage.join(out, f"{name}.d")


def _part_paths(out: Location, name: str) -> list[str]:
    folder = _parts_dir(out, name)
    if not storage.is_url(out):
        return []  # a local OUT appends to the file itself
    storage.forget(folder)
    if not storage.isdir(folder):
        return []
    return [storage.join(folder, n) for n in sorted(storage.names(folder, "*.json"))]


def iter_records(out: Location, name: str) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(where, record) for every record of OUT/<name>: the file's lines, then (URL OUT) the
    parts not yet folded in; record is None for a torn or non-object line."""
    path = storage.join(out, name)
    lines: list[tuple[str, str]] = []
    if storage.exists(path):
        text = storage.read_bytes(path).decode("utf-8", errors="replace")
        lines = [(f"{path}, line {i}", ln) for i, ln in enumerate(text.splitlines(), start=1)]
    parts = _part_paths(out, name)
    if parts:
        got = storage.read_many(parts)
        lines += [(p, got[p].decode("utf-8", errors="replace")) for p in parts]
    for where, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            yield where, None
            continue
        yield where, record if isinstance(record, dict) else None


def _append_record(out: Location, name: str, uid: str, line: str, sync: bool) -> None:
    if storage.is_url(out):
        storage.write_bytes(storage.join(_parts_dir(out, name), f"{uid}.json"), line.encode())
        return
    with open(Path(out) / name, "a", encoding="utf-8") as f:
        f.write(line)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _rewrite_records(
    out: Location, name: str, lines: Iterable[str], parts: list[str] | None = None
) -> None:
    """Replace OUT/<name> with `lines`, then drop `parts` (default: the parts listed before the
    write), whose records the caller put in `lines`."""
    parts = _part_paths(out, name) if parts is None else parts
    write_if_changed(storage.join(out, name), "".join(lines).encode("utf-8"))
    storage.remove_many(parts)


def compact_records(out: Location, name: str) -> None:
    """Fold a URL OUT's pending parts of OUT/<name> into the file, one record per uid (the
    latest; a run killed while deleting parts leaves no duplicate behind); nothing to do for a
    local OUT."""
    parts = _part_paths(out, name)
    if not parts:
        return
    by_uid: dict[str, dict[str, Any]] = {}
    others: list[dict[str, Any]] = []
    for _, record in iter_records(out, name):
        if record is None:
            continue
        if "uid" in record:
            by_uid.pop(str(record["uid"]), None)  # re-inserted last: the latest keeps its place
            by_uid[str(record["uid"])] = record
        else:
            others.append(record)
    lines = (json.dumps(r, sort_keys=True) + "\n" for r in [*others, *by_uid.values()])
    _rewrite_records(out, name, lines, parts)


def read_ledger(out: Location) -> dict[str, LedgerEntry]:
    """uid -> latest entry. A torn line (job killed mid-write) is dropped with a warning: that
    object is simply tried again. The job rewrites the ledger right after reading it, so new lines
    never get glued to a torn one."""
    entries: dict[str, LedgerEntry] = {}
    for where, record in iter_records(out, LEDGER_FILE):
        try:
            if record is None:
                raise TypeError("not a JSON object")
            entry = LedgerEntry(**record)
        except TypeError as exc:
            print(f"warning: {where}: ignoring torn entry ({exc})", file=sys.stderr)
            continue
        entries[entry.uid] = entry
    return entries


def append_ledger(out: Location, entry: LedgerEntry) -> None:
    """Record one quarantined object durably (an fsynced line, or its own object): it is never
    forgotten by a resumed job."""
    _append_record(out, LEDGER_FILE, entry.uid, entry.to_line(), sync=True)


def append_rendered(out: Location, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    _append_record(out, RENDERED_FILE, str(record.get("uid", "")), line, sync=False)


def read_rendered(out: Location) -> list[dict[str, Any]]:
    """The timing records (torn lines, left by a kill, are skipped: informational only)."""
    return [r for _, r in iter_records(out, RENDERED_FILE) if r is not None]


def rewrite_ledger(out: Location, entries: Iterable[LedgerEntry]) -> None:
    """Replace the ledger atomically (one line per uid, sorted), e.g. after objects were retried."""
    _rewrite_records(out, LEDGER_FILE, (e.to_line() for e in sorted(entries, key=lambda e: e.uid)))


def json_bytes(data: Any) -> bytes:
    """How the job writes its JSON files."""
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def write_json(path: Location, data: Any) -> None:
    storage.write_bytes(path, json_bytes(data))


def write_if_changed(path: Location, data: bytes) -> bool:
    """Write `data` unless the file already holds exactly it (a finished job run again changes
    no file); True if it wrote."""
    if storage.isfile(path) and storage.read_bytes(path) == data:
        return False
    storage.write_bytes(path, data)
    return True
