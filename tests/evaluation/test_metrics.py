"""The metrics: QIS limits, CLIP against torchmetrics' CLIPScore, PSNR/SSIM/LPIPS on known
pairs, the summary statistics, and loading the networks from local paths only."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch

from evaluation.metrics import (
    LPIPS,
    QIS,
    ClipScorer,
    load_clip,
    load_inception,
    load_lpips,
    psnr,
    psnr_over_all,
    qis_from_probs,
    ssim,
    summarize,
)


def _images(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------ QIS


@pytest.mark.parametrize("num_classes", [10, 1008])
def test_qis_one_hot_is_n_and_uniform_is_one(num_classes: int) -> None:
    one_hot = torch.zeros(3, num_classes)
    one_hot[torch.arange(3), torch.tensor([0, 4, 7])] = 1.0
    uniform = torch.full((2, num_classes), 1.0 / num_classes)
    assert torch.allclose(qis_from_probs(one_hot), torch.full((3,), float(num_classes)).double())
    assert torch.allclose(qis_from_probs(uniform), torch.ones(2).double())


def test_qis_of_two_equal_classes_is_half_n() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0, 0.0]])
    assert qis_from_probs(probs).item() == pytest.approx(3.0)


def test_qis_runs_the_classifier_per_image() -> None:
    """A callable classifier that is certain of one class gives N for every image."""
    seen = []

    def classifier(x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape[1] == 3  # (B, 3, H, W) uint8
        seen.append(x.shape[0])
        logits = torch.full((x.shape[0], 5), -1e4)
        logits[:, 2] = 0.0
        return logits

    scores = QIS(classifier, batch_size=2)(_images(5))
    assert seen == [2, 2, 1]
    np.testing.assert_allclose(scores, 5.0)


def test_qis_over_the_1000_imagenet_classes_of_the_1008_logits() -> None:
    """metrics.qis_classes=1000 keeps logits 1..1000 of the TF Inception (0 is background,
    1001..1007 unused) and normalises by N = 1000."""

    def classifier(x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros((x.shape[0], 1008))
        logits[:, 0] = logits[:, 1001:] = -1e4  # no mass outside the real classes
        return logits

    full = QIS(classifier, num_classes=1008)(_images(2))
    real = QIS(classifier, num_classes=1000)(_images(2))
    np.testing.assert_allclose(real, 1.0, rtol=1e-9)  # uniform over the 1000 real classes
    np.testing.assert_allclose(full, 1008 / 1000, rtol=1e-6)  # ... seen as 1000 of 1008
    with pytest.raises(ValueError, match="1000 classes"):
        QIS(lambda x: torch.zeros((x.shape[0], 5)), num_classes=1000)(_images(1))


def test_inception_loads_from_a_local_file_without_download(tmp_path) -> None:
    """The torch-fidelity network is built from a local weights file (random here) and never
    calls the downloader; the tiny stand-in is flagged random."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        weights = tmp_path / "empty.pth"
        torch.save({}, weights)
        random_net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["logits_unbiased"], str(weights)
        )
    torch.save(random_net.state_dict(), weights)
    with mock.patch(
        "torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url",
        side_effect=AssertionError("download attempted"),
    ):
        net, info = load_inception(str(weights))
    assert not info.random and info.path == str(weights)
    logits = net(torch.from_numpy(_images(2, 64)).permute(0, 3, 1, 2))
    assert logits.shape == (2, 1008)
    _, tiny = load_inception(None)
    assert tiny.random
    with pytest.raises(FileNotFoundError, match="local paths only"):
        load_inception(str(tmp_path / "missing.pth"))


# ------------------------------------------------------------------ CLIP


