"""Summary statistics of a per-image metric: mean, std and a 95% confidence interval.

Mean and std are over images (the paper's protocol, SPEC 7). The confidence interval is a
cluster bootstrap over prompts: the 4 views of one prompt come from one sample and are
correlated, so treating them as independent images would make the interval too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class Summary:
    mean: float
    std: float  # sample std over images (ddof=1; 0 for one image)
    ci_low: float  # 95% cluster-bootstrap interval of the mean; nan with fewer than 2 prompts
    ci_high: float
    n_images: int
    n_prompts: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def format(self, digits: int = 2) -> str:
        ci = (
            f" [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"
            if math.isfinite(self.ci_low) and math.isfinite(self.ci_high)
            else ""
        )
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}{ci}"


def summarize(per_prompt: Sequence[Sequence[float]], seed: int = 0) -> Summary:
    """Summary of a metric given its per-image values grouped by prompt.

    `per_prompt[i]` holds the values of prompt i's images (its generated views).
    """
    groups = [np.asarray(g, dtype=np.float64).ravel() for g in per_prompt if len(g)]
    if not groups:
        nan = float("nan")
        return Summary(nan, nan, nan, nan, 0, 0)
    values = np.concatenate(groups)
    with np.errstate(invalid="ignore"):  # inf values (PSNR of identical images) stay inf
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    low = high = float("nan")
    if len(groups) > 1:
        rng = np.random.default_rng(seed)
        sums = np.array([g.sum() for g in groups])
        counts = np.array([g.size for g in groups])
        picks = rng.integers(0, len(groups), size=(BOOTSTRAP_RESAMPLES, len(groups)))
        alpha = (1.0 - CONFIDENCE) / 2.0
        with np.errstate(invalid="ignore"):
            means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
            low, high = (float(q) for q in np.quantile(means, [alpha, 1.0 - alpha]))
    return Summary(mean, std, low, high, int(values.size), len(groups))
