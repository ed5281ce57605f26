"""Atomic file writes: a file appears under its final name only once it is complete.

The bytes go to a hidden temporary file in the same folder (`.{name}.tmp-{pid}`, so the rename
never crosses a filesystem), are fsynced, and the file is then `os.replace`d onto its final name.
A crash or an exception at any point leaves the old file (or none) and no temporary behind, except
after a SIGKILL: readers ignore dot-names, and a writer that lists a folder it owns can remove
`.*.tmp-*` leftovers (data_pipeline.job.ledger does). Every module that writes a file a reader or a
resumed run may see uses this one helper; folders are renamed into place by their own writers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A temporary file beside `path` to write into; when the block ends without an exception it
    is fsynced and renamed to `path`, else removed (for streamed writes, e.g. a shard)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call `write(f)` on a temporary file beside `path`, fsync it, and rename it to `path`.
    E.g. `atomic_write(path, lambda f: torch.save(obj, f))`; what `write` returns is ignored."""
    with atomic_open(path) as f:
        write(f)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))