def test_clip_scores_equal_torchmetrics_clipscore(tiny_clip_dir) -> None:
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor, info = load_clip(str(tiny_clip_dir), name="tiny-test-clip")
    assert info.name == "tiny-test-clip" and not info.random
    scorer = ClipScorer(model, processor, batch_size=3)
    views = _images(8, 40, seed=1).reshape(2, 4, 40, 40, 3)
    prompts = _images(2, 56, seed=2)
    texts = ["a red toy duck, 3d asset", "a blue gem"]
    tx, im = scorer.text_scores(views, texts), scorer.image_scores(views, prompts)
    assert tx.shape == im.shape == (2, 4)

    # torchmetrics' public CLIPScore clamps at 0 (ours is the raw cosine, SPEC 7); its update
    # function gives the unclamped value, so compare with both
    reference = CLIPScore(model_name_or_path=lambda: (model, processor))
    for b in range(2):
        for v in range(4):
            view = torch.from_numpy(views[b, v]).permute(2, 0, 1)
            prompt = torch.from_numpy(prompts[b]).permute(2, 0, 1)
            for ours, target in ((tx[b, v], texts[b]), (im[b, v], prompt)):
                assert max(ours, 0.0) == pytest.approx(
                    _clipscore(reference, [view], [target]), abs=1e-3
                )
                with torch.no_grad():
                    raw, _ = _clip_score_update([view], [target], model, processor)
                assert ours == pytest.approx(float(raw[0]), abs=1e-3)
    # an image compared with itself is 100
    same = scorer.image_scores(prompts[:, None], prompts)
    np.testing.assert_allclose(same, 100.0, atol=1e-3)


def _clipscore(metric, source, target) -> float:
    metric.reset()
    with torch.no_grad():
        return float(metric(source, target))


# ------------------------------------------------------------------ PSNR / SSIM / LPIPS


def test_identical_images_give_inf_one_zero() -> None:
    a = _images(3)
    assert np.all(np.isinf(psnr(a, a)))
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-6)
    net, info = load_lpips(None)
    assert info.random
    np.testing.assert_allclose(LPIPS(net)(a, a), 0.0, atol=1e-6)


def test_psnr_of_a_known_noise_pair_is_analytic() -> None:
    """Adding +-d to every channel value gives MSE = (d/255)^2, PSNR = 20 log10(255/d)."""
    rng = np.random.default_rng(3)
    base = rng.integers(20, 236, (2, 32, 32, 3)).astype(np.int16)
    for d in (1, 5, 16):
        sign = rng.choice([-1, 1], size=base.shape)
        noisy = (base + d * sign).astype(np.uint8)
        expected = 20 * math.log10(255.0 / d)
        np.testing.assert_allclose(psnr(noisy, base.astype(np.uint8)), expected, atol=1e-6)


def test_psnr_over_all_pools_the_squared_error_of_every_value() -> None:
    """Two RGBA views, one equal and one off by 16 everywhere: MSE 16^2 / 2 over the pair (a
    mean of per-view PSNRs would be inf)."""
    a = np.zeros((2, 4, 4, 4), dtype=np.uint8)
    assert psnr_over_all(a, a) == math.inf
    b = a.copy()
    b[1] = 16
    np.testing.assert_allclose(psnr_over_all(a, b), 10 * math.log10(255**2 / 128), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        psnr_over_all(a.astype(np.float32), b.astype(np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_over_all(a, b[:1])


def test_ssim_and_lpips_order_a_small_and_a_large_perturbation() -> None:
    rng = np.random.default_rng(4)
    a = _images(2, 64, seed=5)
    small = np.clip(a + rng.normal(0, 4, a.shape), 0, 255).astype(np.uint8)
    large = np.clip(a + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    assert np.all(ssim(small, a) > ssim(large, a))
    net, _ = load_lpips(None)
    metric = LPIPS(net)
    assert np.all(metric(small, a) < metric(large, a))


def test_lpips_backbone_loads_from_a_torchvision_state_dict(tmp_path) -> None:
    import torchvision

    torch.manual_seed(0)
    backbone = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(backbone.state_dict(), path)
    net, info = load_lpips(str(path), "alex")
    assert not info.random and info.path == str(path)
    assert torch.equal(net.net.slice2._modules["3"].weight, backbone.features[3].weight)
    torch.save({"wrong": torch.zeros(1)}, path)
    with pytest.raises(KeyError, match=r"features.0.weight"):
        load_lpips(str(path), "alex")


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(_images(1, 32), _images(1, 48))


# ------------------------------------------------------------------ statistics


def test_summary_mean_std_and_cluster_bootstrap_interval() -> None:
    groups = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0, 7.0]]
    s = summarize(groups)
    flat = np.concatenate([np.array(g) for g in groups])
    assert s.mean == pytest.approx(flat.mean()) and s.std == pytest.approx(flat.std(ddof=1))
    assert s.n_images == 7 and s.n_prompts == 3
    assert s.ci_low <= s.mean <= s.ci_high and s.ci_low >= 1.5 and s.ci_high <= 6.0
    assert math.isnan(summarize([[1.0, 2.0]]).ci_low)  # one prompt: no interval
    assert summarize([]).n_images == 0
    assert "±" in s.format()
