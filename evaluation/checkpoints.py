"""Loading the model to evaluate from what `checkpoint=` points at (local paths only), as an
`ImageDreamPipeline`:

- a pipeline folder (`model_index.json`: what `make train` exports, or what
  `python -m training.released to-pipeline` writes from a released checkpoint);
- a training run folder: its final export, `<run_dir>/export`;
- a released checkpoint file (.pt / .ckpt / .safetensors), through
  training.released.released_to_pipeline around the `original.*` model/controller configs and
  encoder folders, with the same checks as `python -m training.released to-pipeline`.
"""

from __future__ import annotations

from pathlib import Path

from evaluation.config import OriginalCheckpointConfig
from training.pipeline import ImageDreamPipeline
from training.released import released_to_pipeline
from training.run_layout import EXPORT_DIR, CheckpointFolder, RunLayout

CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".safetensors", ".pth")
INDEX = "model_index.json"


def load_pipeline(checkpoint: str | Path, original: OriginalCheckpointConfig) -> ImageDreamPipeline:
    path = Path(checkpoint).expanduser()
    if path.is_dir() and (path / INDEX).is_file():
        return ImageDreamPipeline.from_pretrained(path)
    export = RunLayout(path).export
    if path.is_dir() and (export / INDEX).is_file():
        return ImageDreamPipeline.from_pretrained(export)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return released_to_pipeline(
            path,
            original.controller,
            original.sd21_path,
            original.image_encoder_path,
            original.model,
            original.open_clip_checkpoint,
        )
    if path.is_dir() and CheckpointFolder(path).trainer.is_file():
        raise ValueError(
            f"{path} is a DeepSpeed training checkpoint (optimiser state included); evaluate the "
            f"run's export instead (<run_dir>/export, written at the end of training)"
        )
    raise FileNotFoundError(
        f"checkpoint {path}: expected a pipeline folder (with {INDEX}), a run folder holding "
        f"export/, or a released checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)})"
    )


def checkpoint_label(checkpoint: str | Path) -> str:
    """A short name for tables and plots: the run folder's name for <run>/export."""
    path = Path(checkpoint)
    if path.name == EXPORT_DIR and path.parent.name:
        return path.parent.name
    return path.stem if path.is_file() else path.name


def training_shards_of(checkpoint: str | Path) -> list[str]:
    """The `data.shards` a run was trained on, read from its config.yaml (<run_dir>/config.yaml
    beside export/); empty when the checkpoint is not inside a run folder."""
    from omegaconf import OmegaConf

    path = Path(checkpoint).expanduser()
    for run_dir in (path, path.parent):
        config = RunLayout(run_dir).config
        if path.is_dir() and config.is_file():
            shards = OmegaConf.select(OmegaConf.load(config), "data.shards", default=None)
            return [str(shards)] if shards else []
    return []


def loss_curve_of(checkpoint: str | Path) -> list[tuple[int, float]]:
    """(step, train/loss) of the run that made the checkpoint, from <run_dir>/metrics.jsonl
    beside export/; empty when it is not inside a run folder."""
    import json

    path = Path(checkpoint).expanduser()
    for run_dir in (path, path.parent):
        metrics = RunLayout(run_dir).metrics
        if path.is_dir() and metrics.is_file():
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            return [(int(r["step"]), float(r["train/loss"])) for r in rows if "train/loss" in r]
    return []
