"""Quality-only Inception Score (SPEC 7).

The Inception Score of a set is exp(E_x KL(p(y|x) || p(y))). ImageDream's QIS scores one image
at a time by replacing the marginal p(y) with the uniform distribution over the N classes:

    QIS(x) = exp(sum_i p_i log(N p_i)),  p = softmax(classifier(x))

so a one-hot prediction scores N (a confident classifier) and a uniform one scores 1.

The classifier is any callable mapping uint8 images (B, 3, H, W) to class logits (B, N): the
torch-fidelity Inception-v3 (the network behind torchmetrics' InceptionScore) loaded from a local
weights file, or a tiny random network for tests and the built-in example (see `models.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Classifier = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) uint8 -> (B, N) logits


def qis_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """Per-image QIS from class probabilities.  (B, N) -> (B,)

    Uses the convention 0 log 0 = 0, so exactly one-hot rows are exactly N.
    """
    probs = probs.double()
    num_classes = probs.shape[-1]
    terms = torch.where(probs > 0, probs * torch.log(num_classes * probs), torch.zeros_like(probs))
    return torch.exp(terms.sum(dim=-1))


# The TF Inception-v3 (torch-fidelity's port, the network of the IS/FID literature) has 1008
# logits: index 0 is "background", 1..1000 the ImageNet classes, 1001..1007 unused.
QIS_CLASSES = (1008, 1000)
_IMAGENET = slice(1, 1001)


class QIS:
    """Per-image QIS of uint8 images with a fixed classifier, over `num_classes` classes: 1008
    (all logits of the TF Inception, N = 1008) or 1000 (its real ImageNet classes, logits 1..1000,
    N = 1000); None takes every logit the classifier gives. The paper does not say which; the
    report names the choice."""

    def __init__(
        self, classifier: Classifier, batch_size: int = 16, num_classes: int | None = None
    ) -> None:
        self.classifier = classifier
        self.batch_size = batch_size
        self.num_classes = num_classes

    def _select(self, logits: torch.Tensor) -> torch.Tensor:
        width = logits.shape[-1]
        if self.num_classes is None or width == self.num_classes:
            return logits
        if self.num_classes == 1000 and width == 1008:
            return logits[:, _IMAGENET]  # (b, 1000)
        raise ValueError(f"QIS over {self.num_classes} classes, but the classifier gives {width}")

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B,) float64"""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size]))
            logits = self.classifier(batch.permute(0, 3, 1, 2).contiguous())  # (b, N)
            logits = self._select(logits)
            out.append(qis_from_probs(torch.softmax(logits.double(), dim=-1)))
        return torch.cat(out).numpy() if out else np.zeros(0)
