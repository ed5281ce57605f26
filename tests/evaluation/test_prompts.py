"""Prompt preprocessing (authors' tips: re-centred, alpha kept for the pipeline to composite),
bad prompt files skipped and named, prompts without alpha flagged, and held-out rings with
ground truth."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from evaluation import make_default_prompts
from evaluation.evaluate import DEFAULT_PROMPTS
from evaluation.prompts import (
    PromptConfig,
    PromptProblem,
    as_sampled,
    load_heldout_rings,
    load_prompt_folder,
    preprocess,
    recenter,
)
from tests.evaluation.helpers import encoded_image, rgba_object, ring_views, write_ring_shard
from training.prompt_image import composite_on_grey


def test_recenter_fills_the_fraction_and_centres() -> None:
    out = recenter(rgba_object(), size=64, fill_fraction=0.8)
    ys, xs = np.nonzero(out[..., 3] > 127)
    assert max(ys.ptp() + 1, xs.ptp() + 1) == pytest.approx(0.8 * 64, abs=1.5)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(31.5, abs=1.0)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(31.5, abs=1.0)


def test_rgba_prompt_keeps_its_alpha_without_colour_bleed() -> None:
    """Re-centring keeps the alpha (the pipeline composites on the model's grey); the colour
    under alpha 0 does not bleed into the object's edge."""
    cfg = PromptConfig(size=64, fill_fraction=0.8)
    rgba = preprocess(Image.fromarray(rgba_object(), "RGBA"), cfg)
    assert rgba.shape == (64, 64, 4) and rgba[0, 0, 3] == 0
    out = composite_on_grey(rgba, 1.0)
    assert (out[0, 0] == 255).all() and (out[32, 32] == (200, 20, 20)).all()
    green = (out[..., 1] > 150) & (out[..., 0] < 100)  # no halo of the colour under alpha 0
    assert not green.any()


def test_rgb_prompts_are_cropped_square_and_kept() -> None:
    rgb = np.zeros((40, 80, 3), dtype=np.uint8)
    rgb[:, 20:60] = 255
    out = preprocess(Image.fromarray(rgb, "RGB"), PromptConfig(size=32))
    assert out.shape == (32, 32, 3) and (out > 250).all()


def test_an_opaque_rgba_prompt_is_a_photo_cropped_like_rgb(tmp_path) -> None:
    photo = np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    opaque = np.concatenate([photo, np.full((40, 80, 1), 255, np.uint8)], axis=2)
    Image.fromarray(photo, "RGB").save(tmp_path / "a_rgb.png")
    Image.fromarray(opaque, "RGBA").save(tmp_path / "b_rgba.png")
    rgb, rgba = load_prompt_folder(tmp_path, PromptConfig(size=32)).prompts
    assert rgba.background_kept and rgb.background_kept
    np.testing.assert_array_equal(rgba.image, rgb.image)  # not re-centred into a white border


def test_folder_prompts_with_captions_and_ids(tmp_path) -> None:
    Image.fromarray(rgba_object(), "RGBA").save(tmp_path / "b_chair.png")
    (tmp_path / "b_chair.txt").write_text("a red chair\n")
    (tmp_path / "b_chair.json").write_text('{"uid": "chair01", "asset_sha256": "ab"}')
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a_plain.jpg")
    loaded = load_prompt_folder(tmp_path, PromptConfig(size=32))
    prompts = loaded.prompts
    assert [p.name for p in prompts] == ["a_plain", "b_chair"] and loaded.skipped == []
    assert prompts[0].text is None and prompts[1].text == "a red chair"
    assert prompts[1].uid == "chair01" and prompts[1].asset_sha256 == "ab"
    # the RGB photo keeps its background (flagged), the RGBA object does not
    assert prompts[0].background_kept and not prompts[1].background_kept


def test_shipped_default_prompts_are_what_the_script_draws() -> None:
    loaded = load_prompt_folder(DEFAULT_PROMPTS, PromptConfig())
    prompts = loaded.prompts
    assert len(prompts) == len(make_default_prompts.PROMPTS) and all(p.text for p in prompts)
    assert loaded.skipped == [] and not any(p.background_kept for p in prompts)
    for name in make_default_prompts.PROMPTS:
        with Image.open(DEFAULT_PROMPTS / f"{name}.png") as img:
            np.testing.assert_array_equal(
                np.asarray(img), np.asarray(make_default_prompts.draw(name))
            )
    total = sum(p.stat().st_size for p in DEFAULT_PROMPTS.iterdir())
    assert total < 200_000


# ------------------------------------------------------------------ bad prompt files


def _sixteen_bit_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "GIF")
    return buf.getvalue()


