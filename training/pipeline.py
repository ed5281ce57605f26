"""`ImageDreamPipeline`: one image (and optional text) -> 4 views in the canonical frame.

    from training.pipeline import ImageDreamPipeline        # or diffusers.DiffusionPipeline
    pipe = ImageDreamPipeline.from_pretrained("runs/NAME/export")
    views = pipe(image, prompt="a red mug, 3d asset").images[0]  # front, azimuth 90, 180, 270

A `diffusers.DiffusionPipeline` whose components are the multi-view UNet with its controller
(`MultiViewUNet`), the VAE, the text encoder and tokenizer, the CLIP image encoder (for global /
local controllers) and a DDIM scheduler. The sampling loop itself is `training.diffusion`'s
(`Diffusion.sample`, the one CFG DDIM loop of the project): `make eval` and the training sample
grids both call this pipeline.

Its config (model_index.json) records how the model samples: `sampling`, its family's
`training.sampling_settings.SamplingSettings` (ImageDream: CFG 5, elevation 5, first view at azimuth 0,
the authors' negative text; MVDream: CFG 10, elevation 15, first view at azimuth 90, no negative
text), and `prompt_image`, the grey range an RGBA prompt is composited on (what the model was
trained with). A call's arguments override them. Prompts are prepared by
`training.prompt_image` exactly as the authors' demo prepares them.

Random draws, with one generator per prompt (or one for the batch), come in the authors' order,
so on the CPU a generator seeded s reproduces their torch.manual_seed(s) run: the pixel
latent's posterior noise (pixel controllers, `pixel_latent="sample"`), then the initial noise
(unless `latents` is given), then the background grey of an RGBA prompt (their demo draws it from
numpy instead). On a GPU their sampler draws its initial noise from the CUDA generator and the
posterior noise from the CPU's: pass `latents=` to share the noise there.

`save_pretrained` writes `model_index.json` naming this class through a two-line module in the
folder (`imagedream_pipeline.py`), so `DiffusionPipeline.from_pretrained(folder)` finds it; the
`training` package must be importable. Every load is from a local folder (no hub).

Shape legend: B prompts, V views (4), C latent channels, h x w latent size, H x W pixels.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
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

from contract.cameras import CANONICAL_AZIMUTHS_DEG, network_camera, ring_c2w
from training.diffusion import (
    build_sampling_scheduler,
    latent_noise_shape,
    sample_latents,
    set_ldm_timesteps,
)
from training.model.autoencoder import PixelUnshuffleAutoencoder
from training.model.denoiser import MultiViewUNet
from training.model.encoders import HFImageEncoder, load_tokenizer
from training.model.imagedream import ImageDream
from training.prompt_image import (
    PromptImageConfig,
    as_uint8_image,
    composite_prompts,
    prepare_prompts,
)
from training.sampling_settings import (
    MODEL_FAMILIES,
    SamplingConfig,
    SamplingSettings,
    model_family,
)

SHIM_MODULE = "imagedream_pipeline"
_SHIM = (
    '"""Lets diffusers.DiffusionPipeline.from_pretrained find ImageDreamPipeline (model_index.json'
    ' names this module)."""\n\nfrom training.pipeline import ImageDreamPipeline\n\n'
    '__all__ = ["ImageDreamPipeline"]\n'
)
ImageInput = Image.Image | list[Image.Image] | list[np.ndarray] | np.ndarray | Tensor
Generators = torch.Generator | list[torch.Generator] | None


