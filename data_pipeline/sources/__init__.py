"""Where objects come from. A source lists `ObjectSpec`s and fetches one asset at a time.

Registry: `SOURCE_KINDS`, one line per source. `source.kind` in the config (the typed config's
`kind` default; conf/source/<kind>.yaml picks that config) selects the entry, and the entry
builds the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_pipeline.sources.base import ObjectSpec, Source, SourceError
from data_pipeline.sources.builtin import BuiltinSourceConfig, build_builtin_source
from data_pipeline.sources.local import LocalSource, LocalSourceConfig
from data_pipeline.sources.objaverse import ObjaverseSource, ObjaverseSourceConfig
from data_pipeline.sources.objaverse_xl import ObjaverseXLSource, ObjaverseXLSourceConfig

__all__ = [
    "SOURCE_KINDS",
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
    "SourceKind",
    "build_source",
]


@dataclass(frozen=True)
class SourceKind:
    """One registered source: its typed config and how to build the source from that config and
    the job's output folder."""

    config: type[Any]
    build: Callable[[Any, str | Path], Source]

    @property
    def kind(self) -> str:
        """The config's `kind` default: the registry key, conf/source/<kind>.yaml, <kind>_schema."""
        return str(self.config.kind)


SOURCE_KINDS: dict[str, SourceKind] = {
    entry.kind: entry
    for entry in (
        SourceKind(BuiltinSourceConfig, build_builtin_source),
        SourceKind(LocalSourceConfig, lambda cfg, output_dir: LocalSource(cfg)),
        SourceKind(ObjaverseSourceConfig, lambda cfg, output_dir: ObjaverseSource(cfg)),
        SourceKind(ObjaverseXLSourceConfig, lambda cfg, output_dir: ObjaverseXLSource(cfg)),
    )
}


def build_source(cfg: Any, output_dir: str | Path) -> Source:
    """The source object for a typed source config (`kind` picks the registry entry)."""
    kind = getattr(cfg, "kind", None)
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {kind!r} (known: {', '.join(sorted(SOURCE_KINDS))})")
    return SOURCE_KINDS[kind].build(cfg, output_dir)  # a path or a URL: never through Path()
