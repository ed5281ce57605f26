"""The render job's state on disk, which is all a resumed job needs:

    OUT/staging/<uid>.tar    one per rendered object (all its rings), written tmp + rename, so a
                             file under its final name is a complete object
    OUT/quarantine.jsonl     one JSON line per refused object: uid, path, reason, detail,
                             attempts (+ source, history); a line is written only once the
                             object's reason is final (non-transient, or attempts exhausted)
    OUT/rendered.jsonl       one JSON line per staged object: uid, path, rings, attempts,
                             wall and Blender seconds (for humans and the benchmark; resume
                             trusts staging/ only)

An object is done when it is staged or quarantined; a killed job loses at most the objects that
were in flight. Nothing here knows about Ray.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline.shards import atomic_write_bytes

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


def staging_path(out: Path, uid: str) -> Path:
    return out / STAGING_DIR / f"{uid}.tar"


def stage_object(out: Path, uid: str, data: bytes) -> Path:
    path = staging_path(out, uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def staged_objects(out: Path) -> dict[str, Path]:
    """uid -> staged tar; leftovers of a killed writer (hidden temporaries) are removed."""
    folder = out / STAGING_DIR
    if not folder.is_dir():
        return {}
    for tmp in folder.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)
    return {p.stem: p for p in sorted(folder.glob("*.tar"))}


def read_ledger(out: Path) -> dict[str, LedgerEntry]:
    """uid -> latest entry. A torn line (job killed mid-write) is dropped with a warning: that
    object is simply tried again. The job rewrites the ledger right after reading it, so new lines
    never get glued to a torn one."""
    path = out / LEDGER_FILE
    if not path.exists():
        return {}
    entries: dict[str, LedgerEntry] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = LedgerEntry(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            print(f"warning: {path}, line {lineno}: ignoring torn entry ({exc})", file=sys.stderr)
            continue
        entries[entry.uid] = entry
    return entries


def append_ledger(out: Path, entry: LedgerEntry) -> None:
    """Append one line and fsync: a quarantined object is never forgotten by a resumed job."""
    path = out / LEDGER_FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write(entry.to_line())
        f.flush()
        os.fsync(f.fileno())


def append_rendered(out: Path, record: dict[str, Any]) -> None:
    with open(out / RENDERED_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_rendered(out: Path) -> list[dict[str, Any]]:
    path = out / RENDERED_FILE
    if not path.exists():
        return []
    out_list = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out_list.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # torn by a kill: informational only
    return out_list


def rewrite_ledger(out: Path, entries: Iterable[LedgerEntry]) -> None:
    """Replace the ledger atomically (one line per uid, sorted), e.g. after objects were retried."""
    text = "".join(e.to_line() for e in sorted(entries, key=lambda e: e.uid))
    atomic_write_bytes(out / LEDGER_FILE, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
