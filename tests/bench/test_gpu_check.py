"""The GPU check's own arithmetic and report (its render PSNR is evaluation's, tested in
tests/evaluation/test_metrics.py). The whole script runs in CI on the CPU at tiny
sizes (`make gpu-check`, .ci/run); these tests cover what that run cannot make fail."""

from __future__ import annotations

from bench.gpu_check import _rel
from bench.gpu_report import write_report


def test_relative_difference():
    assert abs(_rel([1.0, 2.0], [1.0, 2.0])) == 0.0
    assert abs(_rel([1.1], [1.0]) - 0.1) < 1e-12


def test_report_names_the_mode_and_every_failed_part(tmp_path):
    result = {
        "mode": "cpu-tiny",
        "mode_line": "NO GPU RUN (no NVIDIA GPU here): tiny sizes",
        "machine": "2 CPUs",
        "seconds": 1.0,
        "render": {"error": "RuntimeError: Cycles found no GPU", "ok": False},
        "training": {"pixel": {"error": "launcher exit 1: NCCL error"}, "ok": False},
        "sampling": {"error": "OutOfMemoryError: CUDA out of memory", "ok": False},
        "ok": {"render": False, "training": False, "sampling": False},
    }
    write_report(result, tmp_path)
    text = (tmp_path / "gpu.md").read_text()
    assert "NO GPU RUN" in text
    for message in ("Cycles found no GPU", "NCCL error", "CUDA out of memory"):
        assert message in text
    assert "render: FAILED, training: FAILED, sampling: FAILED" in text
