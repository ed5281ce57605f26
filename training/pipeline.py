"""`ImageDreamPipeline`: one image (and optional text) -> 4 views in the canonical frame.

    from training.pipeline import ImageDreamPipeline        # or diffusers.DiffusionPipeline
    pipe = ImageDreamPipeline.from_pretrained("runs/NAME/export")
    views = pipe(image, prompt="a red mug, 3d asset").images[0]  # front, azimuth 90, 180, 270

A `diffusers.DiffusionPipeline` whose components are the multi-view UNet with its controller
(`MultiViewUNet`), the VAE, the text encoder and tokenizer, the CLIP image encoder (for global /
local controllers) and a DDIM scheduler. The sampling loop itself is `training.diffusion`'s
(`Diffusion.sample`, the one CFG DDIM loop of the project): `make eval` and the training sample
grids both call this pipeline.

`save_pretrained` writes `model_index.json` naming this class through a two-line module in the
folder (`imagedream_pipeline.py`), so `DiffusionPipeline.from_pretrained(folder)` finds it; the
`training` package must be importable. Every load is from a local folder (no hub).

Shape legend: B prompts, V views (4), C latent channels, h x w latent size, H x W pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from data_pipeline.cameras import CANONICAL_AZIMUTHS_DEG, network_camera, ring_c2w
from training.diffusion import Diffusion, SamplingConfig, build_sampling_scheduler
from training.model.autoencoder import PixelUnshuffleAutoencoder
from training.model.denoiser import MultiViewUNet
from training.model.encoders import HFImageEncoder
from training.model.imagedream import ImageDream

SHIM_MODULE = "imagedream_pipeline"
_SHIM = (
    '"""Lets diffusers.DiffusionPipeline.from_pretrained find ImageDreamPipeline (model_index.json'
    ' names this module)."""\n\nfrom training.pipeline import ImageDreamPipeline\n\n'
    '__all__ = ["ImageDreamPipeline"]\n'
)
_DEFAULTS = SamplingConfig  # class attributes hold the dataclass defaults (SPEC 6)

ImageInput = Image.Image | list[Image.Image] | np.ndarray | Tensor


@dataclass
class ImageDreamPipelineOutput(BaseOutput):
    """images: per prompt its V views (PIL lists), or (B, V, H, W, 3) floats in [0, 1] ("np"),
    or (B, V, 3, H, W) in [0, 1] ("pt"), or the final (B, V, C, h, w) latents ("latent")."""

    images: Any
    latents: Tensor  # (B, V, C, h, w) final scaled latents
    cameras: np.ndarray  # (B, V, 16) network cameras of the views
    elevation_deg: np.ndarray  # (B,)


class ImageDreamPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"  # type: ignore[assignment]
    # diffusers declares it an instance attribute of type list: a list it must stay
    _optional_components = ["image_encoder"]  # noqa: RUF012

    def __init__(
        self,
        unet: MultiViewUNet,
        # typing.Union: diffusers' component type check reads Union, not the | form
        vae: Union[AutoencoderKL, PixelUnshuffleAutoencoder],  # noqa: UP007
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler: DDIMScheduler,
        image_encoder: CLIPVisionModelWithProjection | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            image_encoder=image_encoder,
        )
        self._model: ImageDream | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_model(cls, model: ImageDream, scheduler: Any = None) -> ImageDreamPipeline:
        """A pipeline over an ImageDream's own modules (shared, not copied). It samples with any
        image encoder; it saves only with a transformers one (see `unsaveable_reason`)."""
        image_encoder = None
        if isinstance(model.image_encoder, HFImageEncoder):
            image_encoder = model.image_encoder.model
        pipe = cls(
            unet=model.denoiser,
            vae=model.vae,
            text_encoder=model.text_encoder,
            tokenizer=model.tokenizer,
            scheduler=scheduler or build_sampling_scheduler(),
            image_encoder=image_encoder,
        )
        pipe._model = model
        return pipe

    @staticmethod
    def unsaveable_reason(model: ImageDream) -> str | None:
        """Why a pipeline over `model` could not be saved (None: it can)."""
        if model.image_encoder is not None and not isinstance(model.image_encoder, HFImageEncoder):
            return (
                "the pipeline folder holds a transformers CLIPVisionModelWithProjection, and this "
                "model's image encoder is open_clip's (model.weights.open_clip_checkpoint): give "
                "ViT-H-14 in HF format instead (model.weights.image_encoder_path)"
            )
        return None

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path, **kwargs: Any
    ) -> ImageDreamPipeline:
        """Load a saved folder (local paths only). The folder's SHIM_MODULE is run only when it
        is exactly the two lines `save_pretrained` writes; anything else is refused."""
        folder = Path(pretrained_model_name_or_path)
        shim = folder / f"{SHIM_MODULE}.py"
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"{folder} has no model_index.json: not a pipeline folder")
        if shim.is_file() and shim.read_text() != _SHIM:
            raise ValueError(
                f"{shim} is not the file ImageDreamPipeline writes; refusing to run it"
            )
        kwargs.setdefault("trust_remote_code", shim.is_file())
        pipe: ImageDreamPipeline = super().from_pretrained(str(folder), **kwargs)
        return pipe

    @property
    def model(self) -> ImageDream:
        """The network as training.model.ImageDream, over this pipeline's modules."""
        if self._model is None or self._model.denoiser is not self.unet:
            image_encoder = (
                None if self.image_encoder is None else HFImageEncoder(self.image_encoder)
            )
            self._model = ImageDream(
                self.unet.typed_model_config,
                denoiser=self.unet,
                vae=self.vae,
                text_encoder=self.text_encoder,
                tokenizer=self.tokenizer,
                image_encoder=image_encoder,
            )
        return self._model

    def to(self, *args: Any, **kwargs: Any) -> ImageDreamPipeline:
        """diffusers' `to`, plus the model's image encoder when it is not a registered component
        (an open_clip one)."""
        pipe: ImageDreamPipeline = super().to(*args, **kwargs)
        model = self._model
        if model is not None and model.image_encoder is not None and self.image_encoder is None:
            positional = [a for a in args if not isinstance(a, torch.dtype)]
            dtypes = [a for a in args if isinstance(a, torch.dtype)]
            device = kwargs.get("device", positional[0] if positional else None)
            dtype = kwargs.get("dtype", dtypes[0] if dtypes else None)
            model.image_encoder.to(device=device, dtype=dtype)
        return pipe

    @property
    def resolution(self) -> int:
        return int(self.unet.typed_model_config.vae.sample_size)

    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | PathLike[Any], safe_serialization: bool = True, **kwargs: Any
    ) -> None:
        """diffusers' folder layout; model_index.json names this class through SHIM_MODULE."""
        reason = self.unsaveable_reason(self.model)
        if reason is not None:
            raise NotImplementedError(f"cannot save this pipeline: {reason}")
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        folder = Path(save_directory)
        (folder / f"{SHIM_MODULE}.py").write_text(_SHIM)
        index = folder / "model_index.json"
        config = json.loads(index.read_text())
        config["_class_name"] = [SHIM_MODULE, type(self).__name__]
        index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ inputs

    def prepare_images(self, image: ImageInput) -> Tensor:
        """-> (B, 3, H, W) in [0, 1] at the model's resolution. PIL images and (H, W, 3) /
        (B, H, W, 3) uint8 arrays; (B, 3, H, W) / (3, H, W) tensors in [0, 1]. An RGBA image is
        composited on white (the authors' tip: the background removed)."""
        if isinstance(image, Tensor):
            x = image[None] if image.dim() == 3 else image
            x = x.float()
        else:
            if isinstance(image, Image.Image):
                image = [image]
            if isinstance(image, list):
                image = np.stack([_pil_rgb(i) for i in image])
            array = np.asarray(image)
            array = array[None] if array.ndim == 3 else array
            if array.dtype != np.uint8:
                raise TypeError(f"image arrays must be uint8 (B, H, W, 3), got {array.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 255.0
        size = self.resolution
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            ).clamp(0, 1)
        return x

    def canonical_cameras(self, elevations_deg: list[float]) -> np.ndarray:
        """(B, V, 16) network cameras at azimuth 0/90/180/270 and each prompt's elevation. The
        network sees only the camera direction, so the distance is 1."""
        azimuths = np.asarray(CANONICAL_AZIMUTHS_DEG, dtype=np.float64)
        return network_camera(np.stack([ring_c2w(azimuths, e, 1.0) for e in elevations_deg]))

    def initial_noise(
        self, b: int, generator: torch.Generator | list[torch.Generator] | None
    ) -> Tensor:
        """(B, V, C, h, w) standard normal; with a list, prompt i draws from generator i (so a
        prompt's result does not depend on the batch it is sampled in)."""
        unet = self.unet.typed_model_config.unet
        shape = (
            len(CANONICAL_AZIMUTHS_DEG),
            unet.latent_channels,
            unet.sample_size,
            unet.sample_size,
        )
        if isinstance(generator, list):
            if len(generator) != b:
                raise ValueError(f"{len(generator)} generators for {b} prompts")
            return torch.stack(
                [torch.randn(shape, generator=g, device=g.device) for g in generator]
            )
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.randn((b, *shape), generator=generator, device=device)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        prompt: str | list[str] = "",
        negative_prompt: str | list[str] = _DEFAULTS.negative_prompt,
        num_inference_steps: int = _DEFAULTS.num_inference_steps,
        guidance_scale: float = _DEFAULTS.guidance_scale,
        elevation: float | list[float] = _DEFAULTS.elevation_deg,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        eta: float = _DEFAULTS.eta,
    ) -> ImageDreamPipelineOutput:
        """The 4 views (front, then azimuth 90, 180, 270) of each image prompt, SPEC 6: DDIM,
        one CFG scale over text and image; the unconditional branch gets the negative text and
        the unconditional image input the model was trained with (zero image features and zero
        pixel latent by default). The prompt text is sent as given (training captions carry
        ", 3d asset"; `make eval` appends it)."""
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        model = self.model
        images01 = self.prepare_images(image)
        b = len(images01)
        texts = _per_prompt(prompt, b, "prompt")
        negatives = _per_prompt(negative_prompt, b, "negative_prompt")
        elevations = [float(e) for e in _per_prompt(elevation, b, "elevation")]
        cameras = self.canonical_cameras(elevations)
        noise = self.initial_noise(b, generator)
        bar = self.progress_bar(total=num_inference_steps)
        latents = Diffusion().sample(
            model,
            images01.to(model.device),
            texts,
            negatives,
            torch.from_numpy(cameras),
            noise,
            num_inference_steps,
            guidance_scale,
            eta=eta,
            generator=generator,
            scheduler=self.scheduler,
            callback=lambda i, x: bar.update(),
        )
        bar.close()
        if output_type == "latent":
            out: Any = latents
        else:
            views = ((model.decode_latents(latents) + 1.0) / 2.0).clamp(0, 1).float().cpu()
            if output_type == "pt":
                out = views  # (B, V, 3, H, W)
            else:
                out = views.permute(0, 1, 3, 4, 2).numpy()  # (B, V, H, W, 3)
                if output_type == "pil":
                    out = [[Image.fromarray(to_uint8(v)) for v in row] for row in out]
        return ImageDreamPipelineOutput(
            images=out,
            latents=latents,
            cameras=cameras,
            elevation_deg=np.asarray(elevations, dtype=np.float64),
        )


def to_uint8(images01: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8, rounded (how every view of the project becomes a picture)."""
    return (np.clip(images01, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _pil_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _per_prompt(value: Any, b: int, name: str) -> list[Any]:
    values = list(value) if isinstance(value, list | tuple) else [value] * b
    if len(values) != b:
        raise ValueError(f"{len(values)} values of {name} for {b} images")
    return values
