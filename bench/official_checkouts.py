"""The authors' checkouts and what is built from them, for `make parity` (bench.official).

`load_checkouts` validates a bytedance/ImageDream and a bytedance/MVDream checkout, records their
commits and imports their packages from there at run time (with the stand-ins of
bench.official_shims while they import); `official_config` is their configs/*.yaml at the
small parity sizes (conf/model/parity.yaml is ours), with a tiny open_clip architecture
registered under `TINY_CLIP_ARCH`. Nothing of their code is copied here.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import pkgutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from bench.official_shims import missing_modules_shimmed

KINDS = ("mvdream", "imagedream_local", "imagedream_local_pixel")
NOT_GIT = "unknown (not a git checkout)"

# open_clip architecture of the parity sizes (ours: conf/model/parity.yaml); registered at run time.
TINY_CLIP_ARCH = "imagedream-parity-tiny"
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 28,
        "layers": 2,
        "width": 1280,  # their local resampler is fixed at embedding_dim 1280
        "head_width": 80,
        "patch_size": 14,
        "mlp_ratio": 4.0,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 4,
        "layers": 3,
        "mlp_ratio": 4.0,
    },
}

# Their model names (build_model's first argument; ignored when config and checkpoint are given)
MODEL_NAMES = {
    "imagedream_local": "sd-v2.1-base-4view-ipmv-local",
    "imagedream_local_pixel": "sd-v2.1-base-4view-ipmv",
}


# ------------------------------------------------------------------------------------ checkouts


@dataclass(frozen=True)
class OfficialCheckouts:
    """Where the authors' packages are imported from, and which commit that is.

    `*_root` is the folder that holds the package and its `scripts/` (ImageDream: the repo's
    extern/ImageDream; MVDream: the repo root). None for a checkout not given.
    """

    imagedream_root: Path | None = None
    mvdream_root: Path | None = None
    imagedream_commit: str | None = None
    mvdream_commit: str | None = None

    def root(self, package: str) -> Path:
        root = self.imagedream_root if package == "imagedream" else self.mvdream_root
        if root is None:
            raise ValueError(f"no {package} checkout was given to load_checkouts")
        return root


_REQUIRED = {
    "imagedream": (
        "imagedream/__init__.py",
        "imagedream/model_zoo.py",
        "imagedream/camera_utils.py",
        "imagedream/ldm/util.py",
        "imagedream/ldm/interface.py",
        "imagedream/ldm/models/diffusion/ddim.py",
        "imagedream/ldm/modules/encoders/modules.py",
        "scripts/demo.py",
    ),
    "mvdream": (
        "mvdream/__init__.py",
        "mvdream/camera_utils.py",
        "mvdream/ldm/util.py",
        "mvdream/ldm/interface.py",
        "mvdream/ldm/models/diffusion/ddim.py",
        "mvdream/ldm/modules/encoders/modules.py",
        "scripts/t2i.py",
    ),
}
_SCRIPTS = {"imagedream": "scripts/demo.py", "mvdream": "scripts/t2i.py"}


def _resolve_root(package: str, directory: Path) -> Path:
    """The folder holding `package`: `directory` itself or (ImageDream) its extern/ImageDream."""
    directory = Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise FileNotFoundError(f"{package} checkout {directory} is not a directory")
    candidates = [directory]
    if package == "imagedream":
        candidates.append(directory / "extern" / "ImageDream")
    for candidate in candidates:
        if (candidate / package / "__init__.py").is_file():
            missing = [p for p in _REQUIRED[package] if not (candidate / p).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{package} checkout {candidate} lacks: {', '.join(missing)}"
                )
            return candidate
    looked = " or ".join(str(c / package / "__init__.py") for c in candidates)
    raise FileNotFoundError(
        f"{package} checkout {directory}: no package found (looked for {looked})"
    )


def _git_commit(root: Path, directory: Path) -> str:
    """HEAD of the git checkout whose top level is `root` or `directory`, marked +dirty if so.

    A checkout copied into some other git repository must not be credited with that repository's
    commit, hence the top-level check.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() not in {root, Path(directory).expanduser().resolve()}:
        return NOT_GIT
    head = git("rev-parse", "HEAD")
    if head is None:
        return NOT_GIT
    return head + ("+dirty" if git("status", "--porcelain") else "")


