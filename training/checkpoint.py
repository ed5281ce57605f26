"""Checkpoints: atomic, rotated, carrying everything an exact resume needs.

Where the files go is training.run_layout's (<run_dir>/checkpoints/step_00001000/ with DeepSpeed's
files, trainer.pt, rank00000.pt ..., config.yaml; checkpoints/latest); what is inside them is this
module's. Besides DeepSpeed's model, optimiser and LR scheduler, a checkpoint holds named Stateful
parts (`training_parts`, as torchtitan hands its checkpointer a dict of Stateful objects): saving
and restoring iterate the same dict, and each part's name is its key in the file it goes to.

Atomicity: every rank writes into checkpoints/.tmp-step_XXXXXXXX/; only when all ranks are done
does rank 0 rename the finished folder to its final name. A folder without the leading dot is
therefore always complete, and a crash while saving leaves the previous checkpoints untouched (the
leftover .tmp- folder is removed by the next save). Rotation runs only after a successful save and
deletes by renaming to a dot-name first, so a half-deleted checkpoint is never mistaken for a
complete one. The run folder must be on a filesystem all ranks share.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from contract.atomic import atomic_write, atomic_write_bytes
from training.run_layout import CheckpointFolder, RunLayout, checkpoint_tag, tag_step

if TYPE_CHECKING:
    from torch.distributed.checkpoint.stateful import Stateful

    from training.config import TrainConfig
    from training.data import Loader
    from training.ema import EMA
    from training.engine import Engine
    from training.prompt_image import PromptImageConfig
    from training.sampling_settings import SamplingSettings

# Written into trainer.pt. /2: the denoiser is one module (`model.denoiser.unet.*`,
# `model.denoiser.controller.*`); /1 checkpoints (`model.unet.*`) cannot be resumed.
CHECKPOINT_FORMAT = "imagedream-train/2"
_TRAINER_HEADER = ("step", "format")  # trainer.pt's own keys, beside its parts


class CheckpointEngine(Protocol):
    """What checkpointing needs from training.engine.Engine (tests pass a stand-in)."""

    def save_state(self, save_dir: Path, tag: str) -> None: ...
    def load_state(self, load_dir: Path, tag: str) -> None: ...


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    @property
    def tag(self) -> str:
        return self.path.name

    @property
    def files(self) -> CheckpointFolder:
        return CheckpointFolder(self.path)


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first (temporary and trash folders are ignored)."""
    root = RunLayout(Path(run_dir)).checkpoints
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        step = tag_step(path.name)
        if step is not None and path.is_dir() and CheckpointFolder(path).trainer.is_file():
            found.append(Checkpoint(path, step))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def as_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    step = tag_step(path.name)
    if step is None or not CheckpointFolder(path).trainer.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint folder (step_XXXXXXXX)")
    return Checkpoint(path, step)


# ---------------------------------------------------------------------------------------------
# What a checkpoint holds: named Stateful parts


@dataclass(frozen=True)
class CheckpointParts:
    """Named Stateful parts; a part's name is its key on disk. `per_rank` parts go into this
    rank's rankNNNNN.pt; `shared` parts (the same on every rank) into trainer.pt, which rank 0
    writes and every rank reads. A part that is None (EMA off) is saved as None and not restored.
    """

    per_rank: dict[str, Stateful | None]
    shared: dict[str, Stateful | None]

    def __post_init__(self) -> None:
        if clash := set(self.shared) & set(_TRAINER_HEADER):
            raise ValueError(f"trainer.pt keeps {sorted(clash)} for itself: rename the part")


class ProcessRNG:
    """This process's global generators: python, numpy, torch (and CUDA when present)."""

    def state_dict(self) -> dict[str, Any]:
        states: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        np.random.set_state(state_dict["numpy"])
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


@dataclass(frozen=True)
class _EngineRNG:
    """The engine's noise and timestep generator (training.engine.Engine.generator)."""

    engine: Engine

    def state_dict(self) -> dict[str, Any]:
        return self.engine.rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.engine.load_rng_state(state_dict)


