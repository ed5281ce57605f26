"""Reading weight files from local paths (never from a model hub)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor


def load_state_file(folder: Path, stem: str) -> dict[str, Tensor]:
    """`folder/stem.safetensors` (or `.fp16.safetensors`, `.bin`) as a float32 state dict."""
    for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors", f"{stem}.bin"):
        path = folder / name
        if path.is_file():
            return {k: v.float() for k, v in load_checkpoint(path).items()}
    raise FileNotFoundError(f"no {stem}.safetensors / .bin in {folder}")


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """A state dict from .safetensors, or from a torch pickle (.pt/.ckpt/.bin, weights only,
    memory-mapped; a Lightning-style {"state_dict": ...} wrapper is unwrapped).

    The mapping is private (copy-on-write): training may update tensors adopted from it, but on
    a CPU run they stay backed by the file, so the file must not be rewritten in place meanwhile
    (write a new file and rename it, as save_original_checkpoint does)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:  # memory-mapped: tensors are read from the file as they are used, never copied whole
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:  # the legacy (pre-zip) torch format cannot be memory-mapped
        if "mmap" not in str(exc):
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return obj