def _import_package(package: str, root: Path) -> types.ModuleType:
    """Import `package` and all its modules from `root`, with the shims in place.

    Their modules bind xformers / pkg_resources at import, and `instantiate_from_config` imports
    targets lazily, so every module is imported here, while the stand-ins are installed.
    """
    loaded = sys.modules.get(package)
    if loaded is not None:
        origin = Path(loaded.__file__ or "").resolve()
        if root not in origin.parents:
            raise ImportError(
                f"{package} is already imported from {origin}, not from the checkout {root}"
            )
        return loaded
    if str(root) not in sys.path:
        sys.path.append(str(root))  # appended: never shadows our own modules
    with missing_modules_shimmed(), contextlib.redirect_stdout(io.StringIO()):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            importlib.import_module(info.name)
    origin = Path(module.__file__ or "").resolve()
    if root not in origin.parents:
        raise ImportError(f"{package} was imported from {origin}, not from the checkout {root}")
    return module


def _register_tiny_clip() -> None:
    """Register the parity-size open_clip architecture (idempotent; refuses a different one)."""
    import open_clip

    existing = open_clip.get_model_config(TINY_CLIP_ARCH)
    if existing is not None:
        if existing != TINY_CLIP_CONFIG:
            raise ValueError(f"open_clip already has a different {TINY_CLIP_ARCH!r} config")
        return
    # open_clip reads the file into its registry on add; the file is not needed afterwards
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{TINY_CLIP_ARCH}.json"
        path.write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(path)
    if open_clip.get_model_config(TINY_CLIP_ARCH) is None:
        raise RuntimeError(f"open_clip did not register {TINY_CLIP_ARCH!r}")


def load_checkouts(
    imagedream: str | Path | None = None, mvdream: str | Path | None = None
) -> OfficialCheckouts:
    """Validate the checkout directories, install the shims and import their packages.

    `imagedream`: the ImageDream repo root or its extern/ImageDream; `mvdream`: the MVDream repo
    root (or any folder holding `mvdream/` and `scripts/t2i.py`).
    """
    if imagedream is None and mvdream is None:
        raise ValueError("give at least one of the imagedream / mvdream checkouts")
    roots: dict[str, Path | None] = {"imagedream": None, "mvdream": None}
    commits: dict[str, str | None] = {"imagedream": None, "mvdream": None}
    for package, directory in (("imagedream", imagedream), ("mvdream", mvdream)):
        if directory is None:
            continue
        root = _resolve_root(package, Path(directory))
        commits[package] = _git_commit(root, Path(directory))
        _import_package(package, root)
        roots[package] = root
    _register_tiny_clip()
    return OfficialCheckouts(
        imagedream_root=roots["imagedream"],
        mvdream_root=roots["mvdream"],
        imagedream_commit=commits["imagedream"],
        mvdream_commit=commits["mvdream"],
    )