@dataclass
class ImageDreamPipelineOutput(BaseOutput):
    """images: per prompt its V views (PIL lists), or (B, V, H, W, 3) floats in [0, 1] ("np"),
    or (B, V, 3, H, W) in [0, 1] ("pt"), or the final (B, V, C, h, w) latents ("latent")."""

    images: Any
    latents: Tensor  # (B, V, C, h, w) final scaled latents
    cameras: np.ndarray  # (B, V, 16) network cameras of the views
    elevation_deg: np.ndarray  # (B,)
    azimuths_deg: np.ndarray  # (V,) azimuth of each view
    prompt_images: list[np.ndarray]  # B (H, W, 3) uint8: each prompt as the model saw it
    background: np.ndarray  # (B,) grey level each RGBA prompt was composited on (NaN: RGB)
    settings: SamplingSettings  # what the call sampled with (the model's, overridden)


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
        sampling: dict[str, Any] | None = None,  # SamplingSettings; None: the family's
        prompt_image: dict[str, Any] | None = None,  # PromptImageConfig; None: its defaults
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
        family = model_family(unet.typed_controller_config.name)
        settings = SamplingSettings(**sampling) if sampling else MODEL_FAMILIES[family]
        background = PromptImageConfig(**(prompt_image or {}))
        self.register_to_config(
            sampling=dataclasses.asdict(settings), prompt_image=dataclasses.asdict(background)
        )
        self._model: ImageDream | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_model(
        cls,
        model: ImageDream,
        scheduler: Any = None,
        sampling: SamplingSettings | None = None,
        prompt_image: PromptImageConfig | None = None,
    ) -> ImageDreamPipeline:
        """A pipeline over an ImageDream's own modules (shared, not copied). It samples with any
        image encoder; it saves only with a transformers one (see `unsaveable_reason`).
        sampling: None = the model family's defaults; prompt_image: the grey range the model
        was trained with (training passes data.grey_min / grey_max)."""
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
            sampling=None if sampling is None else dataclasses.asdict(sampling),
            prompt_image=None if prompt_image is None else dataclasses.asdict(prompt_image),
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
        if (folder / "tokenizer").is_dir():  # "!" stays a word (training.model.encoders)
            kwargs.setdefault("tokenizer", load_tokenizer(folder / "tokenizer"))
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

    @property
    def sampling_settings(self) -> SamplingSettings:
        """The model's sampling defaults, as its config records them."""
        config: Any = self.config  # a FrozenDict with attribute access
        return SamplingSettings(**config.sampling)

    @property
    def prompt_image_config(self) -> PromptImageConfig:
        """The grey range RGBA prompts are composited on, as the config records it."""
        config: Any = self.config
        return PromptImageConfig(**config.prompt_image)

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

    def prompt_arrays(self, image: ImageInput) -> list[np.ndarray]:
        """B prompts as (H, W, 3) RGB or (H, W, 4) RGBA uint8 arrays at their own size. Takes
        PIL images (or a list), (H, W, 3|4) / (B, H, W, 3|4) uint8 arrays (or a list), and
        (3, H, W) / (B, 3, H, W) tensors in [0, 1] (rounded to uint8)."""
        if isinstance(image, Tensor):
            x = image[None] if image.dim() == 3 else image
            x = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
            return [np.ascontiguousarray(a) for a in x.permute(0, 2, 3, 1).cpu().numpy()]
        if isinstance(image, Image.Image):
            return [as_uint8_image(image)]
        if isinstance(image, np.ndarray) and image.ndim == 4:
            return [as_uint8_image(a) for a in image]
        if isinstance(image, np.ndarray):
            return [as_uint8_image(image)]
        return [as_uint8_image(a) for a in image]

    def canonical_cameras(
        self, elevations_deg: list[float], azimuth_start_deg: float = 0.0
    ) -> np.ndarray:
        """(B, V, 16) network cameras at azimuth start + 0/90/180/270 and each prompt's
        elevation. The network sees only the camera direction, so the distance is 1."""
        azimuths = self.view_azimuths(azimuth_start_deg)
        return network_camera(np.stack([ring_c2w(azimuths, e, 1.0) for e in elevations_deg]))

    @staticmethod
    def view_azimuths(azimuth_start_deg: float) -> np.ndarray:
        """(V,) azimuths of the sampled views, in [0, 360)."""
        return (np.asarray(CANONICAL_AZIMUTHS_DEG, np.float64) + azimuth_start_deg) % 360.0

    def draw_noise(
        self,
        b: int,
        generator: Generators,
        latent_noise_shape: tuple[int, ...] | None,
        initial: bool,
        backgrounds: Sequence[bool],
        prompt_image: PromptImageConfig,
    ) -> tuple[Tensor | None, Tensor | None, list[float]]:
        """Every random draw of a call, in the authors' order (module docstring): the pixel
        latent's posterior noise (B, C, h, w) if a shape is given, the initial noise
        (B, V, C, h, w) if `initial`, then a grey level for each prompt whose `backgrounds`
        entry is True (NaN for the others). With a list, prompt i draws from generator i (so a
        prompt's result does not depend on the batch it is sampled in)."""
        unet = self.unet.typed_model_config.unet
        views = (
            len(CANONICAL_AZIMUTHS_DEG),
            unet.latent_channels,
            unet.sample_size,
            unet.sample_size,
        )
        gens = generator if isinstance(generator, list) else None
        if gens is not None and len(gens) != b:
            raise ValueError(f"{len(gens)} generators for {b} prompts")

        def randn(shape: tuple[int, ...], g: torch.Generator | None) -> Tensor:
            device = g.device if g is not None else torch.device("cpu")
            return torch.randn(shape, generator=g, device=device)

        latent_noise = noise = None
        levels = [float("nan")] * b
        if gens is None:
            single = generator if isinstance(generator, torch.Generator) else None
            if latent_noise_shape is not None:
                latent_noise = randn(latent_noise_shape, single)
            if initial:
                noise = randn((b, *views), single)
            for i, wanted in enumerate(backgrounds):
                if wanted:
                    levels[i] = prompt_image.draw_background(single)
            return latent_noise, noise, levels
        lat, init = [], []
        for i, g in enumerate(gens):
            if latent_noise_shape is not None:
                lat.append(randn((1, *latent_noise_shape[1:]), g))
            if initial:
                init.append(randn(views, g))
            if backgrounds[i]:
                levels[i] = prompt_image.draw_background(g)
        latent_noise = torch.cat(lat) if lat else None
        noise = torch.stack(init) if init else None
        return latent_noise, noise, levels

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | None,
        prompt: str | list[str] = "",
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        elevation: float | list[float] | None = None,
        generator: Generators = None,
        output_type: str = "pil",
        eta: float | None = None,
        latents: Tensor | None = None,
        azimuth_start: float | None = None,
        background: float | None = None,
        pixel_latent: str | None = None,
    ) -> ImageDreamPipelineOutput:
        """The 4 views (azimuth start + 0, 90, 180, 270; ImageDream: front, right, back, left)
        of each image prompt, SPEC 6: DDIM with the authors' timesteps, one CFG scale over text
        and image; the unconditional branch gets the negative text and the unconditional image
        input the model was trained with (zero image features and zero pixel latent by
        default). Every None takes the model's recorded setting (`sampling_settings`,
        `prompt_image_config`, the model's `pixel_latent`). `background`: a fixed grey level
        in [0, 1] for RGBA prompts. `latents`: the initial noise (B, V, C, h, w), as diffusers
        pipelines take it. The text is sent as given (`make eval` appends the family's
        suffix to captions, as training does). A text-only model (MVDream, controller `none`)
        takes `image=None`: one prompt per text."""
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        model = self.model
        needs = model.controller.needs
        if image is None and (needs.image_encoder or needs.latent):
            raise ValueError(f"controller {model.controller_name!r} needs an image prompt")
        arrays = [] if image is None else self.prompt_arrays(image)
        b = (
            len(arrays)
            if image is not None
            else len(_per_prompt(prompt, 1, "prompt", any_length=True))
        )
        overrides = SamplingConfig(
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            eta=eta,
            negative_prompt=negative_prompt if isinstance(negative_prompt, str) else None,
            elevation_deg=None if elevation is None or isinstance(elevation, list) else elevation,
            azimuth_start_deg=azimuth_start,
        )
        settings = overrides.resolve(self.sampling_settings)
        texts = _per_prompt(prompt, b, "prompt")
        negatives = _per_prompt(
            settings.negative_prompt if negative_prompt is None else negative_prompt,
            b,
            "negative_prompt",
        )
        elevations = [
            float(e)
            for e in _per_prompt(
                settings.elevation_deg if elevation is None else elevation, b, "elevation"
            )
        ]
        cameras = self.canonical_cameras(elevations, settings.azimuth_start_deg)
        prompt_image = self.prompt_image_config.with_background(background)
        latent_noise, noise, levels = self.draw_noise(
            b,
            generator,
            latent_noise_shape(model, b, pixel_latent),
            initial=latents is None,
            backgrounds=[a.shape[-1] == 4 for a in arrays] or [False] * b,
            prompt_image=prompt_image,
        )
        if latents is not None:
            unet = self.unet.typed_model_config.unet
            size = unet.sample_size
            expected = (b, len(CANONICAL_AZIMUTHS_DEG), unet.latent_channels, size, size)
            if tuple(latents.shape) != expected:
                raise ValueError(
                    f"latents must be (B, V, C, h, w) = {expected}, got {tuple(latents.shape)}"
                )
            noise = latents
        assert noise is not None
        clip_size = None if model.image_encoder is None else model.image_encoder.image_size
        prompts = None
        if arrays:
            prompts = prepare_prompts(composite_prompts(arrays, levels), self.resolution, clip_size)
        # the step count is the scheduler's (30 asked: 31 by the authors' rule)
        set_ldm_timesteps(self.scheduler, settings.num_inference_steps, model.device)
        bar = self.progress_bar(total=len(self.scheduler.timesteps))
        out_latents = sample_latents(
            model,
            self.scheduler,
            prompts,
            texts,
            negatives,
            torch.from_numpy(cameras),
            noise,
            settings.guidance_scale,
            eta=settings.eta,
            latent_noise=latent_noise,
            generator=generator,
            callback=lambda i, x: bar.update(),
        )
        bar.close()
        if output_type == "latent":
            out: Any = out_latents
        else:
            views = ((model.decode_latents(out_latents) + 1.0) / 2.0).clamp(0, 1).float().cpu()
            if output_type == "pt":
                out = views  # (B, V, 3, H, W)
            else:
                out = views.permute(0, 1, 3, 4, 2).numpy()  # (B, V, H, W, 3)
                if output_type == "pil":
                    out = [[Image.fromarray(to_uint8(v)) for v in row] for row in out]
        return ImageDreamPipelineOutput(
            images=out,
            latents=out_latents,
            cameras=cameras,
            elevation_deg=np.asarray(elevations, dtype=np.float64),
            azimuths_deg=self.view_azimuths(settings.azimuth_start_deg),
            prompt_images=[] if prompts is None else prompts.rgb,
            background=np.asarray(levels, dtype=np.float64),
            settings=settings,
        )


