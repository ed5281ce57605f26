"""Background removal for prompts without alpha: off by default (such prompts are flagged and
logged), a missing model folder refused by name, and a tiny random transformers segmentation
model saved in tmp_path whose matte is applied (no downloads)."""

from __future__ import annotations

import logging
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from contract.hydra_compose import compose
from evaluation.config import EvalConfig, register_configs, to_eval_config
from evaluation.evaluate import collect_prompts
from evaluation.matting import load_matte, object_alpha
from evaluation.prompts import PromptConfig


def _photo_folder(folder: Path) -> Path:
    """One RGB photo: a red object on a green backdrop."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = np.zeros((40, 40, 3), np.uint8)
    photo[...] = (0, 200, 0)
    photo[10:30, 10:30] = (200, 20, 20)
    Image.fromarray(photo).save(folder / "photo.jpg")
    return folder


def _tiny_segmenter(folder: Path, object_logit: float) -> Path:
    """A randomly initialised 2-label SegFormer (background / object) with its image processor,
    saved with save_pretrained. Its classifier is zeroed, so every pixel gets the logits of its
    bias: `object_logit` > 0 -> all object, < 0 -> all background (a known answer)."""
    import torch
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
    )

    config = SegformerConfig(
        num_encoder_blocks=1,
        depths=[1],
        sr_ratios=[1],
        hidden_sizes=[8],
        patch_sizes=[3],
        strides=[2],
        num_attention_heads=[1],
        mlp_ratios=[1],
        decoder_hidden_size=8,
        id2label={0: "background", 1: "object"},
        label2id={"background": 0, "object": 1},
    )
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(config)
    with torch.no_grad():
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.copy_(torch.tensor([0.0, object_logit]))
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _config(prompts: Path, remove_background: str | None = None) -> EvalConfig:
    return EvalConfig(
        checkpoint="unused",
        prompts=str(prompts),
        prompt=PromptConfig(size=32, remove_background=remove_background),
    )


def test_off_by_default_prompts_without_alpha_are_flagged_and_logged(tmp_path, caplog) -> None:
    register_configs()
    cfg = to_eval_config(compose("eval", ["checkpoint=x"]))
    assert cfg.prompt.remove_background is None and PromptConfig().remove_background is None
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        (prompt,), skipped = collect_prompts(_config(_photo_folder(tmp_path / "p")))
    assert prompt.background_kept and not prompt.background_removed and skipped == []
    assert "photo" in caplog.text and "used with its background" in caplog.text


def test_a_missing_or_unfit_model_folder_is_refused_by_name(tmp_path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="nothing is downloaded") as info:
        collect_prompts(_config(_photo_folder(tmp_path / "p"), str(missing)))
    assert str(missing) in str(info.value)
    unfit = _tiny_segmenter(tmp_path / "unfit", 1.0)
    (unfit / "config.json").write_text(
        (unfit / "config.json").read_text().replace('"background"', '"sky"')
    )
    with pytest.raises(ValueError, match="no 'background' label"):
        load_matte(unfit)


def test_object_alpha_is_the_union_of_the_non_background_masks() -> None:
    a, b, bg = (np.zeros((4, 4), np.uint8) for _ in range(3))
    a[0, 0], b[3, 3], bg[1:3, 1:3] = 255, 255, 255
    segments = [
        {"label": "cup", "mask": Image.fromarray(a)},
        {"label": "Background", "mask": Image.fromarray(bg)},
        {"label": "saucer", "mask": Image.fromarray(b)},
    ]
    alpha = object_alpha(segments, (4, 4))
    assert alpha.dtype == np.uint8 and set(zip(*np.nonzero(alpha), strict=True)) == {
        (0, 0),
        (3, 3),
    }


def test_a_local_segmentation_model_removes_the_background(tmp_path, monkeypatch) -> None:
    """The real transformers pipeline, read from disk, offline, with the downloader patched to
    fail."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = _photo_folder(tmp_path / "p")
    everything = _tiny_segmenter(tmp_path / "all_object", 5.0)
    nothing = _tiny_segmenter(tmp_path / "all_background", -5.0)
    with mock.patch(
        "transformers.utils.hub.hf_hub_download",
        side_effect=AssertionError("download attempted"),
    ):
        (prompt,), skipped = collect_prompts(_config(prompts, str(everything)))
        assert prompt.background_removed and not prompt.background_kept and skipped == []
        # all object: the whole photo is re-centred at fill_fraction, transparent around it
        assert prompt.image.shape[-1] == 4 and prompt.image[0, 0, 3] == 0
        np.testing.assert_allclose(prompt.image[16, 16], (200, 20, 20, 255), atol=12)  # JPEG
        with pytest.raises(ValueError, match="none of the 1 prompt images") as info:
            collect_prompts(_config(prompts, str(nothing)))
    assert "found no object" in str(info.value)
