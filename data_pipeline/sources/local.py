"""Assets on a local (or mounted) filesystem: a folder searched recursively, or a manifest file.

A folder lists every file except companions (data_pipeline.formats.partition: textures, .mtl,
.bin, caption sidecars, Blender backups, hidden files, and the source's own captions file). A
listed file whose format is not in `extensions` (default: every format the pipeline renders,
data_pipeline.formats) is an `ObjectSpec` with `unsupported` set, which the job quarantines as
`unsupported_format` with its path: no file of the folder is skipped silently. A manifest lists
what it names, checked the same way.

`root` and `manifest` may be URLs (s3://bucket/objects, gs://..., contract.storage): the
folder is listed in object storage and each render actor downloads, into its own local scratch,
the object and the companions found in the object's folder and below (an .obj's .mtl and
textures, a .gltf's .bin), so no node needs a file system another node sees. A manifest in object
storage names objects relative to its own folder, or by full URL.

uid = sanitised file stem + "-" + 10 hex of sha1(relative path): readable, stable across runs and
machines (it does not depend on where the folder is mounted), and unique within the folder.
Caption: captions file (uid,caption CSV) > sidecar `<stem>.txt` > manifest column > file name.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import posixpath
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath

from contract import storage
from contract.schema import SchemaError, validate_uid
from data_pipeline.formats import CAPTION_SIDECAR, OBJECT_EXTENSIONS, partition
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.sources.base import ObjectSpec, Source, SourceError, sanitise
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
    path: Path | str  # a local path, or a URL (a source in object storage)
    uid: str | None = None
    caption: str | None = None


class LocalSource(Source):
    """A folder or a manifest of local asset files."""

    def __init__(self, cfg: LocalSourceConfig, name: str = "local"):
        self.cfg = cfg
        self.name = name
        self.extensions = {_dotted(e) for e in cfg.extensions}

    # -- listing -------------------------------------------------------------------------------
    def _rows(self) -> tuple[Path | str, list[_Row]]:
        if self.cfg.root is not None and storage.is_url(self.cfg.root):
            return self._url_rows(self.cfg.root.rstrip("/"))
        if self.cfg.manifest is not None and storage.is_url(self.cfg.manifest):
            manifest_url = self.cfg.manifest
            if not storage.isfile(manifest_url):
                raise SourceError(f"source.manifest {manifest_url} does not exist")
            return storage.split(manifest_url)[0], read_manifest(manifest_url)
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

    def _url_rows(self, root: str) -> tuple[str, list[_Row]]:
        """The rows of a folder in object storage; captions from sidecars (read here, they are
        small) go into the rows."""
        try:
            if not storage.isdir(root):
                raise SourceError(f"source.root {root} is not a folder")
            own = {self.cfg.captions_file.rstrip("/")} if self.cfg.captions_file else set()
            urls = [u for u in storage.find(root) if u not in own]
        except OSError as exc:
            raise SourceError(f"source.root {root}: cannot list it ({exc})") from exc
        listed, companions = _partition_urls(root, urls)
        sidecars = {c for c in companions if c.endswith(CAPTION_SIDECAR)}
        wanted = {url: _sidecar_of(url) for url in listed}
        try:  # fetched concurrently: one request each would take hours at a million objects
            texts = storage.read_many(sorted(s for s in wanted.values() if s in sidecars))
        except OSError as exc:
            raise SourceError(f"source.root {root}: cannot read caption sidecars ({exc})") from exc
        rows = []
        for url, sidecar in wanted.items():
            text = texts[sidecar].decode("utf-8", errors="replace") if sidecar in texts else ""
            rows.append(_Row(path=url, caption=" ".join(text.split()) or None))
        return root, rows

    def list_objects(self) -> Iterator[ObjectSpec]:
        root, rows = self._rows()
        captions = load_captions_csv(self.cfg.captions_file) if self.cfg.captions_file else {}
        for row in rows:
            rel = _relative(row.path, root)
            uid = row.uid or local_uid(rel)
            try:
                validate_uid(uid)
            except SchemaError as exc:
                raise SourceError(f"{row.path}: {exc}") from exc
            name = PurePosixPath(str(row.path)).stem
            path = row.path  # a URL row carries its sidecar caption already
            caption = (
                captions.get(uid)
                or (sidecar_caption(path) if isinstance(path, Path) and path.is_file() else None)
                or row.caption
                or caption_from_name(name)
            )
            yield ObjectSpec(
                uid=uid,
                path=str(row.path),
                caption=caption,
                source=self.name,
                unsupported=self.unsupported(PurePosixPath(str(row.path))),
            )

    def unsupported(self, path: PurePath) -> str | None:
        """Why no importer will read this file (its extension), or None if one will."""
        ext = path.suffix.lower()
        if ext in self.extensions:
            return None
        shown = repr(ext) if ext else "a file without an extension"
        if ext in OBJECT_EXTENSIONS:
            return f"{shown} is not in source.extensions ({' '.join(sorted(self.extensions))})"
        return f"{shown} is not a 3D format the pipeline renders ({' '.join(OBJECT_EXTENSIONS)})"

    # -- fetching ------------------------------------------------------------------------------
    def fetch(self, spec: ObjectSpec, scratch: Path | None = None) -> Path:
        if spec.unsupported:  # the job quarantines these itself; a direct caller gets the same
            raise Refusal(Reason.UNSUPPORTED_FORMAT, spec.path, spec.unsupported)
        if storage.is_url(spec.path):
            return download_with_companions(spec, scratch)
        path = Path(spec.path)
        if not path.is_file():
            raise Refusal(Reason.FETCH_FAILED, spec.path, "file does not exist")
        if not os.access(path, os.R_OK):
            raise Refusal(Reason.FETCH_FAILED, spec.path, "file is not readable")
        return path


def read_manifest(path: Path | str) -> list[_Row]:
    """Rows of a manifest: JSONL ({"path", "uid"?, "caption"?} per line), a CSV with a header
    naming a `path` column (optional `uid`, `caption`), or one path per line.

    Relative paths are relative to the manifest's folder; a manifest in object storage may also
    name objects by URL.
    """
    remote = storage.is_url(path)
    text = storage.read_bytes(path).decode("utf-8")

    def resolve(p: str) -> Path | str:
        p = p.strip()
        if remote:  # relative to the manifest's folder; "./" and "../" resolved as on disk
            if storage.is_url(p):
                return p
            return storage.join(storage.split(path)[0], posixpath.normpath(p))
        q = Path(p).expanduser()
        return (q if q.is_absolute() else Path(path).parent / q).resolve()

    rows: list[_Row] = []
    if PurePosixPath(str(path)).suffix.lower() in {".jsonl", ".ndjson"}:
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


def _relative(path: Path | str, root: Path | str) -> str:
    """`path` relative to the source root (posix), or whole when it lies outside (a manifest
    entry elsewhere)."""
    if isinstance(path, Path) and isinstance(root, Path):
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return path.as_posix()
    prefix = f"{str(root).rstrip('/')}/"
    text = str(path)
    return text[len(prefix) :] if text.startswith(prefix) else text


def _partition_urls(root: str, urls: list[str]) -> tuple[list[str], list[str]]:
    """`formats.partition` for URLs under `root`: (objects to list, companions), as URLs."""
    base = PurePosixPath("/")
    by_rel = {str(base / _relative(u, root)): u for u in urls}
    paths = [Path(r) for r in by_rel]  # names only: partition never touches the disk
    listed, companions = partition(Path(base), paths)
    return sorted(by_rel[str(p)] for p in listed), sorted(by_rel[str(p)] for p in companions)


def _sidecar_of(url: str) -> str:
    folder, name = storage.split(url)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return storage.join(folder, stem + CAPTION_SIDECAR)


_FOLDER_CACHE: OrderedDict[str, list[str]] = OrderedDict()  # per process: folder -> companions
_FOLDER_CACHE_SIZE = 256


def folder_companions(folder: str) -> list[str]:
    """The companions an object directly in `folder` (a URL) takes along: those in the folder
    itself and in its subfolders that hold no object of their own (e.g. textures/), without
    caption sidecars and hidden files. One recursive listing per folder, cached per process
    (a render actor fetches many objects of one folder in a row)."""
    if folder in _FOLDER_CACHE:
        _FOLDER_CACHE.move_to_end(folder)
        return _FOLDER_CACHE[folder]
    listed, companions = _partition_urls(folder, storage.find(folder))
    owned = {PurePosixPath(_relative(u, folder)).parent for u in listed}  # folders with objects

    def belongs(url: str) -> bool:
        rel = PurePosixPath(_relative(url, folder))
        if url.endswith(CAPTION_SIDECAR) or any(p.startswith(".") for p in rel.parts):
            return False
        # its folder chain below `folder` must not reach a folder that holds another object
        chain = [rel.parents[i] for i in range(len(rel.parents) - 1)]
        return not any(c in owned for c in chain if c != PurePosixPath("."))

    found = [c for c in companions if belongs(c)]
    _FOLDER_CACHE[folder] = found
    while len(_FOLDER_CACHE) > _FOLDER_CACHE_SIZE:
        _FOLDER_CACHE.popitem(last=False)
    return found


def download_with_companions(spec: ObjectSpec, scratch: Path | None) -> Path:
    """Download an object in object storage and its companions (`folder_companions`: textures,
    .mtl, .bin beside it or in texture folders below it) into `scratch`/<uid>/, keeping their
    layout; returns the local object path. Companions in a parent folder ("../tex.png") are not
    fetched: an object that needs them renders with a missing-texture note."""
    if scratch is None:
        raise Refusal(Reason.FETCH_FAILED, spec.path, "an object in object storage needs scratch")
    folder, name = storage.split(spec.path)
    target = scratch / spec.uid
    try:
        if not storage.isfile(spec.path):
            raise Refusal(Reason.FETCH_FAILED, spec.path, "object does not exist")
        for url in [spec.path, *folder_companions(folder)]:
            storage.download(url, target / _relative(url, folder))
    except OSError as exc:
        raise Refusal(Reason.FETCH_FAILED, spec.path, f"download failed: {exc}") from exc
    return target / name
