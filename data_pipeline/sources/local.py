"""Assets on a local (or mounted) filesystem: a folder searched recursively, or a manifest file.

uid = sanitised file stem + "-" + 10 hex of sha1(relative path): readable, stable across runs and
machines (it does not depend on where the folder is mounted), and unique within the folder.
Caption: captions file (uid,caption CSV) > sidecar `<stem>.txt` > manifest column > file name.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.errors import Reason, Refusal
from data_pipeline.schema import SchemaError, validate_uid
from data_pipeline.sources.base import ObjectSpec, SourceError, sanitise
from data_pipeline.sources.captions import caption_from_name, load_captions_csv, sidecar_caption

DEFAULT_EXTENSIONS = [".glb", ".gltf", ".obj", ".ply", ".stl"]


@dataclass
class LocalSourceConfig:
    kind: str = "local"
    root: str | None = None  # folder searched recursively
    manifest: str | None = None  # file listing assets instead (CSV with a path column, or JSONL)
    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    captions_file: str | None = None  # CSV uid,caption (Cap3D format)

    def __post_init__(self) -> None:
        if (self.root is None) == (self.manifest is None):
            raise ValueError("source=local needs exactly one of source.root or source.manifest")


def local_uid(relative_path: str) -> str:
    """Stable uid of an asset from its path relative to the source root (posix separators)."""
    rel = Path(relative_path).as_posix()
    stem = sanitise(Path(rel).stem, max_len=64)
    return f"{stem}-{hashlib.sha1(rel.encode('utf-8')).hexdigest()[:10]}"


@dataclass
class _Row:
    path: Path
    uid: str | None = None
    caption: str | None = None


class LocalSource:
    """A folder or a manifest of local asset files."""

    def __init__(self, cfg: LocalSourceConfig, name: str = "local"):
        self.cfg = cfg
        self.name = name
        self.extensions = {
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in cfg.extensions
        }

    # -- listing -------------------------------------------------------------------------------
    def _rows(self) -> tuple[Path, list[_Row]]:
        if self.cfg.root is not None:
            root = Path(self.cfg.root).expanduser().resolve()
            if not root.is_dir():
                raise SourceError(f"source.root {root} is not a folder")
            files = sorted(
                p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in self.extensions
            )
            return root, [_Row(path=p) for p in files]
        manifest = Path(str(self.cfg.manifest)).expanduser().resolve()
        if not manifest.is_file():
            raise SourceError(f"source.manifest {manifest} does not exist")
        return manifest.parent, read_manifest(manifest)

    def list_objects(self) -> Iterator[ObjectSpec]:
        root, rows = self._rows()
        captions = load_captions_csv(self.cfg.captions_file) if self.cfg.captions_file else {}
        for row in rows:
            try:
                rel = row.path.relative_to(root).as_posix()
            except ValueError:  # manifest entry outside the manifest's folder
                rel = row.path.as_posix()
            uid = row.uid or local_uid(rel)
            try:
                validate_uid(uid)
            except SchemaError as exc:
                raise SourceError(f"{row.path}: {exc}") from exc
            caption = (
                captions.get(uid)
                or (sidecar_caption(row.path) if row.path.is_file() else None)
                or row.caption
                or caption_from_name(row.path.stem)
            )
            yield ObjectSpec(uid=uid, path=str(row.path), caption=caption, source=self.name)

    # -- fetching ------------------------------------------------------------------------------
    def fetch(self, spec: ObjectSpec) -> Path:
        path = Path(spec.path)
        if not path.is_file():
            raise Refusal(Reason.FETCH_FAILED, spec.path, "file does not exist")
        if not os.access(path, os.R_OK):
            raise Refusal(Reason.FETCH_FAILED, spec.path, "file is not readable")
        return path


def read_manifest(path: Path) -> list[_Row]:
    """Rows of a manifest: JSONL ({"path", "uid"?, "caption"?} per line), a CSV with a header
    naming a `path` column (optional `uid`, `caption`), or one path per line.

    Relative paths are relative to the manifest's folder.
    """
    base = path.parent
    text = path.read_text(encoding="utf-8")

    def resolve(p: str) -> Path:
        q = Path(p.strip()).expanduser()
        return (q if q.is_absolute() else base / q).resolve()

    rows: list[_Row] = []
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                rows.append(_Row(resolve(item["path"]), item.get("uid"), item.get("caption")))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SourceError(f"manifest {path}, line {lineno}: {exc!r}") from exc
        return rows
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and "path" in [c.strip().lower() for c in next(csv.reader([lines[0]]))]:
        for item in csv.DictReader(lines):
            item = {k.strip().lower(): (v or "").strip() for k, v in item.items() if k}
            rows.append(
                _Row(resolve(item["path"]), item.get("uid") or None, item.get("caption") or None)
            )
        return rows
    return [_Row(resolve(ln)) for ln in lines]
