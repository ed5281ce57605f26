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
    open_clip_checkpoint: str | None = None,
) -> ImageDreamPipeline:
    """The pipeline of a released checkpoint file: the network of conf/model/`model` and
    conf/controller/`controller` around its weights, with the frozen parts from local folders.
    The one way from a released file to a pipeline (`to-pipeline` here, `make eval
    checkpoint=FILE.pt` in evaluation.checkpoints). It refuses to invent what the file does not
    hold: the VAE, text encoder and tokenizer (an SD 2.1-base diffusers folder) and, for the
    controllers that read CLIP features, the image encoder (an HF or an open_clip ViT-H-14)."""
    model_cfg, ctrl_cfg = compose_model_configs(model, controller)
    if sd21_path is None:
        raise ValueError(
            f"{checkpoint}: an SD 2.1-base diffusers folder is required (--sd21, or "
            "original.sd21_path in make eval): the released file holds the UNet; the VAE, text "
            "encoder and tokenizer come from that folder (else they would be random)"
        )
    needs_clip = CONTROLLERS[ctrl_cfg.name].needs.image_encoder
    if needs_clip and image_encoder_path is None and open_clip_checkpoint is None:
        raise ValueError(
            f"{checkpoint}: controller {controller!r} needs the CLIP ViT-H-14 image encoder "
            "(--image-encoder, or original.image_encoder_path / open_clip_checkpoint in make eval)"
        )
    weights = WeightsConfig(
        sd21_path=sd21_path,
        image_encoder_path=image_encoder_path,
        open_clip_checkpoint=open_clip_checkpoint,
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
