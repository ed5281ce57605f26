"""Between the authors' released checkpoints and `ImageDreamPipeline` folders, both ways.

    # released .pt (+ an SD 2.1-base diffusers folder for VAE / text encoder / tokenizer, and a
    # CLIP ViT-H-14 folder for local / global controllers) -> a pipeline folder
    python -m training.released to-pipeline --checkpoint sd-v2.1-base-4view-ipmv.pt \
        --controller local_pixel --sd21 /models/sd21-base --image-encoder /models/clip-vit-h14 \
        --out /models/imagedream-p
    # a pipeline folder (e.g. runs/NAME/export) -> the released .pt layout, which threestudio's
    # ImageDream guidance loads for image-to-3D (system.guidance.ckpt_path=...)
    python -m training.released to-released --pipeline runs/NAME/export --out imagedream.pt

Controllers: `none` (MVDream sd-v2.1-base-4view.pt), `local` (ImageDream ...-ipmv-local.pt),
`local_pixel` (ImageDream ...-ipmv.pt), and our `global` / `pixel` variants. `--model` names a
conf/model/ file (sd21_mv for the released sizes). Loading streams the .pt (memory-mapped), so
converting the 3.8 GB release peaks near its size. Local paths only.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from training.model.build import build_imagedream
from training.model.config import WeightsConfig, compose_model_configs
from training.model.controllers import CONTROLLERS
from training.model.released_layout import save_original_checkpoint
from training.pipeline import ImageDreamPipeline


def released_to_pipeline(
    checkpoint: str | Path,
    controller: str,
    sd21_path: str | None,
    image_encoder_path: str | None = None,
    model: str = "sd21_mv",
) -> ImageDreamPipeline:
    model_cfg, ctrl_cfg = compose_model_configs(model, controller)
    if sd21_path is None:
        raise ValueError(
            "--sd21 is required: the released .pt holds the UNet; the VAE, text encoder and "
            "tokenizer come from an SD 2.1-base diffusers folder (else they would be random)"
        )
    if image_encoder_path is None and CONTROLLERS[ctrl_cfg.name].needs.image_encoder:
        raise ValueError(
            f"--image-encoder is required for controller {controller!r} (CLIP ViT-H-14)"
        )
    weights = WeightsConfig(
        sd21_path=sd21_path,
        image_encoder_path=image_encoder_path,
        original_checkpoint=str(checkpoint),
    )
    model_cfg = dataclasses.replace(model_cfg, weights=weights)
    return ImageDreamPipeline.from_model(build_imagedream(model_cfg, ctrl_cfg))


def pipeline_to_released(folder: str | Path, out: str | Path) -> Path:
    return save_original_checkpoint(ImageDreamPipeline.from_pretrained(folder).model, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.released", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-pipeline", help="released .pt -> ImageDreamPipeline folder")
    a.add_argument("--checkpoint", required=True)
    a.add_argument(
        "--controller", required=True, help="none | global | local | pixel | local_pixel"
    )
    a.add_argument("--sd21", required=True, help="SD 2.1-base diffusers folder (vae, text encoder)")
    a.add_argument("--image-encoder", default=None, help="HF CLIP ViT-H-14 folder (global, local)")
    a.add_argument("--model", default="sd21_mv", help="conf/model/ name")
    a.add_argument("--out", required=True)
    b = sub.add_parser("to-released", help="ImageDreamPipeline folder -> released-layout .pt")
    b.add_argument("--pipeline", required=True)
    b.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "to-pipeline":
        pipe = released_to_pipeline(
            args.checkpoint, args.controller, args.sd21, args.image_encoder, args.model
        )
        pipe.save_pretrained(args.out)
        print(f"wrote {args.out}")
    else:
        print(f"wrote {pipeline_to_released(args.pipeline, args.out)}")


if __name__ == "__main__":
    main()
