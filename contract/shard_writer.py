"""Shard writing: deterministic uid -> shard assignment and atomic tar + manifest files.

Every file this module writes appears under its final name only once it is complete
(contract.storage.open_write: locally a temporary name in the same folder, fsynced, then
`os.replace`d; in object storage the upload's completion), so a reader or a resumed job never sees
half a shard. The shards folder may be a local path or a URL. Tars are byte-reproducible: members
sorted by sample key and view index, fixed mtime/owner/mode, so the same staged objects always
give the same shard sha256.

Layout (see docs/CONTRACTS.md): OUT/shards/shard-{id:05d}.tar and shard-{id:05d}.tar.manifest.json.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from contract import storage
from contract.schema import (
    META_EXT,
    ManifestEntry,
    RingMeta,
    SchemaError,
    ShardManifest,
    manifest_path_for,
)

SHARD_NAME = "shard-{shard_id:05d}.tar"

# A sample as the schema encodes it: {"__key__": key, "meta.json": bytes, "view000.png": bytes, ...}
Sample = Mapping[str, Any]


def shard_id_for(uid: str, num_shards: int) -> int:
    """Stable shard of a uid: sha1(uid) mod num_shards (never Python's salted hash())."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    digest = hashlib.sha1(uid.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def shard_name(shard_id: int) -> str:
    return SHARD_NAME.format(shard_id=shard_id)


def _member_order(name: str) -> tuple[int, str]:
    # meta first, then views in index order (zero-padded names sort correctly).
    return (0 if name == META_EXT else 1, name)


class _HashingFile:
    """Write-only file wrapper that counts and hashes what passes through (one pass, no re-read)."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def write_tar(fileobj: BinaryIO, samples: Iterable[Sample]) -> list[ManifestEntry]:
    """Stream `samples`, in the order given, into a reproducible WebDataset tar.

    Members: meta first, then views in index order; fixed mtime, mode and owner. Every meta is
    parsed (so a sample that breaks the schema never reaches a shard) and a manifest entry with
    member sizes and sha256 is returned per sample. Memory: one sample at a time.
    """
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = str(sample["__key__"])
            if key in seen:
                raise SchemaError(f"duplicate sample key {key}")
            seen.add(key)
            if META_EXT not in sample:
                raise SchemaError(f"sample {key}: no {META_EXT} member")
            meta = RingMeta.from_json(sample[META_EXT], key)
            members = {}
            for name in sorted((n for n in sample if not n.startswith("__")), key=_member_order):
                data = sample[name]
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o444
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
                members[info.name] = {
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            entries.append(
                ManifestEntry(
                    key=key,
                    uid=meta.uid,
                    ring=meta.ring,
                    asset_sha256=meta.asset_sha256,
                    members=dict(sorted(members.items())),
                )
            )
    return entries


def tar_bytes(samples: Iterable[Sample]) -> bytes:
    """A small reproducible tar (e.g. one staged object) holding `samples` in key order."""
    buf = io.BytesIO()
    write_tar(buf, sorted(samples, key=lambda s: str(s["__key__"])))
    return buf.getvalue()


def read_tar_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Samples of a tar written by this module (member "key.ext"), in file order; no decoding."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        with storage.open_binary(path) as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, dot, ext = info.name.partition(".")
                if not dot:
                    raise SchemaError(f"tar {path}: member {info.name!r} has no extension")
                f = tar.extractfile(info)
                assert f is not None
                sample = samples.setdefault(key, {"__key__": key})
                if ext in sample:
                    raise SchemaError(f"tar {path}: member {info.name!r} appears twice")
                sample[ext] = f.read()
    except tarfile.TarError as exc:
        raise SchemaError(f"tar {path}: unreadable ({exc})") from exc
    return list(samples.values())


def write_shard(path: str | os.PathLike[str], samples: Iterable[Sample]) -> ShardManifest:
    """Stream one shard tar (samples in the order given) and its manifest beside it, both
    atomically; returns the manifest.

    The tar is replaced first and the manifest second, so a manifest always describes a complete
    tar; a reader that finds a tar without a matching manifest treats the shard as unverified.
    """
    folder, name = storage.split(path)
    storage.makedirs(folder)
    with storage.open_write(path) as f:  # appears under its name only complete
        hashing = _HashingFile(f)
        try:
            entries = write_tar(hashing, samples)  # type: ignore[arg-type]
        except SchemaError as exc:
            raise SchemaError(f"shard {name}: {exc}") from exc
    manifest = ShardManifest(
        shard=name,
        tar_bytes=hashing.size,
        tar_sha256=hashing.sha256.hexdigest(),
        entries=entries,
    )
    storage.write_bytes(manifest_path_for(str(path)), manifest.to_json())
    return manifest


def assign_shards(uids: Iterable[str], num_shards: int) -> dict[int, list[str]]:
    """shard id -> sorted uids; only non-empty shards appear."""
    out: dict[int, list[str]] = {}
    for uid in uids:
        out.setdefault(shard_id_for(uid, num_shards), []).append(uid)
    return {sid: sorted(out[sid]) for sid in sorted(out)}


def _current_manifest(path: str) -> ShardManifest | None:
    """The manifest of an existing, intact shard at `path`, else None. Intact: its size is the
    manifest's and, on local disk (a path or a file:// URL), so is its sha256. In object
    storage the check is the size only: hashing would download every shard again on each
    rerun, an object store never shows a partly written object (storage.open_write), and
    training checks shards the same way by default (size always, sha256 with
    data.verify_sha256)."""
    mpath = manifest_path_for(path)
    if not (storage.isfile(path) and storage.isfile(mpath)):
        return None
    try:
        manifest = ShardManifest.from_json(storage.read_bytes(mpath), storage.split(mpath)[1])
    except SchemaError:
        return None
    if manifest.tar_bytes != storage.size(path):
        return None
    local = isinstance(storage.resolve(path), Path)  # a path or a file:// URL
    if local and manifest.tar_sha256 != storage.sha256(path):
        return None
    return manifest


def plan_shards(
    staged: Mapping[str, str | os.PathLike[str]],
    shards_dir: str | os.PathLike[str],
    num_shards: int,
) -> dict[int, list[str]]:
    """shard id -> sorted uids for `staged` (uid -> path), after removing the shard files that no
    longer belong to the assignment (fewer objects, another num_shards) and leftovers of killed
    writers, so no object is ever present twice. Metadata only: no shard is read."""
    storage.makedirs(shards_dir)
    storage.forget(shards_dir)
    assignment = assign_shards(staged, num_shards)
    wanted = {shard_name(sid) for sid in assignment}
    exists = storage.isdir(shards_dir)
    for old in storage.names(shards_dir, "shard-*.tar*") if exists else []:
        if old.removesuffix(".manifest.json") not in wanted:
            storage.remove(storage.join(shards_dir, old))
    for tmp in storage.names(shards_dir, ".shard-*") if exists else []:  # a killed local writer's
        storage.remove(storage.join(shards_dir, tmp))
    return assignment


def build_shard(path: str | os.PathLike[str], staged_paths: Mapping[str, str]) -> ShardManifest:
    """One shard from its objects' staged tars (uid -> path): kept as is when its intact
    manifest already lists exactly these uids (staged objects are immutable), else written in
    uid order, one staged object in memory at a time. What a sharding task runs."""
    path = os.fspath(path)
    current = _current_manifest(path)
    if current is not None and current.uids == set(staged_paths):
        return current
    uids = sorted(staged_paths)
    samples = (s for uid in uids for s in read_tar_samples(staged_paths[uid]))
    return write_shard(path, samples)


def write_shards_from_staging(
    staged: Mapping[str, str | os.PathLike[str]],
    shards_dir: str | os.PathLike[str],
    num_shards: int,
) -> list[ShardManifest]:
    """(Re)write OUT/shards from per-object staged tars (uid -> path) so each uid appears once,
    in this process (the job runs `build_shard` as parallel Ray tasks instead)."""
    assignment = plan_shards(staged, shards_dir, num_shards)
    return [
        build_shard(storage.join(shards_dir, shard_name(sid)), {u: str(staged[u]) for u in uids})
        for sid, uids in assignment.items()
    ]
