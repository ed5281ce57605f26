"""The dataset index: one file that says a shard folder is complete, and what it holds.

    OUT/shards/index.json   DatasetIndex: schema version, complete, counts of shards, rings and
                            objects, and per shard its file name, bytes, sha256, rings, objects

The render job removes the index before it touches any shard and writes it (atomically) after
the last one, so a folder is either complete (the index lists exactly its shard-*.tar files, at
their sizes) or visibly not: a job killed while rewriting shards leaves no index. Readers
(`contract.shard_reader`) refuse such a folder with `IncompleteDatasetError` unless asked to
read it anyway (`allow_incomplete=True`). Explicit tar paths, globs and URLs are not folders and
need no index. Per-shard contents (keys, member hashes) stay in the shard manifests.

The readers take a folder in object storage too (an fsspec URL such as s3://bucket/ds, see
contract.storage) with the same checks and messages, and the render job writes one there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import storage
from contract.schema import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    IncompleteDatasetError,
    SchemaError,
    ShardManifest,
    is_supported_version,
    load_json_object,
    manifest_path_for,
)
from contract.shard_writer import assign_shards, shard_name

INDEX_FILE = "index.json"
SHARD_GLOB = "shard-*.tar"
# How to read an incomplete folder anyway, in every place a reader is configured.
OVERRIDE_HINT = (
    "to read it anyway pass allow_incomplete=True (training: data.allow_incomplete=true, "
    "evaluation: allow_incomplete=true)"
)


@dataclass
class IndexEntry:
    """One shard as the index knows it."""

    name: str  # file name of the tar, e.g. "shard-00000.tar"
    bytes: int
    sha256: str
    rings: int
    objects: int


@dataclass
class DatasetIndex:
    """OUT/shards/index.json; `shards` sorted by file name, the order readers list them in."""

    shards: list[IndexEntry]
    num_shards: int
    num_rings: int
    num_objects: int
    complete: bool = True
    schema_version: str = SCHEMA_VERSION

    def entry(self, shard_file: str) -> IndexEntry | None:
        return next((e for e in self.shards if e.name == shard_file), None)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, name: str = INDEX_FILE) -> DatasetIndex:
        """Parse and check an index; any defect is a `SchemaError` naming `name`."""
        data = load_json_object(raw, f"dataset index {name}")
        if not is_supported_version(data.get("schema_version")):
            raise SchemaError(
                f"dataset index {name}: schema_version {data.get('schema_version')!r} is not "
                f"supported (this reader knows {sorted(SUPPORTED_VERSIONS)})"
            )
        try:
            entries = [IndexEntry(**e) for e in data.pop("shards")]
            index = cls(shards=entries, **data)
        except (KeyError, TypeError) as exc:  # a field missing, unknown or not an object
            raise SchemaError(f"dataset index {name}: malformed ({exc})") from exc
        _check_consistent(index, name)
        return index


def _check_consistent(index: DatasetIndex, name: str) -> None:
    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(index.complete, bool):
        raise SchemaError(f"dataset index {name}: complete must be true or false")
    for e in index.shards:
        if not (
            isinstance(e.name, str)
            and isinstance(e.sha256, str)
            and all(count(v) for v in (e.bytes, e.rings, e.objects))
        ):
            raise SchemaError(f"dataset index {name}: malformed entry {dataclasses.asdict(e)}")
    names = [e.name for e in index.shards]
    if len(set(names)) != len(names) or any(os.sep in n or n.startswith(".") for n in names):
        raise SchemaError(f"dataset index {name}: shard names must be distinct plain file names")
    totals = (len(index.shards), sum(e.rings for e in index.shards))
    if (index.num_shards, index.num_rings) != totals or not count(index.num_objects):
        raise SchemaError(
            f"dataset index {name}: counts ({index.num_shards} shards, {index.num_rings} rings) "
            f"disagree with its entries ({totals[0]} shards, {totals[1]} rings)"
        )


def shards_folder(directory: str | os.PathLike[str]) -> Path | str:
    """OUT/shards for OUT (a folder holding shards/), else the folder itself; a Path for a local
    folder, the URL (str) for one in object storage."""
    if storage.is_url(directory):
        url = os.fspath(directory).rstrip("/")
        return sub if storage.isdir(sub := storage.join(url, "shards")) else url
    directory = Path(directory)
    return directory / "shards" if (directory / "shards").is_dir() else directory


def index_from_manifests(manifests: Iterable[ShardManifest], complete: bool = True) -> DatasetIndex:
    entries = sorted(
        (
            IndexEntry(
                name=m.shard,
                bytes=m.tar_bytes,
                sha256=m.tar_sha256,
                rings=len(m.entries),
                objects=len(m.uids),
            )
            for m in manifests
        ),
        key=lambda e: e.name,
    )
    return DatasetIndex(
        shards=entries,
        num_shards=len(entries),
        num_rings=sum(e.rings for e in entries),
        num_objects=sum(e.objects for e in entries),  # a uid lives in exactly one shard
        complete=complete,
    )


def remove_index(shards_dir: str | os.PathLike[str]) -> None:
    """Mark the folder incomplete before its shards change (durably: a local folder is fsynced;
    an object store's delete is durable when it returns)."""
    if storage.is_url(shards_dir):
        storage.remove(storage.join(shards_dir, INDEX_FILE))
        return
    folder = Path(shards_dir)
    (folder / INDEX_FILE).unlink(missing_ok=True)
    if folder.is_dir():
        fd = os.open(folder, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder
                os.fsync(fd)
        finally:
            os.close(fd)


def write_index(
    shards_dir: str | os.PathLike[str], manifests: Iterable[ShardManifest]
) -> DatasetIndex:
    """Write index.json for the shards `manifests` describe, atomically; call it after the last
    shard is written. Refuses (SchemaError) when the folder disagrees with the manifests."""
    folder = storage.resolve(shards_dir)
    index = index_from_manifests(manifests)
    storage.forget(folder)
    on_disk = set(storage.names(folder, SHARD_GLOB)) if storage.isdir(folder) else set()
    listed = {e.name for e in index.shards}
    if on_disk != listed:
        raise SchemaError(
            f"cannot index {folder}: shards without a manifest {sorted(on_disk - listed)}, "
            f"manifests without a shard {sorted(listed - on_disk)}"
        )
    for e in index.shards:
        check_shard(storage.join(folder, e.name), e, verify_sha256=False)
    storage.write_bytes(storage.join(folder, INDEX_FILE), index.to_json())
    return index


# Why a folder can be in each state, for the error message.
KILLED = (
    f"the render job writes {INDEX_FILE} after its last shard, so a job killed (or still "
    "running) while rewriting the shards leaves none: run it again to finish the folder"
)
CHANGED = (
    f"the folder changed after {INDEX_FILE} was written (shards added, removed or replaced): "
    "run the render job again to rewrite it"
)


def write_index_from_manifests(shards_dir: str | os.PathLike[str]) -> DatasetIndex:
    """Index a folder from the manifests beside its shard-*.tar files: for folders written shard
    by shard with `shards.write_shard` (tests, benchmarks). Not for a render job's output: a
    job killed mid-rewrite leaves shards of two layouts, each with a valid manifest; run the job
    again instead."""
    folder = Path(shards_dir)
    manifests = []
    for shard in sorted(folder.glob(SHARD_GLOB)):
        mpath = Path(manifest_path_for(str(shard)))
        if not mpath.is_file():
            raise SchemaError(f"cannot index {folder}: {shard.name} has no manifest")
        manifests.append(ShardManifest.from_json(mpath.read_bytes(), mpath.name))
    return write_index(folder, manifests)


def incomplete(folder: Path | str, reason: str, why: str = KILLED) -> IncompleteDatasetError:
    """The error readers raise for `folder`: what is wrong, why, and how to override."""
    return IncompleteDatasetError(
        f"dataset {folder} is incomplete: {reason}; {why}; {OVERRIDE_HINT}"
    )


def read_index(shards_dir: str | os.PathLike[str]) -> DatasetIndex:
    """The index of a complete folder (OUT or OUT/shards); `IncompleteDatasetError` when it is
    missing, torn, marked incomplete, or lists other shard-*.tar files than the folder holds.
    Sizes and hashes are `check_shard`'s business. A URL folder is listed anew (not from fsspec's
    cache), once: the sizes `check_shard` asks for next come from that listing."""
    folder = shards_folder(shards_dir)
    storage.forget(folder)
    path = storage.join(folder, INDEX_FILE)
    if not storage.isfile(path):
        found = len(storage.names(folder, SHARD_GLOB))
        raise incomplete(folder, f"no {INDEX_FILE} ({found} shard-*.tar files without one)")
    try:
        index = DatasetIndex.from_json(storage.read_bytes(path), path)
    except SchemaError as exc:
        raise incomplete(folder, f"{INDEX_FILE} is unreadable ({exc})") from exc
    if not index.complete:
        raise incomplete(folder, f"{INDEX_FILE} marks it incomplete")
    on_disk = set(storage.names(folder, SHARD_GLOB))
    listed = {e.name for e in index.shards}
    if missing := sorted(listed - on_disk):
        raise incomplete(folder, f"shards listed in {INDEX_FILE} are missing: {missing}", CHANGED)
    if extra := sorted(on_disk - listed):
        raise incomplete(folder, f"shards not in {INDEX_FILE} are present: {extra}", CHANGED)
    return index


def finished_shards(
    uids: Iterable[str], shards_dir: str | os.PathLike[str], num_shards: int
) -> list[ShardManifest] | None:
    """The manifests of a shard folder that already is what writing the objects `uids` into
    `num_shards` shards would make, else None: its index complete and listing exactly the
    assigned shards, no other shard file or writer's leftover beside them, and each shard's
    manifest listing exactly its uids, with the size and sha256 the index has and the size the
    file has. Reads the index and the manifests, no shard: what a finished render job checks
    when it is run again, instead of writing anything."""
    try:
        index = read_index(shards_dir)
    except IncompleteDatasetError:
        return None
    folder = shards_folder(shards_dir)
    assignment = assign_shards(uids, num_shards)
    tars = {shard_name(sid): sorted(members) for sid, members in assignment.items()}
    expected = set(tars) | {manifest_path_for(name) for name in tars}
    if set(storage.names(folder, "shard-*.tar*")) != expected or storage.names(folder, ".shard-*"):
        return None
    entries = {e.name: e for e in index.shards}
    manifests = []
    for name, members in tars.items():
        path = storage.join(folder, name)
        try:
            manifest = ShardManifest.from_json(storage.read_bytes(manifest_path_for(path)), name)
            size = storage.size(path)
        except (SchemaError, OSError):
            return None
        entry = entries.get(name)
        if (
            entry is None
            or manifest.uids != set(members)
            or not manifest.tar_bytes == entry.bytes == size
            or manifest.tar_sha256 != entry.sha256
        ):
            return None
        manifests.append(manifest)
    return manifests


def check_shard(path: str | os.PathLike[str], entry: IndexEntry, verify_sha256: bool) -> None:
    """SchemaError naming the file when its size (always) or sha256 (if asked) is not the
    index's. A local path or a URL (fsspec's `info()` size; the sha256 streams the object); an
    unreadable file raises OSError."""
    size = storage.size(path)
    if size != entry.bytes:
        raise SchemaError(f"shard {path}: {size} bytes, {INDEX_FILE} says {entry.bytes}")
    if verify_sha256 and (digest := storage.sha256(path)) != entry.sha256:
        raise SchemaError(f"shard {path}: sha256 {digest} != {INDEX_FILE} {entry.sha256}")


def verify_dataset(shards_dir: str | os.PathLike[str]) -> DatasetIndex:
    """Full check of a folder: complete index, and every shard's size and sha256 as indexed."""
    folder = shards_folder(shards_dir)
    index = read_index(folder)
    for e in index.shards:
        check_shard(storage.join(folder, e.name), e, verify_sha256=True)
    return index


__all__ = [
    "INDEX_FILE",
    "DatasetIndex",
    "IncompleteDatasetError",
    "IndexEntry",
    "check_shard",
    "read_index",
    "remove_index",
    "shards_folder",
    "verify_dataset",
    "write_index",
    "write_index_from_manifests",
]
