"""Where objects come from. A source lists `ObjectSpec`s and fetches one asset at a time.

Registry: `source.kind` in the config picks the class (conf/source/<kind>.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_pipeline.sources.base import ObjectSpec, Source, SourceError
from data_pipeline.sources.local import LocalSource, LocalSourceConfig
from data_pipeline.sources.objaverse import ObjaverseSource, ObjaverseSourceConfig

__all__ = [
    "BuiltinSourceConfig",
    "LocalSource",
    "LocalSourceConfig",
    "ObjaverseSource",
    "ObjaverseSourceConfig",
    "ObjectSpec",
    "Source",
    "SourceError",
    "build_source",
]


@dataclass
class BuiltinSourceConfig:
    """The built-in example objects (data_pipeline.samples), written into OUT/builtin_assets."""

    kind: str = "builtin"


def build_source(cfg: Any, output_dir: str | Path) -> Source:
    """The source object for a typed source config (`kind` picks the class)."""
    kind = getattr(cfg, "kind", None)
    if kind == "local":
        return LocalSource(cfg)
    if kind == "objaverse":
        return ObjaverseSource(cfg)
    if kind == "builtin":
        from data_pipeline.samples import write_builtin_samples  # the render-core's module

        folder = Path(output_dir) / "builtin_assets"
        folder.mkdir(parents=True, exist_ok=True)
        write_builtin_samples(folder)
        return LocalSource(LocalSourceConfig(root=str(folder)), name="builtin")
    raise ValueError(f"unknown source kind {kind!r} (known: builtin, local, objaverse)")
