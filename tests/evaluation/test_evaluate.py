"""`make eval` end to end on the tiny model: conf/eval.yaml composed as Hydra does, default
prompts plus held-out rings, leakage read from the run's config, report written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.hydra_compose import compose
from contract.lease import FolderBusy
from evaluation.checkpoints import checkpoint_label, load_pipeline
from evaluation.config import OriginalCheckpointConfig, register_configs, to_eval_config
from evaluation.evaluate import run
from tests.evaluation.helpers import encoded_image, rgba_object, write_ring_shard
from tests.training.helpers import sd21_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def trained_run(tmp_path, tiny_export) -> Path:
    """A run folder as training leaves it: config.yaml (data.shards) and export/."""
    run_dir = tmp_path / "runs" / "demo"
    train = write_ring_shard(tmp_path / "train" / "shards" / "shard-00000.tar", ["duck", "fox"])
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"name: demo\ndata:\n  shards: {train.parent}\n")
    (run_dir / "export").symlink_to(tiny_export, target_is_directory=True)
    return run_dir


def _compose(overrides: list[str]):
    register_configs()
    return to_eval_config(compose("eval", overrides))


def test_eval_on_the_tiny_model_writes_the_report(tmp_path, trained_run) -> None:
    heldout = write_ring_shard(
        tmp_path / "heldout" / "shards" / "shard-00000.tar", ["lamp", "duck"]
    )
    out = tmp_path / "eval"
    cfg = _compose(
        [
            f"checkpoint={trained_run / 'export'}",
            f"heldout_shards={heldout.parent}",
            "leakage.mode=flag",
            "sampler.num_inference_steps=2",
            "sampler.batch_size=4",
            "wandb.mode=disabled",
            f"output_dir={out}",
        ]
    )
    index = run(cfg)
    results = json.loads((out / "results.json").read_text())
    (r,) = results["runs"]
    assert r["label"] == "demo" and r["controller"] == "local_pixel"
    names = [p["name"] for p in r["prompts"]]
    assert names[:4] == ["blue_gem", "pine_tree", "red_mug", "rubber_duck"]
    assert sorted(names[4:]) == ["duck_r0", "lamp_r0"]
    gt = {"psnr", "ssim", "lpips"}
    baselines = {"psnr_copy", "psnr_mean_view"}  # mean view: from the run's training shards
    assert (
        set(r["summary"])
        == {"qis", "clip_tx", "clip_im"} | gt | {f"{k}_front" for k in gt} | baselines
    )
    check = r["info"]["learning_check"]
    assert check["n_prompts"] == 2 and check["margin"] == pytest.approx(
        check["model_psnr"] - max(check["copy_psnr"], check["mean_view_psnr"])
    )
    assert "Learning check" in index.read_text()
    # 2 held-out rings: 3 novel views (azimuth 90/180/270) each, view 0 apart
    assert r["summary"]["psnr"]["n_images"] == 6 and r["summary"]["psnr_front"]["n_images"] == 2
    assert r["summary"]["qis"]["n_images"] == 24
    assert all(len(p["scores"]["psnr"]) == 3 for p in r["prompts"] if "psnr" in p["scores"])
    assert "QIS over 1008 classes" in json.dumps(results["models"])
    # duck is in the run's training shards (read from its config.yaml), lamp is not
    assert [leak["prompt"] for leak in results["leakage"]["leaks"]] == ["duck_r0"]
    assert "IN TRAINING SET" in index.read_text()
    with pytest.raises(Exception, match="training shards"):
        run(
            _compose(
                [
                    f"checkpoint={trained_run}",
                    f"heldout_shards={heldout.parent}",
                    "default_prompts=false",
                    "sampler.num_inference_steps=1",
                    f"output_dir={out}2",
                ]
            )
        )


def test_bad_prompt_files_are_skipped_logged_and_reported(tmp_path, tiny_export, caplog) -> None:
    """A garbage and a truncated JPEG among good prompts: the good ones are evaluated, the two
    are named with their reason in the log, results.json and the report; the RGB photo is
    evaluated with its background and flagged."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    Image.fromarray(rgba_object(), "RGBA").save(folder / "chair.png")
    (folder / "chair.txt").write_text("a red chair")
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(folder / "photo.jpg")
    (folder / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "truncated.jpg").write_bytes(encoded_image("JPEG", size=64)[:1200])
    out = tmp_path / "eval"
    cfg = _compose(
        [
            f"checkpoint={tiny_export}",
            f"prompts={folder}",
            "sampler.num_inference_steps=1",
            "wandb.mode=disabled",
            f"output_dir={out}",
        ]
    )
    with caplog.at_level("WARNING", logger="evaluation"):
        index = run(cfg)
    results = json.loads((out / "results.json").read_text())
    assert [p["name"] for p in results["runs"][0]["prompts"]] == ["chair", "photo"]
    skipped = {Path(p["path"]).name: p["reason"] for p in results["skipped_prompts"]}
    assert set(skipped) == {"garbage.jpg", "truncated.jpg"}
    assert "truncated" in skipped["truncated.jpg"]
    assert results["background_kept"] == [{"name": "photo", "source": str(folder / "photo.jpg")}]
    page = index.read_text()
    assert "Skipped prompts" in page and str(folder / "garbage.jpg") in page
    assert str(folder / "truncated.jpg") in page and "BACKGROUND KEPT" in page
    assert str(folder / "garbage.jpg") in caplog.text and "truncated" in caplog.text
    assert "photo" in caplog.text and "used with its background" in caplog.text

    for path in folder.glob("[cp]*"):  # only the bad files left: a clear error naming the folder
        path.unlink()
    with pytest.raises(ValueError, match=f"none of the 2 prompt images in {folder}"):
        run(_compose([f"checkpoint={tiny_export}", f"prompts={folder}", f"output_dir={out}2"]))


