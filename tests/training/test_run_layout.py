"""The run folder's names are an on-disk contract: old runs resume and evaluate by them."""

from __future__ import annotations

from pathlib import Path

from training.run_layout import CheckpointFolder, RunLayout, checkpoint_tag, tag_step


def test_the_run_folder_names_are_the_contract():
    run = RunLayout(Path("runs/demo"))
    assert run.config == Path("runs/demo/config.yaml")
    assert run.metrics == Path("runs/demo/metrics.jsonl")
    assert run.wandb_run_id == Path("runs/demo/wandb_run_id.txt")
    assert run.wandb == Path("runs/demo/wandb")
    assert run.samples == Path("runs/demo/samples")
    assert run.checkpoints == Path("runs/demo/checkpoints")
    assert run.latest == Path("runs/demo/checkpoints/latest")
    assert run.export == Path("runs/demo/export")
    ckpt = run.checkpoint(1000)
    assert ckpt.path == Path("runs/demo/checkpoints/step_00001000")
    assert ckpt.trainer == ckpt.path / "trainer.pt"
    assert ckpt.config == ckpt.path / "config.yaml"
    assert ckpt.rank(3) == ckpt.path / "rank00003.pt"
    assert CheckpointFolder(ckpt.path) == ckpt


def test_checkpoint_tags_round_trip_and_other_names_are_not_steps():
    assert checkpoint_tag(1000) == "step_00001000"
    assert tag_step(checkpoint_tag(1000)) == 1000
    for name in ("latest", ".tmp-step_00001000", "step_1000", "step_00001000.old"):
        assert tag_step(name) is None
