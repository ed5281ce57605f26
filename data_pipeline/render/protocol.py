"""The render process's protocol (data_pipeline.render.process): one JSON line each way, typed.

The parent (data_pipeline.job.worker's `RenderProcess`, in a Ray actor) writes a `RenderRequest`
line on the child's stdin; the child writes one `Ready` line when it has started, then one
`RenderAnswer` line per request on its private protocol pipe. Both sides build and read these classes only, so a field is named
in one place; a line that is not a valid message raises `ProtocolError`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from data_pipeline.refusals import Refusal


class ProtocolError(ValueError):
    """A protocol line that is not the message it should be."""


def _to_line(message: Any) -> bytes:
    return json.dumps(dataclasses.asdict(message), sort_keys=True).encode() + b"\n"


def _from_line(cls: Any, line: bytes | str) -> Any:
    try:
        raw = json.loads(line)
        if not isinstance(raw, dict):
            raise TypeError(f"a JSON {type(raw).__name__}, not an object")
        return cls(**raw)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        shown = line[:200] if isinstance(line, str) else line[:200].decode(errors="replace")
        raise ProtocolError(f"not a {cls.__name__} line ({exc}): {shown!r}") from exc


@dataclass
class RenderRequest:
    """Render one object and write its samples as one tar at `out`."""

    uid: str
    asset_path: str  # local path (the parent fetched it)
    caption: str
    source: str
    sha256: str | None
    settings: dict[str, Any]  # RenderSettings as a dict (JSON lists stand in for tuples)
    out: str  # the tar to write, inside the worker's work folder

    def to_line(self) -> bytes:
        return _to_line(self)

    @classmethod
    def from_line(cls, line: bytes | str) -> RenderRequest:
        request: RenderRequest = _from_line(cls, line)
        return request


@dataclass
class Ready:
    """The child's first line: it imported the renderer (and warmed it up)."""

    pid: int
    ready: bool = True

    def to_line(self) -> bytes:
        return _to_line(self)

    @classmethod
    def from_line(cls, line: bytes | str) -> Ready:
        ready: Ready = _from_line(cls, line)
        return ready


@dataclass
class RenderAnswer:
    """The outcome of one request: rendered (`ok`), refused (`reason`, an errors.Reason value)
    or failed unexpectedly (`unexpected`: the environment, the config or a bug, not the asset)."""

    ok: bool
    rings: int = 0
    blender_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # distinct RingMeta.notes of its rings
    rings_with_notes: int = 0
    reason: str | None = None
    detail: str = ""
    unexpected: bool = False

    @classmethod
    def refused(cls, refusal: Refusal) -> RenderAnswer:
        return cls(ok=False, reason=refusal.reason.value, detail=refusal.detail)

    @classmethod
    def failed(cls, exc: BaseException) -> RenderAnswer:
        return cls(ok=False, unexpected=True, detail=f"{type(exc).__name__}: {exc}")

    def to_line(self) -> bytes:
        return _to_line(self)

    @classmethod
    def from_line(cls, line: bytes | str) -> RenderAnswer:
        answer: RenderAnswer = _from_line(cls, line)
        return answer
