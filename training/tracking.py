"""Experiment tracking on rank 0: W&B, a metrics.jsonl in the run folder, and the progress bar.

W&B mode "auto" is online when WANDB_API_KEY is set and offline otherwise (files land in
<run_dir>/wandb/offline-run-*; `wandb sync` uploads them later). The W&B run id is stored in
<run_dir>/wandb_run_id.txt, so a resumed run continues the same W&B run (resume="allow"). Offline,
W&B cannot resume in place: each resumed session adds a folder with the same id, and
`python -m training.tracking sync <run_dir>` uploads them in order into the one run. On resume
the run folder's metrics.jsonl is cut back to the checkpoint's step, so no step appears twice.
Named `tracking` rather than `logging` so it never shadows the standard library.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from contract.atomic import atomic_write_bytes
from training.config import TrainConfig, WandbConfig
from training.run_layout import RUN_ID_FILE, RunLayout


def wandb_mode(cfg: WandbConfig) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def run_id(run_dir: Path) -> str:
    """The run's W&B id, created once and kept in the run folder."""
    path = RunLayout(run_dir).wandb_run_id
    if path.is_file():
        return path.read_text().strip()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    new_id = "".join(secrets.choice(alphabet) for _ in range(8))
    atomic_write_bytes(path, f"{new_id}\n".encode())
    return new_id


def offline_parts(run_dir: Path) -> list[Path]:
    """The offline W&B folders of a run, oldest first. W&B cannot resume an offline run in
    place, so each resumed session of an offline run writes one more folder with the same id."""
    layout = RunLayout(run_dir)
    run = run_id(run_dir) if layout.wandb_run_id.is_file() else None
    if run is None:
        return []
    return sorted(layout.wandb.glob(f"offline-run-*-{run}"))


def sync_commands(run_dir: Path, project: str | None = None) -> list[list[str]]:
    """`wandb sync` commands that upload an offline run's parts into its one W&B run: the first
    part as is, each later one appended to it (`--id <run id> --append`)."""
    parts = offline_parts(run_dir)
    extra = ["--project", project] if project else []
    commands = []
    for i, part in enumerate(parts):
        append = ["--id", run_id(run_dir), "--append"] if i else []
        commands.append(["wandb", "sync", *extra, *append, str(part)])
    return commands


def cut_metrics(path: Path, step: int) -> None:
    """Keep the lines of a metrics.jsonl up to `step` (the checkpoint a run resumes from): what a
    killed run logged after its last checkpoint is logged again by the resumed one, so without
    this those steps would appear twice. A torn last line is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # torn by a kill mid-write
    atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())


class Tracker:
    """Logs on rank 0; on other ranks every method is a no-op."""

    def __init__(
        self,
        cfg: WandbConfig,
        run_dir: Path,
        name: str,
        config: dict[str, Any],
        is_main: bool,
        total_steps: int,
        start_step: int,
        progress: bool,
    ) -> None:
        self.is_main = is_main
        self.layout = RunLayout(run_dir)
        self.wandb: Any = None
        self.bar: Any = None
        self._last_time = time.perf_counter()
        if not is_main:
            return
        cut_metrics(self.layout.metrics, start_step)
        mode = wandb_mode(cfg)
        if mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                name=name,
                id=run_id(run_dir),
                resume="allow",
                dir=str(run_dir),
                config=config,
                tags=list(cfg.tags),
                mode=mode,  # type: ignore[arg-type]
            )
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=name, dynamic_ncols=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.is_main:
            return
        with open(self.layout.metrics, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics.get('train/loss', float('nan')):.4f}")

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def log_image(self, key: str, image: np.ndarray, step: int, caption: str) -> None:
        """(H, W, 3) uint8; also saved as PNG under <run_dir>/samples/."""
        if not self.is_main:
            return
        from PIL import Image

        folder = self.layout.samples
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{key.replace('/', '_')}_{step:08d}.png")
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(image, caption=caption)}, step=step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def build_tracker(cfg: TrainConfig, run_dir: Path, is_main: bool, start_step: int) -> Tracker:
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    return Tracker(
        cfg.wandb,
        run_dir,
        name=cfg.name,
        config=config,  # type: ignore[arg-type]
        is_main=is_main,
        total_steps=cfg.trainer.max_steps,
        start_step=start_step,
        progress=cfg.trainer.progress,
    )


# ---------------------------------------------------------------------------------------------
# Sample grids


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3), for display only."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def sample_grid(model: Any, ema: Any, cfg: TrainConfig) -> tuple[np.ndarray, str]:
    """For a few rings of the training data: row 1 = prompt image, then the generated views;
    row 2 = the true target views. Returns an (rows x H, 5 x W, 3) uint8 image and a caption."""
    import dataclasses
    from contextlib import nullcontext

    from contract.cameras import canonical_order
    from training.data import build_loader
    from training.pipeline import ImageDreamPipeline, sample_views, to_uint8

    data_cfg = dataclasses.replace(
        cfg.data,
        batch_size=cfg.trainer.num_sample_prompts,
        num_workers=0,
        prompt_dropout=0.0,
        text_dropout=0.0,
    )
    batch = next(build_loader(data_cfg, seed=cfg.trainer.seed + 7919))
    # the prompts as composited for training, at the render's size: the pipeline prepares them
    # (CLIP input, VAE input) exactly as training did
    prompt = batch.prompt.rgb
    pipe = ImageDreamPipeline.from_model(
        model, prompt_image=cfg.data.prompt_image(), sampling=cfg.sampling_settings()
    )
    # the targets are at azimuth 0/90/180/270; the generated row starts at the family's first
    # azimuth (MVDream: 90), so the truth row is put in that order
    order = canonical_order(pipe.view_azimuths(pipe.sampling_settings.azimuth_start_deg))
    targets01 = ((batch.targets.float() + 1.0) / 2.0).movedim(-3, -1).numpy()  # (B, V, H, W, 3)
    truth = to_uint8(targets01)[:, np.argsort(order)]
    pipe.set_progress_bar_config(disable=True)
    was_training = model.training
    model.eval()
    seeds = [cfg.trainer.seed + i for i in range(len(batch))]
    with ema.applied() if ema is not None else nullcontext():
        out = sample_views(
            pipe, prompt, batch.captions, seeds, cfg.trainer.sampling, batch.elevation_deg
        )
    generated = to_uint8(out.images)  # (B, V, H, W, 3)
    model.train(was_training)
    rows = []
    size = truth.shape[-2]
    for i in range(len(batch)):
        shown = _fit(prompt[i], size)  # (S, S, 3): the prompt at the grid's cell size
        rows.append(np.concatenate([shown, *generated[i]], axis=1))
        rows.append(np.concatenate([np.zeros_like(shown), *truth[i]], axis=1))
    return np.concatenate(rows, axis=0), " | ".join(batch.captions)


def main(argv: list[str] | None = None) -> None:
    """`python -m training.tracking sync RUN_DIR [--project P] [--dry-run]`."""
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(prog="python -m training.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    sync = sub.add_parser("sync", help="upload an offline run (all its resumed parts) to W&B")
    sync.add_argument("run_dir", type=Path)
    sync.add_argument("--project", default=None)
    sync.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    commands = sync_commands(args.run_dir, args.project)
    if not commands:
        raise SystemExit(f"{args.run_dir}: no offline W&B run (no {RUN_ID_FILE} or no folders)")
    for command in commands:
        print(" ".join(command))
        if not args.dry_run:
            subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
