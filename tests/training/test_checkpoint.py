"""Atomic, rotated checkpoints: a crash while saving never costs a good checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    write_checkpoint,
)


class FakeEngine:
    """Stands in for training.engine.Engine: writes a weights file like DeepSpeed does."""

    def __init__(self, crash_after_partial_write: bool = False) -> None:
        self.crash = crash_after_partial_write
        self.weights = torch.zeros(3)
        self.loaded: tuple[Path, str] | None = None

    def save_state(self, save_dir: Path, tag: str) -> None:
        folder = save_dir / tag
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.weights, folder / "model_states.pt")
        if self.crash:
            (folder / "optim_states.pt").write_bytes(b"half written")
            raise KeyboardInterrupt("killed while saving")

    def load_state(self, load_dir: Path, tag: str) -> None:
        self.loaded = (load_dir, tag)
        self.weights = torch.load(load_dir / tag / "model_states.pt")


def save(run_dir: Path, step: int, engine: FakeEngine | None = None, keep: int = 3):
    engine = engine or FakeEngine()
    engine.weights = torch.full((3,), float(step))
    return write_checkpoint(
        engine,
        run_dir,
        step,
        rank=0,
        rank_state={"data": {"consumed": [step]}},
        trainer_state={"ema": None},
        config_yaml=f"step: {step}\n",
        keep=keep,
    )


def test_rotation_keeps_the_newest_n(tmp_path):
    for step in (10, 20, 30, 40, 50):
        save(tmp_path, step, keep=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [40, 50]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000050"
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_crash_mid_save_leaves_previous_checkpoints_intact(tmp_path):
    save(tmp_path, 10, keep=2)
    save(tmp_path, 20, keep=2)
    before = {c.step: sorted(p.name for p in c.path.iterdir()) for c in list_checkpoints(tmp_path)}
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 30, FakeEngine(crash_after_partial_write=True), keep=2)
    after = {c.step: sorted(p.name for p in c.path.iterdir()) for c in list_checkpoints(tmp_path)}
    assert after == before, "no checkpoint lost or half-written after the crash"
    assert latest_checkpoint(tmp_path).step == 20
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000020"
    engine = FakeEngine()
    trainer_state, rank_state = read_checkpoint(engine, latest_checkpoint(tmp_path), rank=0)
    assert trainer_state["step"] == 20 and rank_state["data"] == {"consumed": [20]}
    assert torch.equal(engine.weights, torch.full((3,), 20.0))
    # the next successful save cleans the crash's leftovers and rotates as usual
    save(tmp_path, 30, keep=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [20, 30]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_crash_before_rename_is_invisible(tmp_path, monkeypatch):
    save(tmp_path, 10)
    import training.checkpoint as ckpt

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_fsync_tree", fail)  # dies after every file was written
    with pytest.raises(OSError):
        save(tmp_path, 20)
    assert [c.step for c in list_checkpoints(tmp_path)] == [10]


def test_resaving_the_same_step_replaces_it(tmp_path):
    save(tmp_path, 10)
    save(tmp_path, 10)
    assert [c.step for c in list_checkpoints(tmp_path)] == [10]


def test_rng_states_are_restored(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3)
    save(tmp_path, 1)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.random(), np.random.rand(), torch.rand(1)  # move on
    read_checkpoint(FakeEngine(), latest_checkpoint(tmp_path), rank=0)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_missing_rank_file_is_a_clear_error(tmp_path):
    save(tmp_path, 1)
    with pytest.raises(FileNotFoundError, match="same number of processes"):
        read_checkpoint(FakeEngine(), latest_checkpoint(tmp_path), rank=1)


def test_a_checkpoint_of_the_old_format_is_refused_before_loading(tmp_path):
    ckpt = save(tmp_path, 1)
    state = torch.load(ckpt.path / "trainer.pt", weights_only=False)
    del state["format"]  # as written before the denoiser became one module
    torch.save(state, ckpt.path / "trainer.pt")
    with pytest.raises(ValueError, match="imagedream-train/1"):
        read_checkpoint(FakeEngine(), latest_checkpoint(tmp_path), rank=0)
