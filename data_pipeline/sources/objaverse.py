"""Objaverse 1.0 through the `objaverse` package (0.1.x): uid lists, LVIS categories, a uid file.

The package keeps its cache under `objaverse._VERSIONED_PATH` (default ~/.objaverse/hf-objaverse-v1)
and downloads what is missing from huggingface.co. `cache_dir` points that root elsewhere, e.g. at
a local copy laid out like the real cache:

    <cache_dir>/object-paths.json.gz          uid -> "glbs/<group>/<uid>.glb"
    <cache_dir>/glbs/<group>/<uid>.glb
    <cache_dir>/metadata/<group>.json.gz      uid -> Sketchfab metadata (name, tags, ...)
    <cache_dir>/lvis-annotations.json.gz      LVIS category -> [uid, ...]

Without network and without such a copy, listing fails at once with a SourceError naming the file
it could not fetch; a single object that cannot be downloaded is a Refusal(FETCH_FAILED).
Captions: `captions_file` (Cap3D CSV uid,caption) first, else "name, tag, tag" from the metadata.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from contract.schema import SchemaError, validate_uid
from data_pipeline.refusals import Reason, Refusal
from data_pipeline.sources.base import ObjectSpec, Source, SourceError
from data_pipeline.sources.captions import caption_from_annotation, load_captions_csv

T = TypeVar("T")


@dataclass
class ObjaverseSourceConfig:
    kind: str = "objaverse"
    uids: list[str] = field(default_factory=list)
    uid_file: str | None = None  # one uid per line
    lvis_categories: list[str] = field(default_factory=list)
    limit: int | None = None  # first N of the sorted selection
    cache_dir: str | None = None  # objaverse._VERSIONED_PATH; None = the package default
    download_processes: int = 1  # for the optional batch prefetch in the driver
    captions_file: str | None = None  # Cap3D CSV uid,caption

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"source.limit must be >= 1 or null, got {self.limit}")


def _objaverse() -> Any:
    import objaverse  # imported lazily: only this source needs it

    return objaverse


class ObjaverseSource(Source):
    name = ObjaverseSourceConfig.kind  # recorded in rings and the ledger: the registry key

    def __init__(self, cfg: ObjaverseSourceConfig):
        self.cfg = cfg

    @property
    def cache_dir(self) -> str:
        if self.cfg.cache_dir:
            return str(Path(self.cfg.cache_dir).expanduser().resolve())
        return str(_objaverse()._VERSIONED_PATH)

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run an objaverse loader with our cache root; network failures -> SourceError."""
        objaverse = _objaverse()
        objaverse._VERSIONED_PATH = self.cache_dir  # read by the package at call time
        try:
            return fn(*args)
        except (OSError, ValueError, EOFError) as exc:  # URLError is an OSError
            raise SourceError(
                f"objaverse: could not load {what} (cache root {self.cache_dir}): {exc}. "
                "Without network, point source.cache_dir at a folder laid out like the objaverse "
                "cache (object-paths.json.gz, glbs/, metadata/, lvis-annotations.json.gz)."
            ) from exc

    # -- listing -------------------------------------------------------------------------------
    def select_uids(self) -> list[str]:
        cfg = self.cfg
        objaverse = _objaverse()
        chosen: set[str] = {u.strip() for u in cfg.uids if u.strip()}
        if cfg.uid_file:
            path = Path(cfg.uid_file).expanduser()
            if not path.is_file():
                raise SourceError(f"source.uid_file {path} does not exist")
            chosen |= {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}
        if cfg.lvis_categories:
            lvis = self._call("lvis-annotations.json.gz", objaverse.load_lvis_annotations)
            unknown = [c for c in cfg.lvis_categories if c not in lvis]
            if unknown:
                raise SourceError(f"objaverse: unknown LVIS categories {unknown}")
            for cat in cfg.lvis_categories:
                chosen |= set(lvis[cat])
        if not (cfg.uids or cfg.uid_file or cfg.lvis_categories):
            chosen = set(self._call("object-paths.json.gz", objaverse.load_uids))
        uids = sorted(u.removesuffix(".glb") for u in chosen)
        return uids[: cfg.limit] if cfg.limit else uids

    def list_objects(self) -> Iterator[ObjectSpec]:
        objaverse = _objaverse()
        uids = self.select_uids()
        paths = self._call("object-paths.json.gz", objaverse._load_object_paths)
        captions = load_captions_csv(self.cfg.captions_file) if self.cfg.captions_file else {}
        need_meta = [u for u in uids if u not in captions and u in paths]
        annotations = (
            self._call("metadata/*.json.gz", objaverse.load_annotations, need_meta)
            if need_meta
            else {}
        )
        for uid in uids:
            try:
                validate_uid(uid)
            except SchemaError as exc:
                raise SourceError(f"objaverse: {exc}") from exc
            caption = captions.get(uid) or caption_from_annotation(annotations.get(uid, {})) or uid
            rel = paths.get(uid, f"glbs/unknown/{uid}.glb")
            yield ObjectSpec(
                uid=uid, path=os.path.join(self.cache_dir, rel), caption=caption, source=self.name
            )

    # -- fetching ------------------------------------------------------------------------------
    def prefetch(self, specs: list[ObjectSpec]) -> None:
        """Batch download with `download_processes`; errors are left to per-object fetch."""
        missing = [s.uid for s in specs if not os.path.isfile(s.path)]
        if missing and self.cfg.download_processes > 1:
            # a failed batch is not an error here: fetch() retries each object and records it
            with contextlib.suppress(SourceError):
                self._call(
                    "objects", _objaverse().load_objects, missing, self.cfg.download_processes
                )

    def fetch(self, spec: ObjectSpec, scratch: Path | None = None) -> Path:
        if os.path.isfile(spec.path):
            return Path(spec.path)
        objaverse = _objaverse()
        objaverse._VERSIONED_PATH = self.cache_dir
        try:
            found = objaverse.load_objects([spec.uid], download_processes=1)
        except Exception as exc:  # URLError, HTTPError, OSError, ...: all mean "not fetched"
            raise Refusal(
                Reason.FETCH_FAILED, spec.path, f"objaverse download failed: {exc}"
            ) from exc
        local = found.get(spec.uid)
        if not local or not os.path.isfile(local):
            raise Refusal(
                Reason.FETCH_FAILED, spec.path, f"uid {spec.uid} is not in object-paths.json.gz"
            )
        return Path(local)
