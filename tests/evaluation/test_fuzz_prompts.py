"""Fuzzing the prompt loader: random bytes, garbage behind real magic numbers, and mutated real
PNG/JPEG/WEBP files, written as prompts beside a good one. The loader must end in its documented
outcome (the file loaded as a prompt, or skipped as a `PromptProblem` naming it), never raise
anything else, and never hang (the hypothesis deadline). Deterministic (derandomised) so CI
sees the same examples; FUZZ_EXAMPLES=N (default 50 per test) explores more."""

from __future__ import annotations

import io
import itertools
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from evaluation.prompts import PromptConfig, load_prompt_folder

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")),
    deadline=timedelta(seconds=5),  # one example takes milliseconds; seconds means a hang
    derandomize=True,
    database=None,  # writes nothing into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # a fresh folder per example
)
CFG = PromptConfig(size=32)


def _encode(pixels: np.ndarray, fmt: str, mode: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
        kwargs["transparency"] = 0
    elif mode != image.mode:
        image = image.convert(mode)
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _seeds() -> dict[str, tuple[str, bytes]]:
    """Small real files of every decoder and mode the loader takes: name -> (suffix, bytes)."""
    rng = np.random.default_rng(0)
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[6:18, 4:20] = [*rng.integers(0, 256, 3), 255]
    noise = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    return {
        "png_rgba": (".png", _encode(rgba, "PNG", "RGBA")),
        "png_rgb": (".png", _encode(noise, "PNG", "RGB")),
        "png_grey": (".png", _encode(noise, "PNG", "L")),
        "png_palette": (".png", _encode(noise, "PNG", "P")),
        "jpeg_rgb": (".jpg", _encode(noise, "JPEG", "RGB", quality=90)),
        "jpeg_grey": (".jpeg", _encode(noise, "JPEG", "L")),
        "jpeg_progressive": (".jpg", _encode(noise, "JPEG", "RGB", progressive=True)),
        "webp_rgba": (".webp", _encode(rgba, "WEBP", "RGBA", lossless=True)),
        "webp_lossy": (".webp", _encode(noise, "WEBP", "RGB", quality=50)),
    }


SEEDS = _seeds()
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"RIFF\x00\x10\x00\x00WEBPVP8 "]


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real file with 1-4 mutations: bit flips, overwrites, insertions, deletions, cuts."""
    suffix, original = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[i : i + len(chunk)] = chunk
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        else:
            del data[i:]
    return suffix, bytes(data)


random_files = st.tuples(
    st.sampled_from([".png", ".jpg", ".jpeg", ".webp"]),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=2048)),
)


@pytest.fixture
def folders(tmp_path):
    """A fresh prompt folder per example, each with one good prompt beside the fuzzed file."""
    good = np.zeros((16, 16, 4), np.uint8)
    good[4:12, 4:12] = (10, 200, 30, 255)
    counter = itertools.count()

    def make() -> Path:
        folder = tmp_path / f"example_{next(counter):05d}"
        folder.mkdir()
        Image.fromarray(good, "RGBA").save(folder / "good.png")
        return folder

    return make


def _check_outcome(folder: Path, fuzzed: Path) -> None:
    """Loaded (two prompts, the fuzzed one a proper image) or skipped by name with a reason."""
    loaded = load_prompt_folder(folder, CFG)
    names = [p.name for p in loaded.prompts]
    if loaded.skipped:
        (problem,) = loaded.skipped
        assert names == ["good"]
        assert Path(problem.path).parent == folder and Path(problem.path).stem == "fuzzed"
        assert problem.reason
        event(f"skipped: {problem.reason.split('(')[0].strip()}")  # --hypothesis-show-statistics
    else:
        assert sorted(names) == ["fuzzed", "good"]
        for p in loaded.prompts:
            # RGBA keeps its alpha for the pipeline; RGB is used as it is
            assert p.image.shape in ((32, 32, 3), (32, 32, 4)) and p.image.dtype == np.uint8
            assert isinstance(p.background_kept, bool)
        event("loaded")


@pytest.mark.timeout(120)
@FUZZ
@given(file=mutated_files())
def test_mutated_real_images(folders, file: tuple[str, bytes]) -> None:
    _write_and_check(folders(), file)


@pytest.mark.timeout(120)
@FUZZ
@given(file=random_files)
def test_random_bytes_as_images(folders, file: tuple[str, bytes]) -> None:
    _write_and_check(folders(), file)


def _write_and_check(folder, file: tuple[str, bytes]) -> None:
    """The fuzzed file beside a good prompt, then the loader's outcome checked."""
    suffix, data = file
    fuzzed = folder / f"fuzzed{suffix}"
    fuzzed.write_bytes(data)
    _check_outcome(folder, fuzzed)


@pytest.mark.timeout(120)
@FUZZ
@given(caption=st.binary(max_size=256), sidecar=st.binary(max_size=256) | st.none())
def test_random_captions_and_sidecars(folders, caption: bytes, sidecar: bytes | None) -> None:
    folder = folders()
    fuzzed = folder / "fuzzed.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(fuzzed)
    (folder / "fuzzed.txt").write_bytes(caption)
    if sidecar is not None:
        (folder / "fuzzed.json").write_bytes(sidecar)
    _check_outcome(folder, fuzzed)
