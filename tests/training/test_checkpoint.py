"""Atomic, rotated checkpoints: a crash while saving never costs a good checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    CheckpointParts,
    ProcessRNG,
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


class Held:
    """A Stateful part that holds a plain state (stands in for the loader)."""

    def __init__(self, state: dict | None = None) -> None:
        self.state = state

    def state_dict(self) -> dict | None:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


def parts(step: int = 0) -> CheckpointParts:
    return CheckpointParts(
        per_rank={"data": Held({"consumed": [step]}), "rng": ProcessRNG()}, shared={"ema": None}
    )


def save(run_dir: Path, step: int, engine: FakeEngine | None = None, keep: int = 3):
    engine = engine or FakeEngine()
    engine.weights = torch.full((3,), float(step))
    return write_checkpoint(
        engine, run_dir, step, rank=0, parts=parts(step), config_yaml=f"step: {step}\n", keep=keep
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
    trainer_state, rank_state = read_checkpoint(
        engine, latest_checkpoint(tmp_path), rank=0, parts=parts()
    )
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
    read_checkpoint(FakeEngine(), latest_checkpoint(tmp_path), rank=0, parts=parts())
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_missing_rank_file_is_a_clear_error(tmp_path):
    save(tmp_path, 1)
    with pytest.raises(FileNotFoundError, match="same number of processes"):
        read_checkpoint(FakeEngine(), latest_checkpoint(tmp_path), rank=1, parts=parts())


def test_a_checkpoint_of_the_old_format_is_refused_before_loading(tmp_path):
    ckpt = save(tmp_path, 1)
    state = torch.load(ckpt.path / "trainer.pt", weights_only=False)
    del state["format"]  # as written before the denoiser became one module
    torch.save(state, ckpt.path / "trainer.pt")
    with pytest.raises(ValueError, match="imagedream-train/1"):
        read_checkpoint(FakeEngine(), latest_checkpoint(tmp_path), rank=0, parts=parts())


# ---------------------------------------------------------------------------------------------
# The trainer's parts: the keys on disk are a contract (checkpoints already written must resume)


class TrainerEngine(FakeEngine):
    """FakeEngine plus the noise generator the trainer checkpoints."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def rng_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def make_ema(seed: int):
    from training.ema import EMA

    torch.manual_seed(seed)
    layer = torch.nn.Linear(2, 2)
    ema = EMA(layer.named_parameters(), decay=0.9)
    ema.update()
    return ema


def resume(run_dir: Path, engine, loader, ema) -> int:
    from types import SimpleNamespace

    from training.checkpoint import restore_training_state

    cfg = SimpleNamespace(trainer=SimpleNamespace(resume="auto"))
    return restore_training_state(cfg, run_dir, engine, loader, ema, rank=0)


def test_the_training_parts_are_the_keys_on_disk(tmp_path):
    from training.checkpoint import training_parts

    engine, loader, ema = TrainerEngine(), Held({"consumed": [5]}), make_ema(0)
    parts = training_parts(engine, loader, ema)
    ckpt = write_checkpoint(engine, tmp_path, 5, rank=0, parts=parts, config_yaml="", keep=2)
    rank_file = torch.load(ckpt.path / "rank00000.pt", weights_only=False)
    trainer_file = torch.load(ckpt.path / "trainer.pt", weights_only=False)
    assert list(rank_file) == ["data", "engine_rng", "rng"]
    assert list(rank_file["rng"])[:3] == ["python", "numpy", "torch"]
    assert list(trainer_file) == ["ema", "step", "format"]
    assert trainer_file["step"] == 5 and trainer_file["format"] == "imagedream-train/2"
    assert list(trainer_file["ema"]) == ["decay", "num_updates", "shadow"]


def test_a_checkpoint_in_the_previous_codes_files_restores_every_part(tmp_path):
    """The files exactly as training.checkpoint wrote them before the parts were named."""
    import random

    import numpy as np

    saved_engine, saved_ema = TrainerEngine(seed=3), make_ema(1)
    torch.randn(5, generator=saved_engine.generator)  # a state other than the fresh seed 3
    saved_ema.update()  # num_updates 2, not the fresh EMA's 1
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    folder = tmp_path / "checkpoints" / "step_00000007"
    folder.mkdir(parents=True)
    torch.save(torch.full((3,), 7.0), folder / "model_states.pt")
    torch.save(
        {"data": {"consumed": [7]}, "engine_rng": saved_engine.rng_state(), "rng": rng},
        folder / "rank00000.pt",
    )
    torch.save(
        {"ema": saved_ema.state_dict(), "step": 7, "format": "imagedream-train/2"},
        folder / "trainer.pt",
    )
    expected_draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)

    engine, loader, ema = TrainerEngine(seed=0), Held(), make_ema(2)
    assert resume(tmp_path, engine, loader, ema) == 7
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected_draws
    assert loader.state == {"consumed": [7]}
    assert torch.equal(engine.generator.get_state(), saved_engine.generator.get_state())
    assert torch.equal(engine.weights, torch.full((3,), 7.0))
    assert ema.num_updates == saved_ema.num_updates
    for name, shadow in saved_ema.shadow.items():
        assert torch.equal(ema.shadow[name], shadow)


def test_an_ema_run_needs_a_saved_ema_and_a_run_without_one_ignores_it(tmp_path):
    from training.checkpoint import training_parts

    engine = TrainerEngine()
    write_checkpoint(engine, tmp_path, 1, 0, training_parts(engine, Held({}), None), "", keep=3)
    with pytest.raises(ValueError, match="'ema'"):
        resume(tmp_path, TrainerEngine(), Held(), make_ema(0))
    write_checkpoint(engine, tmp_path, 2, 0, training_parts(engine, Held({}), make_ema(0)), "", 3)
    assert resume(tmp_path, TrainerEngine(), Held(), None) == 2


def test_a_part_may_not_take_a_key_trainer_pt_keeps_for_itself():
    with pytest.raises(ValueError, match="step"):
        CheckpointParts(per_rank={}, shared={"step": Held()})