def training_parts(engine: Engine, loader: Loader, ema: EMA | None) -> CheckpointParts:
    """THE list of what an exact resume restores beside DeepSpeed's state; adding a part is one
    line here. The names are keys in files already on disk: renaming one orphans old checkpoints."""
    return CheckpointParts(
        per_rank={
            "data": loader,  # each stream's position (training.data.DataState)
            "engine_rng": _EngineRNG(engine),
            "rng": ProcessRNG(),
        },
        shared={"ema": ema},  # None when engine.ema_decay = 0
    )


def _state_dicts(parts: dict[str, Stateful | None]) -> dict[str, Any]:
    return {name: None if part is None else part.state_dict() for name, part in parts.items()}


def _load_state_dicts(parts: dict[str, Stateful | None], saved: dict[str, Any], file: Path) -> None:
    for name, part in parts.items():
        if part is None:
            continue  # this run has no such part (EMA off): whatever was saved stays unread
        if saved.get(name) is None:
            raise ValueError(
                f"{file} has no {name!r} state but this run restores one (the saving run had that "
                "part off, e.g. engine.ema_decay=0)"
            )
        part.load_state_dict(saved[name])


# ---------------------------------------------------------------------------------------------
# The checkpoint folder


def _fsync_tree(path: Path) -> None:
    """Flush every file and folder below `path` to disk before it gets its final name."""
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    """Delete a folder so that no crash leaves it looking complete: rename to a dot-name first."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _replace_dir(finished: Path, final: Path) -> None:
    """Give a finished folder its final name, removing an older folder of that name first.

    Folders are not written through contract.atomic (one file, one writer): a checkpoint is
    filled by every rank between barriers, the export by diffusers' save_pretrained, so each
    caller stages its folder and only this last step is shared.
    """
    if final.exists():  # the same step saved again (e.g. after a resume), or a second export
        _remove(final)
    os.replace(finished, final)


def write_checkpoint(
    engine: CheckpointEngine,
    run_dir: str | Path,
    step: int,
    rank: int,
    parts: CheckpointParts,
    config_yaml: str,
    keep: int,
    barrier: Any = lambda: None,
) -> Checkpoint:
    """Save on every rank (collective); returns the new checkpoint after rotation.

    Every rank writes its `parts.per_rank`; rank 0 also writes `parts.shared` with the step.
    """
    layout = RunLayout(Path(run_dir))
    root = layout.checkpoints
    tag = checkpoint_tag(step)
    tmp_root = root / f".tmp-{tag}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(".tmp-*"):  # from a crash during an earlier save
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in root.glob(".trash-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp_root.mkdir()
    barrier()
    staging = CheckpointFolder(tmp_root / tag)
    engine.save_state(tmp_root, tag)  # DeepSpeed writes tmp_root/tag/...
    staging.path.mkdir(parents=True, exist_ok=True)
    rank_file = _state_dicts(parts.per_rank)
    atomic_write(staging.rank(rank), lambda f: torch.save(rank_file, f))
    if rank == 0:
        atomic_write_bytes(staging.config, config_yaml.encode())
        trainer_file = {**_state_dicts(parts.shared), "step": step, "format": CHECKPOINT_FORMAT}
        atomic_write(staging.trainer, lambda f: torch.save(trainer_file, f))
    barrier()
    final = layout.checkpoint(step).path
    if rank == 0:
        _fsync_tree(staging.path)
        _replace_dir(staging.path, final)
        shutil.rmtree(tmp_root, ignore_errors=True)
        atomic_write_bytes(layout.latest, f"{tag}\n".encode())
        rotate(run_dir, keep)
    barrier()
    return Checkpoint(final, step)


def rotate(run_dir: str | Path, keep: int) -> list[Checkpoint]:
    """Delete all but the newest `keep` complete checkpoints; returns the deleted ones."""
    found = list_checkpoints(run_dir)
    doomed = found[:-keep] if keep > 0 else []
    for ckpt in doomed:
        _remove(ckpt.path)
    return doomed


def read_checkpoint(
    engine: CheckpointEngine, checkpoint: Checkpoint, rank: int, parts: CheckpointParts
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore the engine (model, optimiser, scheduler) and every part.

    Returns what trainer.pt and this rank's file held (trainer_state, rank_state), step included.
    """
    trainer_state = torch.load(checkpoint.files.trainer, map_location="cpu", weights_only=False)
    if trainer_state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{checkpoint.path} was written in format {trainer_state.get('format', 'imagedream-train/1')!r}, "
            f"this code resumes {CHECKPOINT_FORMAT!r} (the parameter names changed); start a new "
            "run, or export the old run with the version that trained it"
        )
    engine.load_state(checkpoint.path.parent, checkpoint.tag)
    rank_file = checkpoint.files.rank(rank)
    if not rank_file.is_file():
        raise FileNotFoundError(
            f"{rank_file} is missing: the checkpoint was written by fewer processes than this run "
            "has; exact resume needs the same number of processes"
        )
    rank_state = torch.load(rank_file, map_location="cpu", weights_only=False)
    _load_state_dicts(parts.per_rank, rank_state, rank_file)
    _load_state_dicts(parts.shared, trainer_state, checkpoint.files.trainer)
    return trainer_state, rank_state


