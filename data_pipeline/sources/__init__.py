"""Where objects come from. A source lists `ObjectSpec`s and fetches one asset at a time.

Registry: `source.kind` in the config picks the class (conf/source/<kind>.yaml).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_pipeline.sources.base import ObjectSpec, Source, SourceError
from data_pipeline.sources.local import LocalSource, LocalSourceConfig
from data_pipeline.sources.objaverse import ObjaverseSource, ObjaverseSourceConfig
from data_pipeline.sources.objaverse_xl import ObjaverseXLSource, ObjaverseXLSourceConfig

__all__ = [
    "BuiltinSourceConfig",
    "LocalSource",
    "LocalSourceConfig",
    "ObjaverseSource",
    "ObjaverseSourceConfig",
    "ObjaverseXLSource",
    "ObjaverseXLSourceConfig",
    "ObjectSpec",
    "Source",
    "SourceError",
    "build_source",
]


@dataclass
class BuiltinSourceConfig:
    """Built-in objects, written into OUT/builtin_assets: the three named examples
    (data_pipeline.samples) when count is 0, else the first `count` members of the procedural
    family (data_pipeline.procedural) in `split` ("all", "train" or "heldout"; the split is a
    function of each member's name, so train and held-out never share an object)."""

    kind: str = "builtin"
    count: int = 0
    split: str = "all"
    heldout_fraction: float = 0.1

    def __post_init__(self) -> None:
        from data_pipeline.procedural import SPLITS

        if self.count < 0:
            raise ValueError(f"source.count must be >= 0, got {self.count}")
        if self.split not in SPLITS:
            raise ValueError(f"source.split must be one of {SPLITS}, got {self.split!r}")
        if self.split != "all" and self.count == 0:
            raise ValueError("source.split needs the procedural family: set source.count > 0")
        if not 0.0 <= self.heldout_fraction <= 1.0:
            raise ValueError("source.heldout_fraction must lie in [0, 1]")


def write_builtin(cfg: BuiltinSourceConfig, output_dir: str | Path) -> str:
    """Write the built-in objects into OUT/builtin_assets (uploaded there when OUT is in object
    storage, so every render node reads them from the same place); returns that folder."""
    from data_pipeline import storage
    from data_pipeline.samples import write_builtin_samples  # the render-core's module

    target = storage.join(output_dir, "builtin_assets")
    remote = storage.is_url(output_dir)
    with tempfile.TemporaryDirectory(prefix="builtin-") as tmp:
        folder = Path(tmp) if remote else Path(target)
        folder.mkdir(parents=True, exist_ok=True)
        if cfg.count:
            from data_pipeline.procedural import write_family

            write_family(folder, cfg.count, cfg.split, cfg.heldout_fraction)
        else:
            write_builtin_samples(folder)
        if remote:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                storage.upload(path, storage.join(target, path.relative_to(folder).as_posix()))
    return target


def build_source(cfg: Any, output_dir: str | Path) -> Source:
    """The source object for a typed source config (`kind` picks the class)."""
    kind = getattr(cfg, "kind", None)
    if kind == "local":
        return LocalSource(cfg)
    if kind == "objaverse":
        return ObjaverseSource(cfg)
    if kind == "objaverse_xl":
        return ObjaverseXLSource(cfg)
    if kind == "builtin":
        return LocalSource(LocalSourceConfig(root=write_builtin(cfg, output_dir)), name="builtin")
    raise ValueError(
        f"unknown source kind {kind!r} (known: builtin, local, objaverse, objaverse_xl)"
    )
