"""Train one ImageDream variant: `python -m training.train controller=pixel data.shards=...`.

Also `torchrun --nproc_per_node N -m training.train ...` and
`deepspeed --num_gpus N --module training.train ...` (see docs/TRAINING.md). Build, loop, close.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from contract.hydra_compose import CONF_DIR, VERSION_BASE
from contract.lease import FolderBusy, FolderLease, acquire
from training.checkpoint import (
    export_model,
    prepare_run_dir,
    restore_training_state,
    save_checkpoint,
    write_run_config,
)
from training.config import TrainConfig, load_config, register_configs
from training.data import Loader, build_loader
from training.diffusion import Diffusion, TrainingObjective
from training.ema import EMA
from training.engine import (
    DistInfo,
    Engine,
    barrier,
    broadcast_from_main,
    build_engine,
    init_distributed,
)
from training.pipeline import ImageDreamPipeline
from training.run_layout import RunLayout
from training.tracking import Tracker, build_tracker, sample_grid

log = logging.getLogger("training")


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) the training run described by `cfg`; returns its run folder. The run
    holds its folder's lease throughout (contract.lease): a second training on the same run
    folder stops at once, naming this one."""
    dist = init_distributed(cfg.engine.backend)
    run_dir = prepare_run_dir(cfg, dist.is_main)
    lease = lease_run_folder(run_dir, dist)
    try:
        return _train(cfg, dist, run_dir)
    finally:
        if lease is not None:
            lease.release()


def lease_run_folder(run_dir: Path, dist: DistInfo) -> FolderLease | None:
    """Rank 0 takes the run folder's lease before any rank writes in it; every rank stops with
    FolderBusy when it could not (all processes of one run share rank 0's lease)."""
    lease, refusal = None, None
    if dist.is_main:
        try:
            lease = acquire(run_dir, "training run")
        except FolderBusy as exc:
            refusal = str(exc)
    refusal = broadcast_from_main(refusal)
    if refusal is not None:
        raise FolderBusy(refusal)
    return lease


def _train(cfg: TrainConfig, dist: DistInfo, run_dir: Path) -> Path:
    from training.model import build_imagedream

    seed_everything(cfg.trainer.seed, dist.rank)
    model = build_imagedream(cfg.model, cfg.controller)
    if cfg.trainer.export:  # refuse now, not after the last step
        reason = ImageDreamPipeline.unsaveable_reason(model)
        if reason is not None:
            raise ValueError(f"trainer.export=true cannot be met: {reason}")
    diffusion = Diffusion(objective=cfg.objective)  # the noise process and its loss (SPEC 4-5)
    engine = build_engine(TrainingObjective(model, diffusion), cfg, dist)
    ema = build_ema(engine, cfg.engine.ema_decay)
    loader = build_loader(cfg.data, cfg.trainer.seed, dist.rank, dist.world_size)
    step = restore_training_state(cfg, run_dir, engine, loader, ema, dist.rank)
    write_run_config(cfg, run_dir, dist.is_main)  # only now: a refused resume changes nothing
    tracker = build_tracker(cfg, run_dir, dist.is_main, start_step=step)
    if step and dist.is_main:
        log.info("resumed %s at step %d of %d", run_dir, step, cfg.trainer.max_steps)
    saved_at = step

    while step < cfg.trainer.max_steps:
        metrics = train_step(engine, loader, cfg)
        step += 1
        if ema is not None:
            ema.update()
        log_metrics(tracker, engine, loader, metrics, step, cfg)
        if cfg.trainer.ckpt_every and step % cfg.trainer.ckpt_every == 0:
            save_checkpoint(cfg, run_dir, engine, loader, ema, step)
            saved_at = step
        if cfg.trainer.sample_every and step % cfg.trainer.sample_every == 0:
            log_samples(tracker, engine, ema, cfg, step)

    if saved_at != step:
        save_checkpoint(cfg, run_dir, engine, loader, ema, step)
    if cfg.trainer.export:
        layout = RunLayout(run_dir)
        export_model(engine, ema, layout.export, cfg.data.prompt_image(), cfg.sampling_settings())
    tracker.close()
    engine.close()
    return run_dir


def build_ema(engine: Engine, decay: float) -> EMA | None:
    return EMA(engine.trainable_named_parameters(), decay) if decay > 0 else None


def seed_everything(seed: int, rank: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def train_step(engine: Engine, loader: Loader, cfg: TrainConfig) -> dict[str, float]:
    """One optimiser step: `engine.grad_accum` micro-batches from the stream, each one's loss
    `diffusion.loss(model, batch)` through DeepSpeed (Engine.train_step)."""
    start = time.perf_counter()
    micro_batches = [next(loader) for _ in range(cfg.engine.grad_accum)]
    loaded = time.perf_counter()
    out = engine.train_step(micro_batches)
    done = time.perf_counter()
    return {
        "train/loss": out.loss,
        "train/lr": out.lr,
        "train/grad_norm": out.grad_norm,
        "perf/samples_per_s": out.samples / (done - start),
        "perf/data_wait_s": loaded - start,
        "perf/step_s": done - start,
    }


def log_metrics(
    tracker: Tracker,
    engine: Engine,
    loader: Loader,
    metrics: dict[str, float],
    step: int,
    cfg: TrainConfig,
) -> None:
    """Every rank takes part (the loss, the bad-sample count and the store retries are reduced
    over ranks)."""
    tracker.advance()
    if step % cfg.trainer.log_every and step != cfg.trainer.max_steps:
        return
    metrics = dict(metrics)
    metrics["train/loss"] = engine.mean_over_ranks(metrics["train/loss"])
    metrics["data/bad_samples"] = float(engine.distinct_over_ranks(loader.state.distinct_bad))
    dropped = set().union(*loader.state.dropped)
    metrics["data/dropped_rings"] = float(engine.distinct_over_ranks(dropped))
    retries = sum(loader.state.store_retries)  # this rank's data streams, since the run began
    metrics["data/store_retries"] = float(
        round(engine.mean_over_ranks(retries) * engine.dist.world_size)
    )
    metrics["perf/peak_memory_gib"] = engine.peak_memory_gib()
    metrics["train/samples_seen"] = float(
        step * cfg.data.batch_size * cfg.engine.grad_accum * engine.dist.world_size
    )
    tracker.log(metrics, step)


def log_samples(
    tracker: Tracker, engine: Engine, ema: EMA | None, cfg: TrainConfig, step: int
) -> None:
    """A grid per prompt (prompt image beside the generated views). Every rank samples the
    same grid (ZeRO-3 needs all ranks in the forward); rank 0 logs it."""
    grid, caption = sample_grid(engine.model, ema, cfg)
    tracker.log_image("samples/grid", grid, step, caption)
    barrier()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=VERSION_BASE)
def _hydra_main(dictconfig: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        train(load_config(dictconfig))
    except FolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    # The deepspeed launcher appends --local_rank=N (also in LOCAL_RANK); Hydra would reject it.
    sys.argv = [a for a in sys.argv if not a.startswith("--local_rank")]
    register_configs()
    _hydra_main()


if __name__ == "__main__":
    main()
