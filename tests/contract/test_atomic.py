"""The one atomic-write helper: the final name holds the old file or the whole new one."""

from __future__ import annotations

import pytest
import torch

from contract.atomic import atomic_write, atomic_write_bytes


def test_atomic_write_streams_through_a_callable(tmp_path):
    target = tmp_path / "state.pt"
    atomic_write(target, lambda f: torch.save({"step": 3}, f))
    assert torch.load(target, weights_only=False) == {"step": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")

    def half_then_fail(f):
        f.write(b"half")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
