"""Assets on a local (or mounted) filesystem: a folder searched recursively, or a manifest file.

A folder lists every file except companions (data_pipeline.formats.partition: textures, .mtl,
.bin, caption sidecars, Blender backups, hidden files, and the source's own captions file). A
listed file whose format is not in `extensions` (default: every format the pipeline renders,
data_pipeline.formats) is an `ObjectSpec` with `unsupported` set, which the job quarantines as
`unsupported_format` with its path: no file of the folder is skipped silently. A manifest lists
what it names, checked the same way.

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
from data_pipeline.formats import OBJECT_EXTENSIONS, partition
from data_pipeline.schema import SchemaError, validate_uid
from data_pipeline.sources.base import ObjectSpec, SourceError, sanitise
from data_pipeline.sources.captions import caption_from_name, load_captions_csv, sidecar_caption

DEFAULT_EXTENSIONS = list(OBJECT_EXTENSIONS)


@dataclass
class LocalSourceConfig:
    kind: str = "local"
    root: str | None = None  # folder searched recursively
    manifest: str | None = None  # file listing assets instead (CSV with a path column, or JSONL)
    # formats to render; files of other formats are listed and quarantined (unsupported_format)
    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    captions_file: str | None = None  # CSV uid,caption (Cap3D format)

    def __post_init__(self) -> None:
        if (self.root is None) == (self.manifest is None):
            raise ValueError("source=local needs exactly one of source.root or source.manifest")
        unknown = sorted({_dotted(e) for e in self.extensions} - set(OBJECT_EXTENSIONS))
        if unknown:
            raise ValueError(
                f"source.extensions: {', '.join(unknown)} not a format the pipeline renders "
                f"({' '.join(OBJECT_EXTENSIONS)})"
            )


def _dotted(ext: str) -> str:
    return ext.lower() if ext.startswith(".") else f".{ext.lower()}"


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
        self.extensions = {_dotted(e) for e in cfg.extensions}

    # -- listing -------------------------------------------------------------------------------
    def _rows(self) -> tuple[Path, list[_Row]]:
        if self.cfg.root is not None:
            root = Path(self.cfg.root).expanduser().resolve()
            if not root.is_dir():
                raise SourceError(f"source.root {root} is not a folder")
            captions = self.cfg.captions_file
            own = {Path(captions).expanduser().resolve()} if captions else set()
            files = [p for p in root.rglob("*") if p.is_file() and p not in own]
            listed, _ = partition(root, files)
            return root, [_Row(path=p) for p in sorted(listed)]
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
            yield ObjectSpec(
                uid=uid,
                path=str(row.path),
                caption=caption,
                source=self.name,
                unsupported=self.unsupported(row.path),
            )

    def unsupported(self, path: Path) -> str | None:
        """Why no importer will read this file (its extension), or None if one will."""
        ext = path.suffix.lower()
        if ext in self.extensions:
            return None
        shown = repr(ext) if ext else "a file without an extension"
        if ext in OBJECT_EXTENSIONS:
            return f"{shown} is not in source.extensions ({' '.join(sorted(self.extensions))})"
        return f"{shown} is not a 3D format the pipeline renders ({' '.join(OBJECT_EXTENSIONS)})"

    # -- fetching ------------------------------------------------------------------------------
    def fetch(self, spec: ObjectSpec) -> Path:
        if spec.unsupported:  # the job quarantines these itself; a direct caller gets the same
            raise Refusal(Reason.UNSUPPORTED_FORMAT, spec.path, spec.unsupported)
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
