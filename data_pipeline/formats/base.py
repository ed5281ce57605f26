"""Small helpers the format checks share: reading a file's head and tail, safe file tests."""

from __future__ import annotations

import os
from pathlib import Path

from data_pipeline.refusals import Reason, Refusal


def read_head(path: Path, size: int) -> bytes:
    """The first `size` bytes (fewer if the file is shorter)."""
    with open(path, "rb") as handle:
        return handle.read(size)


def read_tail(path: Path, size: int) -> bytes:
    """The last `size` bytes (the whole file if it is shorter)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(handle.tell() - size, 0))
        return handle.read()


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the filesystem: nothing can be there
        return False


def is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def undecodable(path: Path, detail: str) -> Refusal:
    return Refusal(Reason.UNDECODABLE, str(path), detail)


def unsupported(path: Path, detail: str) -> Refusal:
    return Refusal(Reason.UNSUPPORTED_FORMAT, str(path), detail)
