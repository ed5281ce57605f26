"""Shims and run-time patches that let the authors' released code run here, unchanged.

The authors' ImageDream and MVDream packages (imported from their checkouts by
`bench.official`) were written for CUDA, xformers 0.0.16, open-clip-torch 2.7.0 and a
setuptools that still shipped `pkg_resources`. None of that holds in this environment, so this
module supplies, and only for the duration of the import or build that needs it:

- `xformers` (when it does not import): a module whose `ops.memory_efficient_attention` is
  torch's scaled-dot-product attention for the layouts their call sites use;
- `pkg_resources` (when missing): `resource_filename`, the one function their `model_zoo` uses;
- a sequence-first open_clip model: their `FrozenOpenCLIPEmbedder` walks the open_clip resblocks
  itself with (L, N, D) tensors, as open_clip 2.7.0 expected; open_clip 3.x builds its
  attention batch-first, so every `nn.MultiheadAttention` is switched back to sequence-first;
- a `DDIMSampler.register_buffer` that puts the schedule on the model's device (theirs moves
  every tensor to CUDA);
- `Capture`: instance-level wrappers of their model's and sampler's methods that record what
  each stage returns, removed again after the run.

Nothing of their code is copied here: these are replacements for missing third-party modules
and patches applied to their objects at run time.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import math
import os
import sys
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def memory_efficient_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_bias: Any = None,
    p: float = 0.0,
    scale: float | None = None,
    *,
    op: Any = None,
) -> Tensor:
    """xformers' `memory_efficient_attention`, computed by torch's SDPA.

    xformers takes either (B, M, K) tensors (batch already merged with heads: how every call in
    their attention.py and diffusionmodules/model.py is made) or (B, M, H, K) tensors; the
    softmax scale defaults to 1/sqrt(K) in both. `op` only picks an xformers kernel, so it is
    ignored; attention biases and dropout are not used by their code and are refused rather than
    silently dropped.
    """
    del op
    if attn_bias is not None:
        raise NotImplementedError("xformers shim: attn_bias is not supported")
    if p != 0.0:
        raise NotImplementedError("xformers shim: dropout (p > 0) is not supported")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if query.dim() == 3:  # (B, M, K)
        return F.scaled_dot_product_attention(query, key, value, scale=scale)
    if query.dim() == 4:  # (B, M, H, K) -> (B, H, M, K) for SDPA, and back
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scale
        )
        return out.transpose(1, 2)
    raise ValueError(f"xformers shim: expected 3-D or 4-D tensors, got {tuple(query.shape)}")


def _xformers_module() -> types.ModuleType:
    """A stand-in `xformers` package with an `ops` submodule (their code imports both)."""
    package = types.ModuleType("xformers")
    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention  # type: ignore[attr-defined]
    package.ops = ops  # type: ignore[attr-defined]
    package.__version__ = "0+torch-sdpa-shim"  # type: ignore[attr-defined]
    # A spec, so that importlib.util.find_spec("xformers") does not raise while it is installed
    package.__spec__ = importlib.machinery.ModuleSpec("xformers", None, is_package=True)
    ops.__spec__ = importlib.machinery.ModuleSpec("xformers.ops", None)
    return package


def resource_filename(package: str, path: str) -> str:
    """`pkg_resources.resource_filename` for a package imported from a plain directory."""
    module = importlib.import_module(package)
    if module.__file__ is None:
        raise FileNotFoundError(f"package {package!r} has no __file__ to resolve {path!r} against")
    return os.path.join(os.path.dirname(module.__file__), path)


def _pkg_resources_module() -> types.ModuleType:
    module = types.ModuleType("pkg_resources")
    module.resource_filename = resource_filename  # type: ignore[attr-defined]
    module.__spec__ = importlib.machinery.ModuleSpec("pkg_resources", None)
    return module


def _importable(name: str) -> bool:
    """True when `name` imports for real (a module left in sys.modules counts)."""
    if name in sys.modules:
        return True
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@contextmanager
def missing_modules_shimmed() -> Iterator[list[str]]:
    """Install the xformers / pkg_resources stand-ins that are missing, for the block only.

    Their modules bind `xformers` and `pkg_resources` as globals when they are imported, so
    importing them inside this block is enough; the stand-ins are taken out of sys.modules
    afterwards, so that other code in the process (diffusers probing for xformers) still sees
    them as absent. Yields the names installed.
    """
    installed: dict[str, types.ModuleType] = {}
    if not _importable("xformers"):
        xformers = _xformers_module()
        installed["xformers"] = xformers
        installed["xformers.ops"] = xformers.ops
    if not _importable("pkg_resources"):
        installed["pkg_resources"] = _pkg_resources_module()
    sys.modules.update(installed)
    try:
        yield sorted(installed)
    finally:
        for name, module in installed.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def sequence_first(model: torch.nn.Module) -> torch.nn.Module:
    """Make an open_clip 3.x model's transformers take (L, N, D) tensors, as 2.7.0's did.

    Their `FrozenOpenCLIPEmbedder.encode_with_transformer` / `encode_image_with_transformer`
    permute to (L, N, D) and call each resblock themselves. open_clip 3.x builds every
    `nn.MultiheadAttention` with batch_first=True, which would read that layout as a batch of
    L sequences (text: a mask-shape error; image: every token attending only to itself).
    LayerNorm and MLP are per-token, so the attention layout flag is the only difference;
    open_clip's own `Transformer.batch_first` is turned off too, so its own forward stays
    consistent. Parameters and state_dict keys are unchanged.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention) or (
            hasattr(module, "batch_first") and isinstance(module.batch_first, bool)
        ):
            module.batch_first = False
    return model


