"""Captions: a Cap3D-style CSV file (uid,caption per line), sidecar text files, fallbacks."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from contract import storage
from data_pipeline.sources.base import SourceError


def load_captions_csv(path: str | os.PathLike[str]) -> dict[str, str]:
    """uid -> caption from a CSV of `uid,caption` rows (Cap3D's format; quoted commas allowed),
    a local file or a URL (contract.storage).

    A first row `uid,caption` is taken as a header. Later rows override earlier ones.
    """
    try:
        if not storage.isfile(path):
            raise SourceError(f"captions file {path} does not exist")
        text = storage.read_bytes(path).decode("utf-8")
    except OSError as exc:
        raise SourceError(f"captions file {path}: cannot read it ({exc})") from exc
    out: dict[str, str] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row or not "".join(row).strip():
            continue
        if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["uid", "caption"]:
            continue
        if len(row) < 2:
            raise SourceError(f"captions file {path}, line {lineno}: expected uid,caption")
        out[row[0].strip()] = ",".join(row[1:]).strip()
    return out


def sidecar_caption(asset: Path) -> str | None:
    """Caption from `<stem>.txt` beside the asset, if present and not empty."""
    sidecar = asset.with_suffix(".txt")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        return " ".join(text.split()) or None
    return None


def caption_from_name(name: str) -> str:
    """A readable caption from a file stem: "stanford_bunny" -> "stanford bunny"."""
    words = name.replace("_", " ").replace("-", " ").replace(".", " ").split()
    return " ".join(words) or name


def caption_from_annotation(annotation: dict) -> str:
    """Objaverse (Sketchfab) metadata -> "name, tag1, tag2"; used when there is no Cap3D caption."""
    name = str(annotation.get("name") or "").strip()
    tags = [
        str(t.get("name", "")).strip() for t in annotation.get("tags") or [] if isinstance(t, dict)
    ]
    parts = [name] + [t for t in tags if t and t.lower() != name.lower()]
    return ", ".join(p for p in parts if p)