def package_of(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return "mvdream" if kind == "mvdream" else "imagedream"


def script_module(checkouts: OfficialCheckouts, package: str) -> types.ModuleType:
    """Their demo.py / t2i.py, imported by file path (both guard their CLI with __main__)."""
    name = f"_official_{package}_script"
    if name in sys.modules:
        return sys.modules[name]
    path = checkouts.root(package) / _SCRIPTS[package]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    _import_package(package, checkouts.root(package))
    with missing_modules_shimmed():
        spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def demo_negative_text(checkouts: OfficialCheckouts) -> str:
    """The negative text of their demo.py (`neg_texts = "..."`), read from the script's source."""
    path = checkouts.root("imagedream") / _SCRIPTS["imagedream"]
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "neg_texts" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise ValueError(f'no `neg_texts = "..."` assignment in {path}')


def official_ddim_timesteps(checkouts: OfficialCheckouts, package: str, steps: int) -> np.ndarray:
    """The DDPM timesteps their DDIM sampler visits for `steps`, ascending (their function)."""
    util = importlib.import_module(f"{package}.ldm.modules.diffusionmodules.util")
    checkouts.root(package)
    return np.asarray(
        util.make_ddim_timesteps(
            ddim_discr_method="uniform",
            num_ddim_timesteps=steps,
            num_ddpm_timesteps=1000,
            verbose=False,
        )
    )


def check_steps(checkouts: OfficialCheckouts, package: str, steps: int) -> None:
    """Refuse step counts for which their schedule indexes past the 1000 DDPM steps."""
    timesteps = official_ddim_timesteps(checkouts, package, steps)
    if timesteps.max() >= 1000:
        raise ValueError(
            f"their make_ddim_timesteps gives {timesteps.tolist()} for {steps} steps: timestep "
            "1000 is past the schedule (their sampler raises IndexError). Step counts S with "
            "999 % (1000 // S) == 0 (3, 9, 27, 37, 111, ...) cannot run; pick another."
        )


# --------------------------------------------------------------------------------------- config


def official_config(kind: str, device: str = "cpu") -> DictConfig:
    """Their configs/*.yaml at the parity sizes, as an OmegaConf tree (`model: {target, params}`).

    kind "imagedream_local_pixel" mirrors imagedream/configs/sd_v2_base_ipmv.yaml, "imagedream_
    local" sd_v2_base_ipmv_local.yaml (the same network; it adds ip_weight 1.0, the default),
    "mvdream" mvdream/configs/sd-v2-base.yaml. One addition to theirs: the text encoder's
    `device` (their default "cuda" is where its tokens are sent).
    """
    package = package_of(kind)
    unet: dict[str, Any] = {
        "image_size": 8,  # unused by their UNet
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 32,
        "attention_resolutions": [1, 2],
        "num_res_blocks": 1,
        "channel_mult": [1, 2],
        "num_head_channels": 32,
        "use_spatial_transformer": True,
        "use_linear_in_transformer": True,
        "transformer_depth": 1,
        "context_dim": 64,
        "use_checkpoint": False,
        "legacy": False,
        "camera_dim": 16,
    }
    if package == "imagedream":
        unet |= {"with_ip": True, "ip_dim": 16, "ip_mode": "local_resample"}
        if kind == "imagedream_local":
            unet["ip_weight"] = 1.0
    vae = {
        "target": f"{package}.ldm.models.autoencoder.AutoencoderKL",
        "params": {
            "embed_dim": 4,
            "monitor": "val/rec_loss",
            "ddconfig": {
                "double_z": True,
                "z_channels": 4,
                "resolution": 64,
                "in_channels": 3,
                "out_ch": 3,
                "ch": 32,
                "ch_mult": [1, 2, 2, 2],
                "num_res_blocks": 1,
                "attn_resolutions": [],
                "dropout": 0.0,
            },
            "lossconfig": {"target": "torch.nn.Identity"},
        },
    }
    clip_params: dict[str, Any] = {
        "arch": TINY_CLIP_ARCH,
        "version": None,  # no pretrained weights: nothing is downloaded
        "device": device,
        "freeze": True,
        "layer": "penultimate",
    }
    if package == "imagedream":
        clip_params["ip_mode"] = "local_resample"
    clip = {"target": f"{package}.ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder"}
    clip["params"] = clip_params  # type: ignore[assignment]
    params: dict[str, Any] = {
        "linear_start": 0.00085,
        "linear_end": 0.0120,
        "timesteps": 1000,
        "scale_factor": 0.18215,
        "parameterization": "eps",
        "unet_config": {
            "target": f"{package}.ldm.modules.diffusionmodules.openaimodel.MultiViewUNetModel",
            "params": unet,
        },
    }
    if package == "imagedream":
        params |= {"vae_config": vae, "clip_config": clip}
    else:
        params |= {"first_stage_config": vae, "cond_stage_config": clip}
    target = f"{package}.ldm.interface.LatentDiffusionInterface"
    return OmegaConf.create({"model": {"target": target, "params": params}})