@contextmanager
def open_clip_sequence_first() -> Iterator[None]:
    """While the block runs, models from `open_clip.create_model_and_transforms` are sequence-first.

    Their encoders call `open_clip.create_model_and_transforms` in `__init__` and their demo
    encodes the negative text right after, so the layout has to be fixed as the model is made.
    The module attribute is restored on exit.
    """
    import open_clip

    original: Callable[..., Any] = open_clip.create_model_and_transforms

    def create_model_and_transforms(*args: Any, **kwargs: Any) -> Any:
        model, preprocess_train, preprocess_val = original(*args, **kwargs)
        return sequence_first(model), preprocess_train, preprocess_val

    open_clip.create_model_and_transforms = create_model_and_transforms
    try:
        yield
    finally:
        open_clip.create_model_and_transforms = original


def keep_sampler_on_model_device(sampler: Any) -> Any:
    """Patch one DDIMSampler instance so its schedule tensors go to the model's device.

    Their `DDIMSampler.register_buffer` moves every `torch.Tensor` to CUDA; everything else
    (attribute name, which values are moved: exactly `torch.Tensor`, not numpy arrays) is kept.
    """

    def register_buffer(self: Any, name: str, attr: Any) -> None:
        if type(attr) is torch.Tensor:
            attr = attr.to(self.model.betas.device)
        setattr(self, name, attr)

    sampler.register_buffer = types.MethodType(register_buffer, sampler)
    return sampler


# -------------------------------------------------------------------------------------- capture


class Capture:
    """Instance-level wrappers around their objects' methods that record tensors.

    Each wrapper is set on the instance (shadowing the class method), and `restore` puts back
    exactly what was there before: the instance attribute, or nothing.
    """

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor]] = defaultdict(list)
        self._undo: list[tuple[Any, str, bool, Any]] = []

    def add(self, key: str, value: Tensor) -> None:
        self.values[key].append(value.detach().to("cpu", torch.float32, copy=True))

    def add_int(self, key: str, value: Tensor) -> None:
        self.values[key].append(value.detach().to("cpu", torch.int64, copy=True))

    def wrap(self, obj: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(obj, name)
        self._undo.append((obj, name, name in vars(obj), vars(obj).get(name)))
        setattr(obj, name, make(original))

    def restore(self) -> None:
        while self._undo:
            obj, name, had_own, original = self._undo.pop()
            if had_own:
                setattr(obj, name, original)
            else:
                delattr(obj, name)

    def one(self, key: str) -> np.ndarray:
        (value,) = self.values[key]
        return value.numpy()

    def stacked(self, key: str) -> np.ndarray:
        return torch.stack(self.values[key]).numpy()


def record_sampling(cap: Capture, model: Any, sampler: Any) -> None:
    """Wrappers shared by both paths: text encoder, every DDIM step, the UNet, the decoder."""

    def get_learned_conditioning(original: Any) -> Any:
        def wrapper(prompts: Any) -> Any:
            out = original(prompts)
            cap.add("context", out)
            return out

        return wrapper

    def p_sample_ddim(original: Any) -> Any:
        def wrapper(x: Tensor, c: Any, t: Tensor, *args: Any, **kwargs: Any) -> Any:
            cap.add("step_x", x)  # cloned before their UNet can write into it (CFG scale 1)
            cap.add_int("timesteps", t[0])
            x_prev, pred_x0 = original(x, c, t, *args, **kwargs)
            cap.add("step_x_prev", x_prev)
            cap.add("step_pred_x0", pred_x0)
            return x_prev, pred_x0

        return wrapper

    def apply_model(original: Any) -> Any:
        def wrapper(x_noisy: Tensor, t: Tensor, cond: Any, **kwargs: Any) -> Any:
            out = original(x_noisy, t, cond, **kwargs)
            cap.add("step_unet_input", x_noisy)  # after the in-place write of the pixel frame
            cap.add("step_eps", out)
            return out

        return wrapper

    def decode_first_stage(original: Any) -> Any:
        def wrapper(z: Tensor) -> Any:
            out = original(z)
            cap.add("decoded", out)
            return out

        return wrapper

    cap.wrap(model, "get_learned_conditioning", get_learned_conditioning)
    cap.wrap(model, "apply_model", apply_model)
    cap.wrap(model, "decode_first_stage", decode_first_stage)
    cap.wrap(sampler, "p_sample_ddim", p_sample_ddim)


def record_image_prompt(cap: Capture, model: Any) -> None:
    """ImageDream's image-prompt stages: CLIP preprocessing and tokens, VAE encode and sample."""

    def preprocess(original: Any) -> Any:
        def wrapper(image: Image.Image) -> Any:
            out = original(image)
            cap.add("clip_input", out)
            return out

        return wrapper

    def get_learned_image_conditioning(original: Any) -> Any:
        def wrapper(images: Any) -> Any:
            out = original(images)
            cap.add("clip_tokens", out)
            return out

        return wrapper

    def encode_first_stage(original: Any) -> Any:
        def wrapper(x: Tensor) -> Any:
            cap.add("vae_input", x)
            posterior = original(x)
            cap.add("vae_posterior_mean", posterior.mean)
            cap.add("vae_posterior_std", posterior.std)
            return posterior

        return wrapper

    def get_first_stage_encoding(original: Any) -> Any:
        def wrapper(posterior: Any) -> Any:
            out = original(posterior)
            cap.add("pixel_latent", out)
            return out

        return wrapper

    cap.wrap(model.clip_model, "preprocess", preprocess)
    cap.wrap(model, "get_learned_image_conditioning", get_learned_image_conditioning)
    cap.wrap(model, "encode_first_stage", encode_first_stage)
    cap.wrap(model, "get_first_stage_encoding", get_first_stage_encoding)
