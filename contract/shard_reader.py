"""Reading shards back: typed rings, shard listing, manifests and integrity checks.

`read_rings` accepts what WebDataset accepts (local paths, brace patterns such as
"out/shards/shard-{00000..00003}.tar", http(s)/pipe: URLs) plus local globs and folders, and
fsspec URLs of object storage (contract.storage): folders ("s3://bucket/ds"), globs
("s3://bucket/ds/shards/shard-0000*.tar") and shards, streamed through fsspec.
Bad samples raise `SchemaError` naming the shard and the key; nothing is ever substituted.

A folder, local or in object storage, is read only when its dataset index
(contract.dataset_index) says it is complete and every shard has its indexed size; otherwise
`IncompleteDatasetError`, unless the caller passes `allow_incomplete=True` (then the folder's
shard-*.tar files are read, with a warning). Explicit tar paths, globs, braces and URLs name their
files themselves and need no index.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

from braceexpand import braceexpand

from contract import storage
from contract.dataset_index import (
    SHARD_GLOB,
    check_shard,
    incomplete,
    read_index,
    shards_folder,
)
from contract.schema import (
    MANIFEST_SUFFIX,
    IncompleteDatasetError,
    RingRecord,
    SchemaError,
    ShardManifest,
    decode_sample,
    manifest_path_for,
)

log = logging.getLogger(__name__)

# Streamed by webdataset as named (curl, a command, file:/path); fsspec URLs are storage's.
_REMOTE_PREFIXES = ("http://", "https://", "pipe:", "file:")

Urls = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
_META_MEMBER = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: not sample members


def list_shards(directory: str | os.PathLike[str], allow_incomplete: bool = False) -> list[str]:
    """Shard tars of a complete folder (OUT/shards, or OUT holding shards/) in index order.

    Raises `IncompleteDatasetError` when the folder has no complete index, the index and the
    folder's shard-*.tar files disagree, or a shard's size is not the indexed one. With
    `allow_incomplete=True` such a folder's shard-*.tar files are returned (sorted) with a warning.
    """
    folder = shards_folder(directory)
    if not storage.isdir(folder):
        raise FileNotFoundError(f"shard folder {folder} does not exist")
    try:
        index = read_index(folder)
        for entry in index.shards:
            try:
                check_shard(storage.join(folder, entry.name), entry, verify_sha256=False)
            except SchemaError as exc:
                raise incomplete(
                    folder, str(exc), "the shard changed after the index was written"
                ) from exc
        return [storage.join(folder, e.name) for e in index.shards]
    except IncompleteDatasetError as exc:
        if not allow_incomplete:
            raise
        log.warning("reading an incomplete dataset (allow_incomplete=True): %s", exc)
        return sorted(storage.join(folder, n) for n in storage.names(folder, SHARD_GLOB))


def expand_urls(urls: Urls, allow_incomplete: bool = False) -> list[str]:
    """Braces expanded; folders (through `list_shards`, which checks their index) and globs,
    local or fsspec URLs, become file lists; other URLs and tar paths pass through (a local path
    must exist; a shard URL is looked up when it is read)."""
    items = [urls] if isinstance(urls, str | os.PathLike) else list(urls)
    out: list[str] = []
    for item in (e for i in items for e in braceexpand(str(i))):
        remote = storage.is_url(item)
        if not remote and item.startswith(_REMOTE_PREFIXES):
            out.append(item)
        elif storage.is_folder(item):
            found = list_shards(item, allow_incomplete)
            if not found:
                raise FileNotFoundError(f"no shard-*.tar in folder {item}")
            out.extend(found)
        elif glob.has_magic(item):
            found = storage.glob(item)
            if not found:
                raise FileNotFoundError(f"no file matches {item}")
            out.extend(found)
        elif remote and not item.endswith(storage.SHARD_SUFFIX):
            raise FileNotFoundError(f"{item} is neither a shard folder nor a .tar shard")
        elif not remote and not os.path.exists(item):
            raise FileNotFoundError(f"shard {item} does not exist")
        else:
            out.append(item)
    return out


def read_rings(
    urls: Urls, views: Sequence[int] | None = None, allow_incomplete: bool = False
) -> Iterator[RingRecord]:
    """Every ring of the given shards, in order, decoding only `views` (all if None).

    A folder must hold a complete dataset (see `list_shards`) unless `allow_incomplete`.
    """
    for url in expand_urls(
        urls, allow_incomplete
    ):  # one shard at a time, so every error names its shard
        iterator = shard_samples(url)
        while True:
            try:
                sample = next(iterator)
            except StopIteration:
                break
            except Exception as exc:  # tar/IO errors surface from inside WebDataset
                raise SchemaError(f"shard {url}: unreadable ({exc})") from exc
            try:
                yield decode_sample(sample, views)
            except SchemaError as exc:
                raise SchemaError(f"shard {url}: {exc}") from exc


def shard_samples(url: str) -> Iterator[dict[str, Any]]:
    """The raw samples (webdataset dicts: `__key__`, `__url__`, one entry per member extension)
    of one shard, in tar order. Local .tar files are read by `local_shard_samples`, fsspec URLs
    streamed through fsspec, the rest through webdataset's opener (file:, http(s) with curl,
    pipe: commands). Reading errors propagate: tarfile's, OSError (remote ones too), EOFError,
    webdataset's ValueError."""
    local = not storage.is_url(url) and not url.startswith(_REMOTE_PREFIXES)
    if local and url.endswith(storage.SHARD_SUFFIX):  # compressed tars: webdataset below
        yield from local_shard_samples(url)
        return
    import webdataset as wds  # imports torch (seconds): only when rings are actually read

    if not storage.is_url(url):
        yield from wds.tarfile_samples([{"url": url}])
        return
    with storage.open_binary(url) as stream:
        files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}])
        yield from wds.tariterators.group_by_keys(files)


