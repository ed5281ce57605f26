"""The GPU check's own arithmetic and report. The whole script runs in CI on the CPU at tiny
sizes (`make gpu-check`, .ci/run); these tests cover what that run cannot make fail."""

from __future__ import annotations

import math

import numpy as np

from bench.gpu_check import _rel, psnr
from bench.gpu_report import write_report


def test_psnr_of_known_errors():
    a = np.zeros((4, 4, 4), dtype=np.uint8)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[...] = 16  # mse 256: 10 log10(255^2 / 256) = 24.05 dB
    assert psnr(a, b) == 10 * math.log10(255**2 / 256)
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
