"""Reading shards back: typed rings, shard listing, manifests and integrity checks.

`read_rings` accepts what WebDataset accepts (local paths, brace patterns such as
"out/shards/shard-{00000..00003}.tar", http(s)/pipe: URLs) plus local globs and folders.
Bad samples raise `SchemaError` naming the shard and the key; nothing is ever substituted.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from braceexpand import braceexpand

from data_pipeline.schema import (
    MANIFEST_SUFFIX,
    RingRecord,
    SchemaError,
    ShardManifest,
    decode_sample,
    manifest_path_for,
)
from data_pipeline.shards import sha256_file

_REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "file:")


def list_shards(directory: str | os.PathLike[str]) -> list[str]:
    """Sorted shard tars of a folder (OUT/shards, or OUT itself if it holds a shards/ folder)."""
    directory = Path(directory)
    if (directory / "shards").is_dir():
        directory = directory / "shards"
    return sorted(str(p) for p in directory.glob("shard-*.tar"))


def expand_urls(urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Braces expanded; local folders and globs become sorted file lists; URLs pass through."""
    items = [urls] if isinstance(urls, str | os.PathLike) else list(urls)
    out: list[str] = []
    for item in (e for i in items for e in braceexpand(str(i))):
        if item.startswith(_REMOTE_PREFIXES):
            out.append(item)
        elif os.path.isdir(item):
            found = list_shards(item)
            if not found:
                raise FileNotFoundError(f"no shard-*.tar in folder {item}")
            out.extend(found)
        elif glob.has_magic(item):
            found = sorted(glob.glob(item))
            if not found:
                raise FileNotFoundError(f"no file matches {item}")
            out.extend(found)
        elif not os.path.exists(item):
            raise FileNotFoundError(f"shard {item} does not exist")
        else:
            out.append(item)
    return out


def read_rings(
    urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    views: Sequence[int] | None = None,
) -> Iterator[RingRecord]:
    """Every ring of the given shards, in order, decoding only `views` (all if None)."""
    import webdataset as wds  # imports torch (seconds): only when rings are actually read

    for url in expand_urls(urls):  # one shard at a time, so every error names its shard
        iterator = iter(wds.WebDataset([url], shardshuffle=False, empty_check=False))
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


def read_manifests(directory: str | os.PathLike[str]) -> list[ShardManifest]:
    """Manifests of every shard in a folder (OUT or OUT/shards), sorted by shard name.

    A shard without its manifest is an error: the writer always writes both.
    """
    manifests = []
    for shard in list_shards(directory):
        mpath = manifest_path_for(shard)
        if not os.path.exists(mpath):
            raise SchemaError(f"shard {shard} has no manifest {Path(mpath).name}")
        manifests.append(ShardManifest.from_json(Path(mpath).read_bytes(), Path(mpath).name))
    return manifests


def verify_shard(path: str | os.PathLike[str]) -> ShardManifest:
    """Check a shard tar against its manifest (size and sha256); returns the manifest."""
    path = str(path)
    mpath = manifest_path_for(path)
    if not os.path.exists(mpath):
        raise SchemaError(f"shard {path} has no manifest (expected {Path(mpath).name})")
    manifest = ShardManifest.from_json(Path(mpath).read_bytes(), Path(mpath).name)
    size = os.path.getsize(path)
    if size != manifest.tar_bytes:
        raise SchemaError(f"shard {path}: {size} bytes, manifest says {manifest.tar_bytes}")
    digest = sha256_file(path)
    if digest != manifest.tar_sha256:
        raise SchemaError(f"shard {path}: sha256 {digest} != manifest {manifest.tar_sha256}")
    return manifest


__all__ = [
    "MANIFEST_SUFFIX",
    "expand_urls",
    "list_shards",
    "read_manifests",
    "read_rings",
    "verify_shard",
]
