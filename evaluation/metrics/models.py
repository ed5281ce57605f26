"""The networks behind the metrics, loaded from LOCAL paths only (this project never downloads a
model). With no path, a tiny random stand-in is built so the pipeline runs end to end (tests and
the built-in example); `ModelInfo.random` is then True and the report says so loudly: the numbers
measure nothing.

- CLIP: a Hugging Face `CLIPModel` + `CLIPProcessor` folder (`save_pretrained` layout), e.g. a
  local copy of openai/clip-vit-large-patch14 or laion/CLIP-ViT-H-14-laion2B-s32B-b79K.
- Inception: torch-fidelity's Inception-v3 weights file (pt_inception-2015-12-05-6726825d.pth),
  the network of torchmetrics' InceptionScore/FID; QIS uses its 1008 unbiased logits.
- LPIPS: the `lpips` package's linear heads (shipped inside the package) on a torchvision
  backbone (alex/vgg/squeeze) whose `state_dict` file is given by path; no path -> random backbone.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluation.metrics.qis import Classifier


@dataclass
class ModelInfo:
    """What a metric was computed with; written into results.json and the report."""

    role: str  # "clip", "inception", "lpips"
    name: str
    path: str | None
    random: bool  # True: a random stand-in, the metric's values are meaningless

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"{what} not found at {p}: weights are read from local paths only (no downloads); "
            f"set the path in conf/metrics/ or pass null for a tiny random stand-in"
        )
    return p


# ---------------------------------------------------------------- CLIP


def write_tiny_clip(folder: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Save a tiny random CLIPModel + CLIPProcessor to `folder`, built without any download.

    The tokenizer is CLIP's byte-level BPE with a vocabulary of single bytes (no merges), so every
    text tokenises; with at most 77 tokens long captions are cut, as with the real model.
    """
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars])}
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    vocab[bos], vocab[eos] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config=dict(
            small,
            num_attention_heads=2,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=vocab[bos],
            eos_token_id=vocab[eos],
            pad_token_id=vocab[eos],
        ),
        vision_config=dict(small, num_attention_heads=2, image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    return folder


def load_clip(path: str | None, name: str | None = None) -> tuple[Any, Any, ModelInfo]:
    """(CLIPModel, CLIPProcessor, info) from a local folder; None -> tiny random CLIP."""
    from transformers import CLIPModel, CLIPProcessor

    def load(folder: Path) -> tuple[Any, Any]:
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(
            str(folder), local_files_only=True, use_fast=False
        )
        return model, processor

    if path is None:
        with tempfile.TemporaryDirectory(prefix="tiny_clip_") as tmp:
            model, processor = load(write_tiny_clip(tmp))  # read into memory before cleanup
        return model, processor, ModelInfo("clip", name or "tiny-random-clip", None, True)
    folder = _require(path, "CLIP model folder")
    model, processor = load(folder)
    return model, processor, ModelInfo("clip", name or folder.name, str(folder), False)


# ---------------------------------------------------------------- Inception


class TinyClassifier(nn.Module):
    """A random 2-layer conv classifier standing in for Inception-v3 where no weights exist.

    Takes uint8 (B, 3, H, W) like torch-fidelity's extractor; its QIS is close to 1 (near-uniform
    predictions), which is what an untrained classifier should give.
    """

    def __init__(self, num_classes: int = 1008, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - 128.0) / 128.0  # same input scaling as torch-fidelity
        x = nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))  # (B, N)


def load_inception(path: str | None) -> tuple[Classifier, ModelInfo]:
    """Inception-v3 (torch-fidelity weights file) as a uint8 -> logits classifier."""
    if path is None:
        return TinyClassifier(), ModelInfo("inception", "tiny-random-classifier", None, True)
    from torchmetrics.image.fid import NoTrainInceptionV3

    weights = _require(path, "Inception-v3 weights")
    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["logits_unbiased"],
        feature_extractor_weights_path=str(weights),
    )
    info = ModelInfo(
        "inception", "torch-fidelity inception-v3-compat (logits_unbiased)", str(weights), False
    )
    return net, info


# ---------------------------------------------------------------- LPIPS


def load_lpips(backbone_path: str | None, net: str = "alex") -> tuple[nn.Module, ModelInfo]:
    """lpips.LPIPS with the package's linear heads and a backbone from a local state_dict file.

    `backbone_path` holds a torchvision `alexnet`/`vgg16`/`squeezenet1_1` state_dict (keys
    `features.<i>.*`); lpips would otherwise download it. None -> random backbone.
    """
    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False).eval()
    if backbone_path is None:
        return model, ModelInfo("lpips", f"lpips-{net} (random backbone)", None, True)
    state = torch.load(_require(backbone_path, "LPIPS backbone weights"), map_location="cpu")
    mapped = {}
    for key in model.net.state_dict():
        _slice, index, param = key.split(".", 2)  # "slice1.0.weight"
        source = f"features.{index}.{param}"
        if source not in state:
            raise KeyError(f"{backbone_path} lacks {source}: not a torchvision {net} state_dict")
        mapped[key] = state[source]
    model.net.load_state_dict(mapped)
    return model, ModelInfo("lpips", f"lpips-{net} v0.1", str(backbone_path), False)
