"""What every source hands the job: `ObjectSpec`s, and a `fetch` that makes one object local."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class SourceError(RuntimeError):
    """The source as a whole cannot be listed (bad config, missing index, no network).

    Per-object problems are `Refusal(Reason.FETCH_FAILED, ...)` instead and go to the ledger.
    """


@dataclass(frozen=True)
class ObjectSpec:
    """One object to render. `path` is where the asset is (or will be, once fetched)."""

    uid: str  # matches schema.validate_uid
    path: str
    caption: str
    source: str  # "local", "builtin", "objaverse"
    sha256: str | None = None  # of the asset file, when the source knows it
    # Set when the source already knows no importer reads this file (its format): the job
    # quarantines it as UNSUPPORTED_FORMAT with this detail without rendering it.
    unsupported: str | None = None


class Source(Protocol):
    """What the job calls. Our sources subclass it, so they inherit the default `prefetch`."""

    name: str

    def list_objects(self) -> Iterator[ObjectSpec]:
        """Every object, in a deterministic order; raises SourceError if the listing fails."""
        ...

    def prefetch(self, specs: list[ObjectSpec]) -> None:
        """Called once by the driver with the objects about to render, before they fan out (a
        source may batch-download them); `fetch` must still work without it. Default: nothing
        to prefetch."""
        return None

    def fetch(self, spec: ObjectSpec, scratch: Path | None = None) -> Path:
        """Local path of the asset (downloading it if needed); raises Refusal(FETCH_FAILED).
        `scratch`: a local folder the caller removes after rendering, for sources whose
        downloads are not kept in a cache of their own (objects in object storage)."""
        ...


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitise(text: str, max_len: int = 64) -> str:
    """`text` reduced to [A-Za-z0-9_-] (runs of anything else become "-"), never empty."""
    out = _UNSAFE.sub("-", text).strip("-")[:max_len].strip("-")
    return out or "asset"
