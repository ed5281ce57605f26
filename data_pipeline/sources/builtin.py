"""The built-in objects: written into the job's output folder, then read as a local folder."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.sources.local import LocalSource, LocalSourceConfig


@dataclass
class BuiltinSourceConfig:
    """Built-in objects, written into OUT/builtin_assets: the three named examples
    (data_pipeline.sources.demo_objects) when count is 0, else the first `count` members of the procedural
    family (data_pipeline.sources.object_family) in `split` ("all", "train" or "heldout"; the split is a
    function of each member's name, so train and held-out never share an object)."""

    kind: str = "builtin"
    count: int = 0
    split: str = "all"
    heldout_fraction: float = 0.1

    def __post_init__(self) -> None:
        from data_pipeline.sources.object_family import SPLITS

        if self.count < 0:
            raise ValueError(f"source.count must be >= 0, got {self.count}")
        if self.split not in SPLITS:
            raise ValueError(f"source.split must be one of {SPLITS}, got {self.split!r}")
        if self.split != "all" and self.count == 0:
            raise ValueError("source.split needs the procedural family: set source.count > 0")
        if not 0.0 <= self.heldout_fraction <= 1.0:
            raise ValueError("source.heldout_fraction must lie in [0, 1]")


def build_builtin_source(cfg: BuiltinSourceConfig, output_dir: str | Path) -> LocalSource:
    """Writes the objects into OUT/builtin_assets (uploaded there when OUT is in object storage,
    so every render node reads them from the same place) and lists them as source "builtin".
    A file already there with the same bytes is left as it is (a finished job run again changes
    no file)."""
    from contract import storage
    from data_pipeline.sources.demo_objects import write_builtin_samples  # the render-core's module

    target = storage.join(output_dir, "builtin_assets")
    with tempfile.TemporaryDirectory(prefix="builtin-") as tmp:
        folder = Path(tmp)
        if cfg.count:
            from data_pipeline.sources.object_family import write_family

            write_family(folder, cfg.count, cfg.split, cfg.heldout_fraction)
        else:
            write_builtin_samples(folder)
        storage.makedirs(target)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            dest = storage.join(target, path.relative_to(folder).as_posix())
            data = path.read_bytes()
            if not (storage.isfile(dest) and storage.read_bytes(dest) == data):
                storage.write_bytes(dest, data)
    return LocalSource(LocalSourceConfig(root=str(target)), name="builtin")
