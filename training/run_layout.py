"""THE run folder: every name training writes below `run_dir`, spelled once.

    <run_dir>/                     trainer `run_dir=` (default runs/${name})
      config.yaml                  the resolved config (training.checkpoint.write_run_config)
      metrics.jsonl                one JSON line per logged step (training.tracking)
      wandb_run_id.txt             the W&B run id, kept for resumes (training.tracking)
      wandb/                       W&B's own files (offline-run-*/ when offline)
      samples/                     sample grids as PNG (training.tracking)
      checkpoints/
        step_00001000/             one complete checkpoint (training.checkpoint)
          <DeepSpeed's files>      model, optimiser and LR scheduler (training.engine)
          trainer.pt               what every rank shares: step, format, EMA (rank 0 writes)
          rank00000.pt             per rank: RNG states and the data stream position
          config.yaml              the resolved config of the run
        latest                     name of the newest complete checkpoint (a convenience)
      export/                      the final model, an ImageDreamPipeline folder

Names starting with a dot are a writer's temporaries (staging, trash); readers ignore them. These
names are an on-disk contract (docs/CONTRACTS.md): evaluation finds a run's export, config and
metrics by them, and run folders written by earlier versions must keep resuming. Only paths live
here; what goes inside the files belongs to their writers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"  # in the run folder and in every checkpoint
METRICS_FILE = "metrics.jsonl"
RUN_ID_FILE = "wandb_run_id.txt"
WANDB_DIR = "wandb"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
EXPORT_DIR = "export"
TRAINER_FILE = "trainer.pt"  # its presence marks a folder as a training checkpoint
_TAG_RE = re.compile(r"^step_(\d{8})$")


def checkpoint_tag(step: int) -> str:
    """The name of the checkpoint of `step`: step_00001000."""
    return f"step_{step:08d}"


def tag_step(name: str) -> int | None:
    """The step a checkpoint folder name stands for; None for any other name."""
    m = _TAG_RE.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class CheckpointFolder:
    """The files training.checkpoint writes into one step_XXXXXXXX folder (or its staging copy),
    beside DeepSpeed's own."""

    path: Path

    @property
    def trainer(self) -> Path:
        return self.path / TRAINER_FILE

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    def rank(self, rank: int) -> Path:
        return self.path / f"rank{rank:05d}.pt"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (nothing is created here)."""

    run_dir: Path

    @property
    def config(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def wandb_run_id(self) -> Path:
        return self.run_dir / RUN_ID_FILE

    @property
    def wandb(self) -> Path:
        return self.run_dir / WANDB_DIR

    @property
    def samples(self) -> Path:
        return self.run_dir / SAMPLES_DIR

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / CHECKPOINTS_DIR

    @property
    def latest(self) -> Path:
        return self.checkpoints / LATEST_FILE

    @property
    def export(self) -> Path:
        return self.run_dir / EXPORT_DIR

    def checkpoint(self, step: int) -> CheckpointFolder:
        return CheckpointFolder(self.checkpoints / checkpoint_tag(step))
