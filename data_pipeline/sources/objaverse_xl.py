"""Objaverse-XL through the `objaverse` package (0.1.x, `objaverse.xl`).

Selection: `sources` (github, thingiverse, sketchfab, smithsonian), `file_types` (the annotations'
fileType: glb, obj, stl, fbx, ...), `licenses`, `uids` / `uid_file` (sha256s or fileIdentifiers),
`limit`. uid = the file's sha256, which is how Objaverse-XL identifies an object: stable across
runs, machines and mirrors, and the same file listed by two repositories is one object (the
first fileIdentifier in sorted order is kept). The order is by uid, so `limit` takes an
effectively uniform sample of the selection.

The package keeps everything under one folder (`cache_dir`, default ~/.objaverse):

    github/github.parquet, thingiverse/thingiverse.parquet,     the annotations: fileIdentifier,
    sketchfab/sketchfab.parquet, smithsonian/smithsonian.parquet   source, license, fileType,
                                                                   sha256, metadata
    github/repos/<org>/<repo>/<path in repo>        a cloned repository (save_repo_format="files")
    thingiverse/thing-<thing id>-file-<file id>.stl
    hf-objaverse-v1/glbs/<group>/<sketchfab uid>.glb (+ object-paths.json.gz: Objaverse 1.0)
    smithsonian/objects/<uuid5(fileIdentifier)>.glb

A fileType no importer reads (data_pipeline.formats) is listed with `ObjectSpec.unsupported` set,
so the job quarantines it as unsupported_format without downloading it; `file_types` leaves such
rows out instead. The driver only reads the annotations (the package downloads a missing parquet once; offline,
listing fails at once with a SourceError naming the file); objects are downloaded one at a time
by `fetch`, inside the render actors, through `objaverse.xl.download_objects` (in a child process
killed after `download_timeout_s`), and checked against their sha256. A download that fails, an object gone upstream or a file whose sha256
changed is a Refusal(FETCH_FAILED) for the ledger, never a crash.

`ObjectSpec.path` is the fileIdentifier (the object's URL, what the ledger shows) and
`ObjectSpec.source` is "objaverse_xl/<sub-source>": together with the sha256 they are everything
`fetch` needs, so the source object sent to every actor holds only its config.
Captions: `captions_file` (CSV uid,caption; keyed by sha256 or fileIdentifier) > name and tags
from the annotation's metadata > the file name. (The package blanks the metadata of Sketchfab
rows, so those need the captions file, e.g. Cap3D's, for more than their file name.)
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from contract import storage
from data_pipeline.formats import OBJECT_EXTENSIONS
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.sources.base import ObjectSpec, Source, SourceError, sanitise
from data_pipeline.sources.captions import (
    caption_from_annotation,
    caption_from_name,
    load_captions_csv,
)

SOURCES = ("github", "thingiverse", "sketchfab", "smithsonian")
COLUMNS = ("fileIdentifier", "source", "license", "fileType", "sha256")
NAME = "objaverse_xl"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ObjaverseXLSourceConfig:
    kind: str = NAME
    sources: list[str] = field(default_factory=list)  # subset of SOURCES; [] = all four
    file_types: list[str] = field(default_factory=list)  # fileType values ("glb"); [] = all
    licenses: list[str] = field(default_factory=list)  # license values, any case; [] = all
    uids: list[str] = field(default_factory=list)  # sha256s or fileIdentifiers
    uid_file: str | None = None  # one sha256 or fileIdentifier per line
    limit: int | None = None  # first N of the selection sorted by uid
    cache_dir: str | None = None  # the package's download_dir; None = ~/.objaverse
    annotations_file: str | None = None  # parquet or CSV with COLUMNS, instead of the package's
    captions_file: str | None = None  # CSV uid,caption (uid = sha256, or the fileIdentifier)
    download_timeout_s: float = 900.0  # per download (a GitHub clone); then it is killed

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"source.sources: unknown {unknown} (known: {list(SOURCES)})")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"source.limit must be >= 1 or null, got {self.limit}")
        if self.download_timeout_s <= 0:
            raise ValueError(
                f"source.download_timeout_s must be > 0, got {self.download_timeout_s}"
            )


def _xl() -> Any:
    import objaverse.xl  # imported lazily: only this source needs it (and it imports pandas)

    return objaverse.xl


def normalise_file_type(value: Any) -> str:
    return str(value).strip().lower().removeprefix(".")


class ObjaverseXLSource(Source):
    name = NAME

    def __init__(self, cfg: ObjaverseXLSourceConfig):
        self.cfg = cfg

    @property
    def cache_dir(self) -> str:
        return str(Path(self.cfg.cache_dir or "~/.objaverse").expanduser().resolve())

    @property
    def selected_sources(self) -> list[str]:
        return [s for s in SOURCES if s in self.cfg.sources] if self.cfg.sources else list(SOURCES)

    # -- listing -------------------------------------------------------------------------------
    def load_annotations(self) -> Any:
        """The annotations of the selected sources as one DataFrame (COLUMNS + metadata)."""
        import pandas as pd

        if self.cfg.annotations_file:
            frame = _read_table(Path(self.cfg.annotations_file).expanduser())
        else:
            frames = []
            for name in self.selected_sources:
                where = Path(self.cache_dir) / name / f"{name}.parquet"
                try:
                    frame = _xl().downloaders[name].get_annotations(download_dir=self.cache_dir)
                except (OSError, ValueError, EOFError, ImportError) as exc:  # requests: OSError
                    raise SourceError(
                        f"objaverse_xl: could not load the {name} annotations {where}: {exc}. "
                        "Without network, point source.cache_dir at a folder laid out like "
                        "~/.objaverse (<source>/<source>.parquet), or set source.annotations_file."
                    ) from exc
                frames.append(frame.assign(source=name) if "source" not in frame else frame)
            frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise SourceError(f"objaverse_xl: the annotations lack columns {missing}")
        keep = [*COLUMNS, *(["metadata"] if "metadata" in frame.columns else [])]
        return frame[keep]

    def select(self) -> Any:
        """The selected annotation rows, one per sha256, sorted by it, cut at `limit`."""
        cfg = self.cfg
        frame = self.load_annotations()
        frame = frame[frame["source"].isin(self.selected_sources)]
        if cfg.file_types:
            types = {normalise_file_type(t) for t in cfg.file_types}
            frame = frame[frame["fileType"].map(normalise_file_type).isin(types)]
        if cfg.licenses:
            licenses = {str(x).strip().lower() for x in cfg.licenses}
            frame = frame[
                frame["license"].fillna("").astype(str).str.strip().str.lower().isin(licenses)
            ]
        frame = frame.assign(sha256=frame["sha256"].fillna("").astype(str).str.strip().str.lower())
        wanted = self.wanted_ids()
        if wanted:
            frame = frame[frame["sha256"].isin(wanted) | frame["fileIdentifier"].isin(wanted)]
            found = set(frame["sha256"]) | set(frame["fileIdentifier"])
            absent = sorted(w for w in wanted if w not in found)
            if absent:
                print(
                    f"warning: objaverse_xl: {len(absent)} requested uids are not in the selected "
                    f"annotations, e.g. {absent[:3]}",
                    file=sys.stderr,
                )
        bad = ~frame["sha256"].str.fullmatch(_SHA256.pattern)
        if bad.any():
            print(f"warning: objaverse_xl: skipping {int(bad.sum())} rows without a sha256")
            frame = frame[~bad]
        frame = frame.sort_values(["sha256", "fileIdentifier"], kind="stable")
        unique = frame.drop_duplicates("sha256", keep="first")
        if len(unique) < len(frame):
            print(
                f"objaverse_xl: {len(frame) - len(unique)} rows repeat a file another row lists "
                "(same sha256); each file is rendered once"
            )
        return unique.head(cfg.limit) if cfg.limit else unique

    def wanted_ids(self) -> set[str]:
        """sha256s (lower case) and fileIdentifiers from `uids` and `uid_file`."""
        lines = list(self.cfg.uids)
        if self.cfg.uid_file:
            path = Path(self.cfg.uid_file).expanduser()
            if not path.is_file():
                raise SourceError(f"source.uid_file {path} does not exist")
            lines += path.read_text(encoding="utf-8").splitlines()
        ids = {ln.strip() for ln in lines if ln.strip()}
        return {i.lower() if _SHA256.match(i.lower()) else i for i in ids}

    def list_objects(self) -> Iterator[ObjectSpec]:
        rows = self.select()
        captions = load_captions_csv(self.cfg.captions_file) if self.cfg.captions_file else {}
        metadata = rows["metadata"] if "metadata" in rows.columns else None
        for i, row in enumerate(rows.itertuples(index=False)):
            sha, ident = str(row.sha256), str(row.fileIdentifier)
            caption = (
                captions.get(sha)
                or captions.get(ident)
                or (caption_from_metadata(metadata.iloc[i]) if metadata is not None else "")
                or caption_from_name(Path(urlparse(ident).path).stem or sha)
            )
            yield ObjectSpec(
                uid=sha,
                path=ident,
                caption=caption,
                source=f"{NAME}/{row.source}",
                sha256=sha,
                unsupported=unsupported(row.fileType),
            )

    # -- fetching (in the render actors) -------------------------------------------------------
    def cached_path(self, sub: str, ident: str) -> Path | None:
        """Where the package keeps this object once downloaded (None: not known yet)."""
        cache = Path(self.cache_dir)
        xl = _xl()
        if sub == "github":
            parts = urlparse(ident).path.strip("/").split("/")  # org/repo/blob/<commit>/<path>
            if len(parts) < 5 or parts[2] != "blob":
                return None
            return cache / "github" / "repos" / parts[0] / parts[1] / "/".join(parts[4:])
        if sub == "thingiverse":
            downloader = xl.downloaders["thingiverse"]
            try:
                thing = downloader.get_thing_id_from_file_identifier(ident)
                file_id = downloader.get_file_id_from_file_identifier(ident)
            except IndexError:  # not a Thingiverse fileIdentifier
                return None
            return cache / "thingiverse" / f"thing-{thing}-file-{file_id}.stl"
        if sub == "smithsonian":
            from objaverse.utils import get_uid_from_str

            return cache / "smithsonian" / "objects" / f"{get_uid_from_str(ident)}.glb"
        if sub == "sketchfab":  # the group folder is in object-paths.json.gz; a glob is cheaper
            uid = ident.rstrip("/").split("/")[-1]
            pattern = str(cache / "hf-objaverse-v1" / "glbs" / "*" / f"{glob.escape(uid)}.glb")
            found = sorted(glob.glob(pattern))
            return Path(found[0]) if found else None
        return None

    def fetch(self, spec: ObjectSpec, scratch: Path | None = None) -> Path:
        if spec.unsupported:  # the job quarantines these without fetching; a direct caller too
            raise Refusal(Reason.UNSUPPORTED_FORMAT, spec.path, spec.unsupported)
        sub = spec.source.partition("/")[2]
        ident = spec.path
        local = self.cached_path(sub, ident)
        if local is None or not local.is_file():
            with self._download_lock(sub, ident):  # one clone per GitHub repository at a time
                local = self.cached_path(sub, ident)
                if local is None or not local.is_file():
                    local = self._download(sub, spec)
        if local is None or not local.is_file():
            raise Refusal(
                Reason.FETCH_FAILED,
                ident,
                f"objaverse_xl: {sub} object not downloaded (gone upstream, or the request "
                f"failed) into {self.cache_dir}",
            )
        digest = storage.sha256(local)
        if spec.sha256 and digest != spec.sha256:
            raise Refusal(
                Reason.FETCH_FAILED,
                ident,
                f"objaverse_xl: {local} has sha256 {digest}, the annotations say {spec.sha256} "
                "(the object changed upstream)",
            )
        return local

    def _download(self, sub: str, spec: ObjectSpec) -> Path | None:
        """`objaverse.xl.download_objects` for one object, in a child process in its own session
        that is killed (with the git clones and pools it started) after download_timeout_s:
        a stalled download must not hold a render actor forever."""
        import multiprocessing

        context = multiprocessing.get_context("fork")  # the package forks its own pools too
        receive, send = context.Pipe(duplex=False)
        args = (send, self.cache_dir, sub, spec.path, spec.sha256)
        child = context.Process(target=_download_child, args=args)
        child.start()
        send.close()
        assert child.pid is not None  # started
        session = child.pid  # the child's session and process group (os.setsid)
        try:
            if not receive.poll(self.cfg.download_timeout_s):
                raise Refusal(
                    Reason.FETCH_FAILED,
                    spec.path,
                    f"objaverse_xl: {sub} download exceeded {self.cfg.download_timeout_s:g} s; "
                    "killed",
                )
            status, value = receive.recv()
        except EOFError:
            status, value = "error", f"download process died (exit {child.exitcode})"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(session, signal.SIGKILL)  # the child, its pools and git clones
            child.join()
            receive.close()
        if status != "ok":
            raise Refusal(
                Reason.FETCH_FAILED, spec.path, f"objaverse_xl: {sub} download failed: {value}"
            )
        return Path(value) if value else self.cached_path(sub, spec.path)

    @contextlib.contextmanager
    def _download_lock(self, sub: str, ident: str) -> Iterator[None]:
        """GitHub objects of one repository share its clone: actors on one node take turns.
        Other objects are each fetched by one actor only, so they need no lock."""
        if sub != "github":
            yield
            return
        repo = "/".join(urlparse(ident).path.strip("/").split("/")[:2])
        locks = Path(self.cache_dir) / "github" / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        name = f"{sanitise(repo, 80)}-{hashlib.sha1(repo.encode()).hexdigest()[:8]}.lock"
        fd = os.open(locks / name, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _download_child(send: Any, cache_dir: str, sub: str, ident: str, sha256: str | None) -> None:
    """In the download process: ("ok", local path or None) or ("error", message) on `send`."""
    os.setsid()  # a session of its own, so the parent can kill everything it starts
    import pandas as pd

    row = pd.DataFrame([{"fileIdentifier": ident, "source": sub, "sha256": sha256}])
    try:
        found = _xl().download_objects(
            row, download_dir=cache_dir, processes=1, save_repo_format="files"
        )
        answer: tuple[str, str | None] = ("ok", found.get(ident))
    except Exception as exc:  # requests, urllib, git, fsspec errors: all mean "not fetched"
        answer = ("error", f"{type(exc).__name__}: {exc}")
    send.send(answer)
    send.close()


def unsupported(file_type: Any) -> str | None:
    """Why the pipeline will not render this fileType (data_pipeline.formats), or None."""
    ext = f".{normalise_file_type(file_type)}"
    if ext in OBJECT_EXTENSIONS:
        return None
    return (
        f"Objaverse-XL fileType {normalise_file_type(file_type)!r} is not a 3D format the "
        f"pipeline renders ({' '.join(OBJECT_EXTENSIONS)})"
    )


def caption_from_metadata(value: Any) -> str:
    """ "name, tags" when the annotation's metadata (a dict or its JSON) has them, else ""."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return ""
    return caption_from_annotation(value) if isinstance(value, dict) else ""


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise SourceError(f"source.annotations_file {path} does not exist")
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        return pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as exc:
        raise SourceError(f"source.annotations_file {path}: unreadable ({exc})") from exc