def test_a_second_evaluation_into_a_live_output_folder_stops_naming_the_first(
    tmp_path, trained_run
) -> None:
    out = tmp_path / "eval"
    code = (
        "import time; from contract.lease import acquire; "
        f"acquire({str(out)!r}, 'evaluation'); print('held', flush=True); time.sleep(600)"
    )
    live = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "held"
        cfg = _compose([f"checkpoint={trained_run / 'export'}", "wandb.mode=disabled",
                        "sampler.num_inference_steps=1", f"output_dir={out}"])  # fmt: skip
        with pytest.raises(FolderBusy, match=rf"in use by another evaluation \(pid {live.pid} on "):
            run(cfg)
        assert sorted(p.name for p in out.iterdir()) == [".lease"]  # no report written
    finally:
        live.kill()
        live.wait()
    assert run(cfg).is_file()  # the holder gone, the folder is free


def test_checkpoint_forms(trained_run, tiny_export, tmp_path) -> None:
    original = OriginalCheckpointConfig(model="tiny")
    assert load_pipeline(trained_run, original).model.controller_name == "local_pixel"  # run
    assert checkpoint_label(trained_run / "export") == "demo"
    (tmp_path / "ckpt" / "step_00000010").mkdir(parents=True)
    (tmp_path / "ckpt" / "step_00000010" / "trainer.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="export"):
        load_pipeline(tmp_path / "ckpt" / "step_00000010", original)
    with pytest.raises(FileNotFoundError, match="expected a pipeline folder"):
        load_pipeline(tmp_path / "nothing", original)


def test_released_checkpoint_file_is_converted(tmp_path, tiny_local_pixel) -> None:
    from training.model.released_layout import save_original_checkpoint

    path = tmp_path / "sd-v2.1-base-4view-ipmv.pt"
    save_original_checkpoint(tiny_local_pixel, path)
    original = OriginalCheckpointConfig(model="tiny", controller="local_pixel")
    with pytest.raises(ValueError, match="diffusers folder is required"):
        load_pipeline(path, original)  # the checks of `training.released to-pipeline`
    original.sd21_path = str(sd21_folder(tiny_local_pixel, tmp_path / "sd21"))
    original.image_encoder_path = str(tmp_path / "clip")
    tiny_local_pixel.image_encoder.model.save_pretrained(tmp_path / "clip")
    model = load_pipeline(path, original).model
    for key, value in tiny_local_pixel.denoiser_state_dict().items():
        assert (model.denoiser_state_dict()[key] == value).all(), key


@pytest.mark.slow
def test_cli_with_the_demo_experiment(tmp_path, trained_run) -> None:
    """What `make demo` runs: `eval_experiment=demo` selects the evaluation preset."""
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    out = tmp_path / "eval"
    rings = write_ring_shard(tmp_path / "rings" / "shards" / "shard-00000.tar", ["duck"])
    cmd = [
        sys.executable,
        "-m",
        "evaluation.evaluate",
        "eval_experiment=demo",
        f"checkpoint={trained_run / 'export'}",
        f"heldout_shards={rings.parent}",
        "sampler.num_inference_steps=2",
        "wandb.mode=disabled",
        f"output_dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["num_threads"] == 2  # set by eval_experiment/demo.yaml
    assert results["config"]["sampler"]["use_captions"] is False  # prompt-only, as trained
    assert "learning check" in proc.stderr + proc.stdout
    assert (out / "index.html").is_file()