def sample_views(
    pipe: ImageDreamPipeline,
    images: Any,  # B prompts: (H, W, 3|4) uint8 arrays or PIL images; None: a text-only model
    texts: list[str],  # as the model is to see them (captions carry their suffix)
    seeds: Sequence[int],  # prompt i draws every random number from a generator seeded seeds[i]
    sampling: SamplingConfig | None = None,  # None fields (or None): the model's settings
    elevations_deg: Sequence[float] | None = None,  # per prompt; None: the settings' elevation
    background: float | None = None,  # a fixed grey for RGBA prompts; None: the model's
) -> ImageDreamPipelineOutput:
    """The one call that samples views of given prompts, for the training sample grids and for
    `make eval` alike (output_type "np"). Each prompt's generator is its own, so its views do
    not depend on the batch it is sampled in."""
    settings = (sampling or SamplingConfig()).resolve(pipe.sampling_settings)
    elevation = settings.elevation_deg if elevations_deg is None else list(elevations_deg)
    return pipe(
        images,
        prompt=texts,
        negative_prompt=settings.negative_prompt,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        elevation=elevation,
        azimuth_start=settings.azimuth_start_deg,
        generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
        output_type="np",
        eta=settings.eta,
        background=background,
    )


def to_uint8(images01: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8, truncated as the authors' scripts do (`(255 x).astype`): how
    every sampled view of the project becomes a picture."""
    return (np.clip(images01, 0.0, 1.0).astype(np.float32) * 255.0).astype(np.uint8)


def _per_prompt(value: Any, b: int, name: str, any_length: bool = False) -> list[Any]:
    values = list(value) if isinstance(value, list | tuple) else [value] * b
    if len(values) != b and not any_length:
        raise ValueError(f"{len(values)} values of {name} for {b} images")
    return values
