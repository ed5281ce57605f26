"""End to end on this CPU: 2-process DeepSpeed training of every controller, and a run killed
mid-way that resumes to the uninterrupted run's losses (the loss falling on a fixed batch is in
test_engine.py)."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contract.synthetic_shards import write_synthetic_shards
from tests.training.helpers import REPO, env
from training.model import CONTROLLER_CONFIGS

pytestmark = pytest.mark.slow


def command(nproc: int, overrides: list[str]) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc_per_node", str(nproc), "-m", "training.train"]
    return [*launcher, "debug=tiny", *overrides]


def run(nproc: int, overrides: list[str], timeout: float = 600, **kw) -> None:
    proc = subprocess.run(
        command(nproc, overrides),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process below it (the launcher's workers run in their own
    sessions, so killing its process group is not enough): a crash with no clean-up."""
    import psutil

    try:
        tree = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


def metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> metrics (the last line of a step, if it were logged twice)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["step"]] = row
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(folder, num_shards=2, rings_per_shard=6, num_views=8, resolution=16)
    return folder


@pytest.mark.parametrize("controller", sorted(CONTROLLER_CONFIGS))
def test_two_process_training_of_every_variant(tmp_path, shards, controller):
    from training.pipeline import ImageDreamPipeline

    run_dir = tmp_path / "run"
    run(2, [f"controller={controller}", f"data.shards={shards}", f"run_dir={run_dir}",
            "trainer.max_steps=2", "trainer.ckpt_every=2"])  # fmt: skip
    rows = metrics(run_dir)
    assert sorted(rows) == [1, 2]
    assert all(math.isfinite(r["train/loss"]) and r["train/grad_norm"] > 0 for r in rows.values())
    ckpt = run_dir / "checkpoints" / "step_00000002"
    assert (ckpt / "rank00000.pt").is_file() and (ckpt / "rank00001.pt").is_file()
    assert "name: debug_tiny_" in (run_dir / "config.yaml").read_text()
    model = ImageDreamPipeline.from_pretrained(run_dir / "export").model
    assert model.controller_name == controller


def test_killed_run_resumes_to_the_same_losses(tmp_path, shards):
    common = [
        "controller=local_pixel",
        f"data.shards={shards}",
        "data.num_workers=2",
        "engine.grad_accum=2",
        "engine.ema_decay=0.9",
        "trainer.ckpt_every=3",
        "trainer.keep_checkpoints=3",
    ]
    reference = tmp_path / "reference"
    run(2, [*common, f"run_dir={reference}", "trainer.max_steps=6"])

    # Same run, killed (SIGKILL, no clean-up) after step 4: max_steps is large so it cannot
    # finish first; the resume then restarts from the step-3 checkpoint and stops at 6.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        command(2, [*common, f"run_dir={killed}", "trainer.max_steps=1000"]),
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not ((killed / "metrics.jsonl").exists() and 4 in metrics(killed)):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        kill_tree(proc)
    assert (killed / "checkpoints" / "step_00000003").is_dir()
    assert not (killed / "export").exists()
    run(2, [*common, f"run_dir={killed}", "trainer.max_steps=6"])

    expected, got = metrics(reference), metrics(killed)
    assert sorted(got) == list(range(1, 7))
    # step 4 was logged before the kill and again after the resume: metrics.jsonl was cut back
    # to the step-3 checkpoint, so each step is there once
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7)), steps
    for step in range(4, 7):
        for key in ("train/loss", "train/grad_norm", "train/lr"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=1e-7), (
                step,
                key,
            )
    # EMA weights (exported) agree too, so the EMA state was restored exactly
    a = load_file(str(reference / "export" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(killed / "export" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_refused_resume_changes_nothing_in_the_run_folder(tmp_path, shards):
    common = [f"data.shards={shards}", f"run_dir={tmp_path / 'run'}", "trainer.ckpt_every=2"]
    run(1, [*common, "data.num_workers=1", "trainer.max_steps=2"])
    before = _snapshot(tmp_path / "run")
    proc = subprocess.run(
        command(1, [*common, "data.num_workers=2", "trainer.max_steps=4"]),
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "exact resume needs the same layout of data streams" in proc.stderr
    assert _snapshot(tmp_path / "run") == before  # config.yaml still holds the accepted settings


def test_a_second_training_on_a_live_run_folder_stops_naming_the_first(tmp_path, shards):
    """Two `make train` into one run folder: the second exits non-zero naming the first (rank
    0 of a 2-process run holds the lease) and writes nothing, so metrics.jsonl holds each step
    once (main gave two interleaved runs, both exit 0). The first is stopped afterwards."""
    run_dir = tmp_path / "run"
    common = [f"data.shards={shards}", f"run_dir={run_dir}", "trainer.ckpt_every=1000"]
    first = subprocess.Popen(
        command(2, [*common, "trainer.max_steps=100000"]),
        cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    lease = run_dir / ".lease"
    try:
        deadline = time.monotonic() + 300
        while not (lease.is_file() and lease.read_bytes()):
            assert first.poll() is None, first.stderr.read()[-3000:] if first.stderr else ""
            assert time.monotonic() < deadline, "the first run never took its lease"
            time.sleep(0.1)
        owner = json.loads(lease.read_bytes())
        second = subprocess.run(
            command(1, [*common, "trainer.max_steps=100000"]),
            cwd=REPO, env=env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert first.poll() is None, "the first run ended before the second was refused"
        while not ((run_dir / "metrics.jsonl").is_file() and metrics(run_dir)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        kill_tree(first)
    assert second.returncode != 0
    assert f"in use by another training run (pid {owner['pid']} on " in second.stderr
    text = (run_dir / "metrics.jsonl").read_text()
    lines = text.splitlines()[: text.count("\n")]  # not a line the kill may have cut
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == list(range(1, len(steps) + 1)), "each step once, from one run"


def test_deepspeed_launcher(tmp_path, shards):
    """`deepspeed --num_gpus 2 --module training.train ...` (it appends --local_rank=N)."""
    run_dir = tmp_path / "run"
    launcher = Path(sys.executable).parent / "deepspeed"
    cmd = [str(launcher), "--num_gpus", "2", "--master_port", "29533", "--module"]
    cmd += ["training.train", "debug=tiny", "controller=global", f"data.shards={shards}"]
    cmd += [f"run_dir={run_dir}", "trainer.max_steps=1", "trainer.export=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(metrics(run_dir)) == [1]
    ckpt = run_dir / "checkpoints" / "step_00000001"
    assert (ckpt / "rank00000.pt").is_file() and (ckpt / "rank00001.pt").is_file()