def _transparent_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


def _huge_png_header() -> bytes:
    """A valid PNG header claiming 9000 x 9000 pixels (no pixel data): refused before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0)  # 81 M pixels: no bomb error
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# name of the bad file -> (bytes, a word of the reason); each sits beside a good prompt
BAD_IMAGES = {
    "garbage.jpg": (np.random.default_rng(1).bytes(4000), "not a readable"),
    "truncated.jpg": (encoded_image("JPEG")[:1500], "truncated"),
    "truncated.png": (encoded_image("PNG")[: len(encoded_image("PNG")) // 2], "cannot decode"),
    "empty.png": (b"", "empty file"),
    "sixteen_bit.png": (_sixteen_bit_png(), "unsupported image mode"),
    "a_gif.png": (_gif(), "not a readable PNG/JPEG/WEBP"),
    "transparent.png": (_transparent_png(), "alpha channel is empty"),
    "huge.png": (_huge_png_header(), "pixel limit"),
}


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
def test_an_unreadable_image_is_skipped_and_named(tmp_path, bad) -> None:
    data, reason = BAD_IMAGES[bad]
    Image.fromarray(rgba_object(), "RGBA").save(tmp_path / "good.png")
    (tmp_path / bad).write_bytes(data)
    loaded = load_prompt_folder(tmp_path, PromptConfig(size=32))
    assert [p.name for p in loaded.prompts] == ["good"]
    (problem,) = loaded.skipped
    assert problem.path == str(tmp_path / bad)
    assert reason in problem.reason, problem.reason


def test_truncated_jpeg_is_detected_not_decoded_grey(tmp_path) -> None:
    """PIL decodes a truncated JPEG's header fine; only the full decode (load) finds the cut, and
    only while ImageFile.LOAD_TRUNCATED_IMAGES is off (no import may turn it on)."""
    import evaluation.evaluate  # noqa: F401  (everything evaluation imports)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "good.jpg")
    (tmp_path / "cut.jpg").write_bytes(encoded_image("JPEG", size=96)[:2000])
    with Image.open(tmp_path / "cut.jpg") as img:
        assert img.size == (96, 96)  # the header alone looks like a valid image
    (problem,) = load_prompt_folder(tmp_path, PromptConfig(size=32)).skipped
    assert problem == PromptProblem(str(tmp_path / "cut.jpg"), problem.reason)
    assert "image file is truncated" in problem.reason


@pytest.mark.parametrize(
    ("suffix", "data", "reason"),
    [
        (".txt", b"caf\xe9 au lait", "not UTF-8"),
        (".json", b"{uid: chair", "not a readable JSON"),
        (".json", b"[1, 2]", "JSON object"),
        (".json", b'{"uid": 5}', "uid must be a string"),
    ],
)
def test_a_bad_caption_or_sidecar_skips_its_prompt(tmp_path, suffix, data, reason) -> None:
    for name in ("a", "b"):
        Image.fromarray(rgba_object(), "RGBA").save(tmp_path / f"{name}.png")
    (tmp_path / f"b{suffix}").write_bytes(data)
    loaded = load_prompt_folder(tmp_path, PromptConfig(size=32))
    assert [p.name for p in loaded.prompts] == ["a"]
    (problem,) = loaded.skipped
    assert problem.path == str(tmp_path / f"b{suffix}") and reason in problem.reason


def test_a_folder_with_no_usable_prompt_is_refused_by_name(tmp_path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    (tmp_path / "y.png").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 2 prompt images") as info:
        load_prompt_folder(tmp_path, PromptConfig(size=32))
    assert str(tmp_path) in str(info.value) and "y.png: empty file" in str(info.value)


def test_rgb_prompt_is_flagged_and_a_matte_removes_its_background(tmp_path) -> None:
    """Off by default: the photo keeps its background (flagged). With a matting function its
    alpha is applied: the object is re-centred on the configured background, no flag."""
    photo = np.zeros((60, 60, 3), np.uint8)
    photo[...] = (0, 200, 0)  # green backdrop
    photo[20:40, 10:30] = (200, 20, 20)  # red object, off centre
    Image.fromarray(photo).save(tmp_path / "photo.png")
    cfg = PromptConfig(size=32, fill_fraction=0.5)
    (kept,) = load_prompt_folder(tmp_path, cfg).prompts
    assert kept.background_kept and not kept.background_removed
    assert (kept.image[0, 0] == (0, 200, 0)).all()  # the backdrop is still there

    seen = []

    def matte(rgb: np.ndarray) -> np.ndarray:
        seen.append(rgb.shape)
        return np.where((rgb[..., 0] > 100)[..., None], 255, 0).astype(np.uint8)[..., 0]

    (removed,) = load_prompt_folder(tmp_path, cfg, matte).prompts
    assert seen == [(60, 60, 3)]
    assert removed.background_removed and not removed.background_kept
    assert removed.image.shape == (32, 32, 4) and removed.image[0, 0, 3] == 0
    shown = composite_on_grey(removed.image, 1.0)
    assert (shown[0, 0] == 255).all()  # on white: no green anywhere
    assert not ((shown[..., 1] > 150) & (shown[..., 0] < 100)).any()
    assert (shown[16, 16] == (200, 20, 20)).all()  # the object, centred
    ys, _ = np.nonzero(shown[..., 1] < 100)
    assert ys.ptp() + 1 == pytest.approx(0.5 * 32, abs=1)

    def empty(rgb: np.ndarray) -> np.ndarray:
        return np.zeros(rgb.shape[:2], np.uint8)

    Image.fromarray(rgba_object(), "RGBA").save(tmp_path / "object.png")
    loaded = load_prompt_folder(tmp_path, cfg, empty)
    assert [p.name for p in loaded.prompts] == ["object"]  # RGBA: the matte is not asked
    assert "found no object" in loaded.skipped[0].reason


def test_heldout_rings_give_prompt_ground_truth_and_cameras(tmp_path) -> None:
    shard = write_ring_shard(tmp_path / "shards" / "shard-00000.tar", ["duck", "fox"])
    cfg = PromptConfig(size=32)
    prompts = load_heldout_rings(shard.parent, cfg, [0, 90, 180, 270])
    assert [p.name for p in prompts] == ["duck_r0", "fox_r0"]
    duck = prompts[0]
    assert duck.gt_views.shape == (4, 32, 32, 4)  # RGBA: composited once the grey is known
    views = ring_views(8, seed=0)
    for k, index in enumerate([0, 2, 4, 6]):  # azimuth 0/90/180/270 of an 8-view ring
        np.testing.assert_array_equal(duck.gt_views[k], views[index])
    np.testing.assert_array_equal(duck.image, duck.gt_views[0])  # front view, same framing
    assert (duck.elevation_deg, duck.fov_deg) == (12.0, 40.0)
    assert duck.uid == "duck" and duck.text == "a toy duck"
    assert len(load_heldout_rings(shard.parent, cfg, [0, 90, 180, 270], limit=1)) == 1


def test_as_sampled_composites_truth_on_the_prompts_grey(tmp_path) -> None:
    """The true views go on the grey the pipeline drew for the prompt."""
    shard = write_ring_shard(tmp_path / "shards" / "shard-00000.tar", ["duck"])
    (duck,) = load_heldout_rings(shard.parent, PromptConfig(size=32), [0, 90, 180, 270])
    shown = composite_on_grey(duck.image, 0.3)
    sampled = as_sampled(duck, shown, 0.3)
    np.testing.assert_array_equal(sampled.gt_views, composite_on_grey(duck.gt_views, 0.3))
    np.testing.assert_array_equal(sampled.gt_views[0], shown)  # the prompt is the front
    assert not np.array_equal(as_sampled(duck, shown, 0.9).gt_views, sampled.gt_views)