# ---------------------------------------------------------------------------------------------
# The run folder and the training state


def prepare_run_dir(cfg: TrainConfig, is_main: bool) -> Path:
    """Create the run folder (refusing one with checkpoints under trainer.resume=never). Nothing
    in it is written here: `write_run_config` runs once the resume has been accepted."""
    run_dir = Path(cfg.run_dir)
    if cfg.trainer.resume == "never" and list_checkpoints(run_dir):
        raise FileExistsError(
            f"{run_dir} already holds checkpoints and trainer.resume=never: pick another name= "
            "or run_dir=, or resume with trainer.resume=auto"
        )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_run_config(cfg: TrainConfig, run_dir: Path, is_main: bool) -> None:
    """The resolved config as <run_dir>/config.yaml (after a resume was accepted, so a refused
    one leaves the folder as it was)."""
    from training.config import to_yaml

    if is_main:
        atomic_write_bytes(RunLayout(run_dir).config, to_yaml(cfg).encode())


def save_checkpoint(
    cfg: TrainConfig, run_dir: Path, engine: Engine, loader: Loader, ema: EMA | None, step: int
) -> Checkpoint:
    """Everything an exact resume needs, written atomically by all ranks; keeps the newest N."""
    from training.config import to_yaml
    from training.engine import barrier

    return write_checkpoint(
        engine,
        run_dir,
        step,
        rank=engine.dist.rank,
        parts=training_parts(engine, loader, ema),
        config_yaml=to_yaml(cfg),
        keep=cfg.trainer.keep_checkpoints,
        barrier=barrier,
    )


def restore_training_state(
    cfg: TrainConfig, run_dir: Path, engine: Engine, loader: Loader, ema: EMA | None, rank: int
) -> int:
    """Resume per trainer.resume; returns the step to continue from (0 for a fresh run)."""
    resume = cfg.trainer.resume
    if resume == "never":
        return 0
    checkpoint = latest_checkpoint(run_dir) if resume == "auto" else as_checkpoint(resume)
    if checkpoint is None:
        return 0
    parts = training_parts(engine, loader, ema)
    trainer_state, _ = read_checkpoint(engine, checkpoint, rank, parts)
    return int(trainer_state["step"])


def export_model(
    engine: Engine,
    ema: EMA | None,
    folder: Path,
    prompt_image: PromptImageConfig,
    sampling: SamplingSettings,
) -> None:
    """The final model as an ImageDreamPipeline folder (EMA weights when enabled), loadable with
    `ImageDreamPipeline.from_pretrained(folder)`, recording the grey range its prompts were
    composited on in training (`prompt_image`) and its sampling defaults (`sampling`: the
    family's, with the caption suffix it trained with). Every rank calls it (ZeRO-3 gathers the
    weights); rank 0 writes, atomically."""
    from contextlib import nullcontext

    from training.engine import barrier
    from training.pipeline import ImageDreamPipeline

    with engine.full_parameters(), ema.applied() if ema is not None else nullcontext():
        if engine.dist.is_main:
            tmp = folder.with_name(f".{folder.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            pipe = ImageDreamPipeline.from_model(
                engine.model, prompt_image=prompt_image, sampling=sampling
            )
            pipe.save_pretrained(tmp)
            _replace_dir(tmp, folder)
    barrier()
