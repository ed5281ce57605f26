"""data.shards -> the shard list of the training stream, with the dataset index entry of every
shard whose index can be read (see training.data)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import webdataset as wds

from training.config import DataConfig

log = logging.getLogger("training.data")


@dataclass
class Shards:
    """The shard list of data.shards, and the dataset index entries of those read from a folder."""

    urls: list[str]
    entries: dict[str, Any] = field(default_factory=dict)  # url -> dataset_index.IndexEntry


def resolve_shards(cfg: DataConfig) -> Shards:
    """data.shards ("::"-separated folders, paths, globs, braces or URLs) -> shards. A folder,
    local or in object storage (an fsspec URL such as s3://bucket/ds), is read through its
    dataset index (refused without a complete one unless data.allow_incomplete=true, which lists
    its tar files). Every shard that a readable index lists, whichever form named it, is checked
    against its entry before it is read."""
    from contract import storage
    from contract.dataset_index import INDEX_FILE, IndexEntry, read_index, shards_folder
    from contract.schema import IncompleteDatasetError
    from contract.shard_reader import expand_urls

    out = Shards(urls=[])
    indexes: dict[str, dict[str, IndexEntry]] = {}  # folder -> shard file name -> entry
    lenient: dict[str, dict[str, IndexEntry]] = {}  # the same, {} without a readable index

    def entries_of(folder: str) -> dict[str, IndexEntry]:
        if folder not in indexes:
            try:
                indexes[folder] = {e.name: e for e in read_index(folder).shards}
            except IncompleteDatasetError:
                if not cfg.allow_incomplete:
                    raise
                indexes[folder] = {}
        return indexes[folder]

    def remote_entries(folder: str) -> dict[str, IndexEntry]:
        """The entries of a URL folder's index, {} when it has none that reads: read once per
        folder (where a local folder's index is looked for per shard, with a stat)."""
        if folder not in lenient:
            try:
                lenient[folder] = entries_of(folder)
            except (IncompleteDatasetError, OSError) as exc:  # e.g. no permission to list
                log.info("no usable index for %s (%s): its shards are read unchecked", folder, exc)
                lenient[folder] = {}
        return lenient[folder]

    for item in (s for s in cfg.shards.split("::") if s):
        if storage.is_url(item) and not cfg.allow_incomplete and storage.is_folder(item):
            folder = str(shards_folder(item))
            urls = [storage.join(folder, name) for name in entries_of(folder)]
        elif os.path.isdir(item) and not cfg.allow_incomplete:
            folder = str(shards_folder(item))
            urls = [os.path.join(folder, name) for name in entries_of(folder)]
        else:
            urls = [
                u
                for url in expand_urls(item, allow_incomplete=cfg.allow_incomplete)
                for u in wds.shardlists.expand_urls(url)
            ]
        for url in urls:
            out.urls.append(url)
            if storage.is_url(url):
                folder, name = storage.split(url)
                if (entry := remote_entries(folder).get(name)) is not None:
                    out.entries[url] = entry
                continue
            if "://" in url or url.startswith("pipe:"):
                continue  # streamed by webdataset as named (curl, a command): no index
            folder, name = os.path.split(os.path.abspath(url))
            has_index = os.path.exists(os.path.join(folder, INDEX_FILE))
            if has_index and (entry := _entry_or_none(entries_of, folder, name)) is not None:
                out.entries[url] = entry
    if not out.urls:
        raise FileNotFoundError(f"data.shards={cfg.shards!r} names no shard")
    return out


def _entry_or_none(entries_of: Any, folder: str, name: str) -> Any:
    """The index entry of a shard named by path; None when the folder's index cannot be read
    (an explicit path needs no complete folder) or does not list it."""
    from contract.schema import IncompleteDatasetError

    try:
        return entries_of(folder).get(name)
    except IncompleteDatasetError:
        return None
