"""CLIP(TX) and CLIP(IM) (SPEC 7): 100 x cosine between a generated view and the text, or the
image prompt, in the embedding space of a Hugging Face `CLIPModel`.

Same computation as torchmetrics' `CLIPScore` (the processor is called the same way, features
are L2-normalised, x 100), per pair instead of averaged, and without its clamp at 0: SPEC 7 asks
for the cosine itself. The model and processor come from a local folder (`models.load_clip`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class ClipScorer:
    def __init__(self, model: Any, processor: Any, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size

    @torch.no_grad()
    def image_features(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, D) L2-normalised"""
        feats = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
                for im in images[start : start + self.batch_size]
            ]
            inputs = self.processor(images=chunk, return_tensors="pt", padding=True)
            feats.append(self.model.get_image_features(inputs["pixel_values"]))
        return _normalise(torch.cat(feats))

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """B strings -> (B, D) L2-normalised; texts longer than the model's context are cut."""
        max_len = self.model.config.text_config.max_position_embeddings
        feats = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.processor(
                text=list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_len,
            )
            feats.append(
                self.model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
            )
        return _normalise(torch.cat(feats))

    def text_scores(self, views: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """CLIP(TX) of every view with its prompt's text.  views (B, V, H, W, 3) -> (B, V)"""
        b, v = views.shape[:2]
        img = self.image_features(views.reshape(b * v, *views.shape[2:])).view(b, v, -1)
        txt = self.text_features(texts)  # (B, D)
        return (100.0 * torch.einsum("bvd,bd->bv", img, txt)).double().numpy()

    def image_scores(self, views: np.ndarray, prompts: np.ndarray) -> np.ndarray:
        """CLIP(IM) of every view with its image prompt.  views (B, V, H, W, 3), prompts
        (B, H', W', 3) -> (B, V)"""
        b, v = views.shape[:2]
        img = self.image_features(views.reshape(b * v, *views.shape[2:])).view(b, v, -1)
        ref = self.image_features(prompts)  # (B, D)
        return (100.0 * torch.einsum("bvd,bd->bv", img, ref)).double().numpy()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(p=2, dim=-1, keepdim=True)
