"""`make eval`: sample a model on held-out prompts, score it, write the HTML report.

    python -m evaluation.evaluate checkpoint=runs/NAME/export [prompts=DIR]
        [heldout_shards=OUT/shards] [leakage.training_shards=[TRAIN/shards]]
        [sampler.num_inference_steps=50] [metrics=local] [compare=[runs/OTHER/export]]

Reads top to bottom: prompts, leakage check, metric networks, then per checkpoint: load,
sample, score; finally the report (and W&B). Prompt files that cannot be used are skipped,
logged and listed in the report; prompts used with their background are flagged the same way.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from contract.cameras import CANONICAL_AZIMUTHS_DEG
from contract.hydra_compose import CONF_DIR, VERSION_BASE
from contract.lease import FolderBusy, folder_lease
from evaluation.baselines import LearningCheck, baseline_scores, learning_check, mean_training_view
from evaluation.checkpoints import (
    checkpoint_label,
    load_pipeline,
    loss_curve_of,
    training_shards_of,
)
from evaluation.config import EvalConfig, register_configs, to_eval_config
from evaluation.leakage import check_leakage
from evaluation.metrics import (
    LPIPS,
    QIS,
    ClipScorer,
    ModelInfo,
    load_clip,
    load_inception,
    load_lpips,
    psnr,
    ssim,
    summarize,
)
from evaluation.prompts import (
    EvalPrompt,
    PromptProblem,
    as_sampled,
    load_heldout_rings,
    load_prompt_folder,
)
from evaluation.report import fit_square, log_wandb, write_report
from evaluation.results import PromptResult, RunResult
from evaluation.sampler import MultiViewSampler

log = logging.getLogger("evaluation")

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "default_prompts"


class Scorers:
    """The metric networks, loaded once for every checkpoint."""

    def __init__(self, cfg: EvalConfig) -> None:
        m = cfg.metrics
        clip_model, processor, clip_info = load_clip(m.clip.path, m.clip.name)
        classifier, inception_info = load_inception(m.inception.path)
        inception_info.name += f"; QIS over {m.qis_classes} classes"
        lpips_net, lpips_info = load_lpips(m.lpips.backbone_path, m.lpips.net)
        self.clip = ClipScorer(clip_model, processor, m.batch_size)
        self.qis = QIS(classifier, m.batch_size, m.qis_classes)
        self.lpips = LPIPS(lpips_net, m.batch_size)
        self.infos: list[ModelInfo] = [clip_info, inception_info, lpips_info]

    def score(
        self, prompt: EvalPrompt, views: np.ndarray, mean_view: np.ndarray | None = None
    ) -> dict[str, list[float]]:
        """Per-view scores of one prompt's generated views (V, H, W, 3) (and, with ground
        truth, of the baselines: the prompt copied, the mean training view). `prompt` is as
        sampled (`as_sampled`): its image and true views composited on its grey."""
        scores = {
            "qis": self.qis(views),
            "clip_im": self.clip.image_scores(views[None], prompt.image[None])[0],
        }
        if prompt.text:
            scores["clip_tx"] = self.clip.text_scores(views[None], [prompt.text])[0]
        if prompt.gt_views is not None:
            # view 0 (azimuth 0) apart from the novel views: for pixel variants it is nearly
            # the prompt itself, and would flatter the novel-view numbers (SPEC 7)
            gt = resize_views(prompt.gt_views, views.shape[1])
            for suffix, sl in (("", slice(1, None)), ("_front", slice(0, 1))):
                scores |= {
                    f"psnr{suffix}": psnr(views[sl], gt[sl]),
                    f"ssim{suffix}": ssim(views[sl], gt[sl]),
                    f"lpips{suffix}": self.lpips(views[sl], gt[sl]),
                }
            scores |= baseline_scores(prompt.image, gt[1:], mean_view)
        return {k: [float(x) for x in v] for k, v in scores.items()}


def collect_prompts(cfg: EvalConfig) -> tuple[list[EvalPrompt], list[PromptProblem]]:
    """The prompts to evaluate, and the prompt files skipped (each logged with its reason)."""
    prompts: list[EvalPrompt] = []
    skipped: list[PromptProblem] = []
    folder = cfg.prompts if cfg.prompts is not None else DEFAULT_PROMPTS
    if cfg.prompts is not None or cfg.default_prompts:
        matte = None
        if cfg.prompt.remove_background is not None:
            from evaluation.matting import load_matte

            matte = load_matte(cfg.prompt.remove_background, cfg.device)
        loaded = load_prompt_folder(folder, cfg.prompt, matte)
        prompts += loaded.prompts
        skipped += loaded.skipped
    if cfg.heldout_shards is not None:
        prompts += load_heldout_rings(
            cfg.heldout_shards,
            cfg.prompt,
            CANONICAL_AZIMUTHS_DEG,
            cfg.heldout_limit,
            allow_incomplete=cfg.allow_incomplete,
        )
    names = [p.name for p in prompts]
    if len(set(names)) != len(names):
        raise ValueError(f"prompt names must be unique, got {names}")
    for problem in skipped:
        log.warning("skipped prompt %s", problem.line())
    for p in prompts:
        if p.background_kept:
            log.warning(
                "prompt %s (%s) has no alpha (no transparent pixel): used with its background, "
                "which the paper's protocol removes (prompt.remove_background=MODEL_DIR, "
                "docs/EVALUATION.md)",
                p.name,
                p.source,
            )
    return prompts, skipped


def evaluate_checkpoint(
    checkpoint: str,
    prompts: list[EvalPrompt],
    scorers: Scorers,
    cfg: EvalConfig,
    leaked: set[str],
    training_shards: list[str] | None = None,
) -> RunResult:
    pipe = load_pipeline(checkpoint, cfg.original).to(cfg.device)
    model = pipe.model
    sampler = MultiViewSampler(pipe, cfg.sampler)
    mean_view = None
    if training_shards and any(p.gt_views is not None for p in prompts):
        mean_view = mean_training_view(
            training_shards, sampler.resolution, allow_incomplete=cfg.allow_incomplete
        )
    log.info("sampling %d prompts with %s (%s)", len(prompts), checkpoint, model.controller_name)
    start = time.perf_counter()
    samples = sampler.sample(
        [fit_square(p.image, cfg.prompt.size) for p in prompts],
        [p.text for p in prompts],
        elevations_deg=[p.elevation_deg for p in prompts],  # None: the sampler's
        fovs_deg=[p.fov_deg for p in prompts],
        background=cfg.prompt.background,
    )
    seconds = (time.perf_counter() - start) / max(len(prompts), 1)
    results = []
    for i, prompt in enumerate(prompts):
        level = float(samples.background[i])
        p = as_sampled(prompt, samples.prompt_images[i], level)
        views = samples.views[i]
        results.append(
            PromptResult(
                name=p.name,
                text=p.text,
                source=p.source,
                prompt_image=p.image,
                views=views,
                gt_views=None if p.gt_views is None else resize_views(p.gt_views, views.shape[1]),
                scores=scorers.score(p, views, None if mean_view is None else mean_view.on(level)),
                seed=samples.seeds[i],
                elevation_deg=float(samples.elevation_deg[i]),
                fov_deg=float(samples.fov_deg[i]),
                leaked=p.name in leaked,
                background_kept=p.background_kept,
                background_removed=p.background_removed,
            )
        )
    check = learning_check([r.scores for r in results], cfg.learning_bar_db)
    keys = sorted({k for r in results for k in r.scores})
    summary = {
        k: summarize([r.scores[k] for r in results if k in r.scores], cfg.metrics.bootstrap_seed)
        for k in keys
    }
    return RunResult(
        label=checkpoint_label(checkpoint),
        checkpoint=str(checkpoint),
        controller=model.controller_name,
        prompts=results,
        summary=summary,
        seconds_per_prompt=seconds,
        azimuths_deg=[float(a) for a in samples.azimuths_deg],
        info={
            "sampler": asdict(cfg.sampler),
            "sampled_with": asdict(samples.settings),
            "prompt_image": asdict(pipe.prompt_image_config),
            "prompt_background": cfg.prompt.background,
            "pixel_latent": model.cfg.pixel_latent,
            "resolution": sampler.resolution,
            "unconditional": model.cfg.unconditional,
            "learning_check": None if check is None else check.to_dict(),
            "loss_curve": loss_curve_of(checkpoint),
        },
    )


def run(cfg: EvalConfig) -> Path:
    """Evaluate every checkpoint; returns the report's index.html. The evaluation holds its
    output folder's lease throughout (contract.lease): a second evaluation into the same folder
    stops at once, naming this one. Process-wide torch state (threads) is restored afterwards,
    so callers such as tests are not affected."""
    threads = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        with folder_lease(cfg.output_dir, "evaluation"), torch.no_grad():
            return _run(cfg)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: EvalConfig) -> Path:
    prompts, skipped = collect_prompts(cfg)
    checkpoints = [c for c in [cfg.checkpoint, *cfg.compare] if c is not None]
    training_shards = list(cfg.leakage.training_shards)
    if cfg.leakage.from_run:
        training_shards += [s for c in checkpoints for s in training_shards_of(c)]
    leakage = check_leakage(
        prompts, sorted(set(training_shards)), cfg.leakage.mode, cfg.allow_incomplete
    )
    leaked = {leak.prompt for leak in leakage.leaks}
    for name in sorted(leaked):
        log.warning("prompt %s is in the training shards (leakage.mode=flag)", name)
    scorers = Scorers(cfg)
    for info in scorers.infos:
        if info.random:
            log.warning(
                "%s metric uses a RANDOM stand-in (%s): its numbers mean nothing",
                info.role,
                info.name,
            )
    shards = sorted(set(training_shards))
    runs = [evaluate_checkpoint(c, prompts, scorers, cfg, leaked, shards) for c in checkpoints]
    config = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    index = write_report(
        cfg.output_dir, runs, scorers.infos, leakage.to_dict(), config, skipped=skipped
    )
    if cfg.wandb.mode != "disabled":
        log_wandb(runs, scorers.infos, cfg.wandb, config, cfg.output_dir)
    for r in runs:
        line = ", ".join(f"{k} {s.format()}" for k, s in r.summary.items())
        log.info("%s: %s", r.label, line)
        check = r.info.get("learning_check")
        if check is not None:
            log.info(
                "%s: %s",
                r.label,
                LearningCheck(**{k: v for k, v in check.items() if k != "passed"}).line(),
            )
    if skipped:
        log.warning("%d prompt file(s) skipped, listed in the report", len(skipped))
    log.info("report: %s", index)
    return index


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base=VERSION_BASE)
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(to_eval_config(cfg))
    except FolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    register_configs()
    _hydra_main()


# ------------------------------------------------------------------ helpers


def resize_views(views: np.ndarray, size: int) -> np.ndarray:
    """(V, H, W, 3) uint8 -> (V, size, size, 3)"""
    return np.stack([fit_square(v, size) for v in views])


if __name__ == "__main__":
    main()