def local_shard_samples(path: str) -> Iterator[dict[str, Any]]:
    """The samples of a local shard, grouped as webdataset groups them (its own name splitting
    and skip rules: the key is a member's path up to the first dot of its base name, the rest
    its lower-cased extension; `__...__` members and non-files are skipped), read with one seek
    and one read per member through the standard library's tarfile (webdataset's stream reader
    costs about twice as much per member). Uncompressed tars only: `shard_samples` sends
    compressed ones to webdataset.

    Damage is an error, never a short shard: a member cut short raises EOFError; a tar that
    stops being one before its end-of-archive blocks (cut at a member boundary, overwritten;
    tarfile alone would take either as the end of the archive) raises tarfile.ReadError, and
    the sample being collected then is not yielded."""
    from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        sample: dict[str, Any] | None = None
        while (info := tar.next()) is not None:
            tar.members.clear()  # type: ignore[attr-defined]  # not looked up: memory stays flat
            name = info.name
            if not info.isreg() or _META_MEMBER.match(name):
                continue
            if "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix):
                continue
            key, ext = base_plus_ext(name)
            if key is None:
                continue
            f.seek(info.offset_data)
            data = f.read(info.size)
            if len(data) != info.size:
                raise EOFError(f"member {name}: {len(data)} of {info.size} bytes (cut short)")
            if sample is None or sample["__key__"] != key:
                if sample is not None:
                    yield sample
                sample = {"__key__": key, "__url__": path}
            ext = ext.lower()
            if ext in sample:
                raise ValueError(f"member {name}: a second {ext!r} for key {key}")
            sample[ext] = data
        f.seek(tar.offset)  # after the last member: the end-of-archive zero blocks, and only zeros
        tail = f.read()
        if len(tail) < 2 * tarfile.BLOCKSIZE or tail.strip(b"\0"):
            raise tarfile.ReadError(
                f"no tar header and no end-of-archive at byte {tar.offset}: the shard is damaged"
            )
        if sample is not None:
            yield sample


def read_manifests(
    directory: str | os.PathLike[str], allow_incomplete: bool = False
) -> list[ShardManifest]:
    """Manifests of every shard in a complete folder (OUT or OUT/shards), in index order.

    A shard without its manifest is an error: the writer always writes both.
    """
    manifests = []
    for shard in list_shards(directory, allow_incomplete):
        mpath = manifest_path_for(shard)
        name = storage.split(mpath)[1]
        try:
            raw = storage.read_bytes(mpath)
        except FileNotFoundError:
            raise SchemaError(f"shard {shard} has no manifest {name}") from None
        manifests.append(ShardManifest.from_json(raw, name))
    return manifests


def verify_shard(path: str | os.PathLike[str]) -> ShardManifest:
    """Check a shard tar (a local path or a URL) against its manifest (size and sha256); returns
    the manifest."""
    path = str(path)
    mpath = manifest_path_for(path)
    name = storage.split(mpath)[1]
    try:
        raw = storage.read_bytes(mpath)
    except FileNotFoundError:
        raise SchemaError(f"shard {path} has no manifest (expected {name})") from None
    manifest = ShardManifest.from_json(raw, name)
    size = storage.size(path)
    if size != manifest.tar_bytes:
        raise SchemaError(f"shard {path}: {size} bytes, manifest says {manifest.tar_bytes}")
    digest = storage.sha256(path)
    if digest != manifest.tar_sha256:
        raise SchemaError(f"shard {path}: sha256 {digest} != manifest {manifest.tar_sha256}")
    return manifest


__all__ = [
    "MANIFEST_SUFFIX",
    "IncompleteDatasetError",
    "expand_urls",
    "list_shards",
    "local_shard_samples",
    "read_manifests",
    "read_rings",
    "shard_samples",
    "verify_shard",
]
