"""What a render job asks for and what one ring draws: the typed render settings (SPEC 3
defaults, checked in __post_init__), the seeded per-ring random parameters (elevation, FoV,
distance, lighting) and the rendered-ring record. No Blender here: data_pipeline.render.blender turns
these into images; the job config, the worker and the benchmark only need this module.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract import cameras
from contract.schema import RingMeta

ENGINES = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE_NEXT"}
DEVICES = ("auto", "cpu", "gpu")
# Cycles' OpenImageDenoise options (Blender 4.2 enum identifiers).
DENOISE_PREFILTERS = ("NONE", "FAST", "ACCURATE")
DENOISE_QUALITIES = ("HIGH", "BALANCED", "FAST")
# CyclesSettings fields that are Cycles' light-path limits under the same name.
BOUNCE_FIELDS = (
    "max_bounces", "diffuse_bounces", "glossy_bounces", "transmission_bounces",
    "transparent_max_bounces", "volume_bounces",
)  # fmt: skip


def _pair(value: Any, name: str) -> tuple[float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 2:
        raise ValueError(f"{name}={value!r}: expected (low, high)")
    return values


@dataclass
class LightSettings:
    """Randomised lighting per ring (SPEC 3: no HDRIs offline, so world colour + two suns).

    Suns are fixed in the world for the whole ring (like an environment map), so all views of a
    ring see one consistent lighting. Energies are Blender sun strengths (W/m^2).
    """

    world_strength: tuple[float, float] = (0.4, 1.0)
    world_saturation_max: float = 0.25  # world colour: random hue, low saturation, value 1
    key_energy: tuple[float, float] = (2.0, 4.0)
    key_elevation_deg: tuple[float, float] = (25.0, 70.0)
    fill_ratio: tuple[float, float] = (0.2, 0.5)  # fill energy / key energy
    fill_elevation_deg: tuple[float, float] = (0.0, 40.0)
    light_saturation_max: float = 0.15

    def __post_init__(self) -> None:
        for name in ("world_strength", "key_energy", "key_elevation_deg", "fill_ratio"):
            setattr(self, name, _pair(getattr(self, name), name))
        self.fill_elevation_deg = _pair(self.fill_elevation_deg, "fill_elevation_deg")


@dataclass
class CyclesSettings:
    """Cycles' sampling, light paths, denoiser and scene cache (EEVEE ignores them).

    Tuned on bench/results/render_quality.md (`make bench-render-quality`): against a 1024 spp
    reference without a denoiser they score the mean PSNR and SSIM of the settings before
    (BlenderProc 2.8's defaults, OIDN prefilter Accurate) or better, in about half the seconds
    per view; one object of seven loses 1.1 dB (docs/RENDERING.md, "Render settings and
    speed"). The GPU path uses the same settings.
    """

    # A pixel stops sampling once its noise is below this (0: Cycles derives it from `samples`);
    # 0.01 is Blender's default. `adaptive_sampling: false` samples every pixel `samples` times.
    adaptive_sampling: bool = True
    adaptive_threshold: float = 0.04
    # Samples before a pixel may stop. 0: Cycles derives it from the threshold (42 at 0.04,
    # more than 32 samples: no pixel would stop early).
    adaptive_min_samples: int = 8
    # "NONE": OIDN trusts the albedo and normal passes as they are (no extra filter runs on them;
    # they are nearly noise-free for opaque surfaces); "ACCURATE" filters both first (3 runs).
    denoise_prefilter: str = "NONE"  # DENOISE_PREFILTERS
    denoise_quality: str = "HIGH"  # DENOISE_QUALITIES
    denoise_on_gpu: bool = True  # only when the render itself runs on a GPU
    # Light paths (Objaverse assets are mostly diffuse and opaque).
    max_bounces: int = 3
    diffuse_bounces: int = 3
    glossy_bounces: int = 1  # 0 drops every glossy reflection of the world and the object
    transmission_bounces: int = 0
    transparent_max_bounces: int = 8
    volume_bounces: int = 0
    # Cycles' light tree picks which light (two suns, the world) a shading point samples by its
    # likely contribution instead of uniformly: less noise per sample.
    light_tree: bool = True
    pixel_filter_width: float = 1.5  # Blackman-Harris width in pixels (Blender's default)
    # Keep the synced scene (BVH, shaders, textures) between the frames of a ring.
    persistent_data: bool = True
    spatial_splits: bool = True  # slower BVH build, faster traversal

    def __post_init__(self) -> None:
        if self.adaptive_threshold < 0:
            raise ValueError(f"cycles.adaptive_threshold={self.adaptive_threshold}: need >= 0")
        if self.adaptive_min_samples < 0:
            raise ValueError(f"cycles.adaptive_min_samples={self.adaptive_min_samples}: need >= 0")
        if self.denoise_prefilter not in DENOISE_PREFILTERS:
            raise ValueError(
                f"cycles.denoise_prefilter={self.denoise_prefilter!r}: expected one of "
                f"{DENOISE_PREFILTERS}"
            )
        if self.denoise_quality not in DENOISE_QUALITIES:
            raise ValueError(
                f"cycles.denoise_quality={self.denoise_quality!r}: expected one of "
                f"{DENOISE_QUALITIES}"
            )
        for name in BOUNCE_FIELDS:
            if getattr(self, name) < 0:
                raise ValueError(f"cycles.{name}={getattr(self, name)}: need >= 0")
        if not 0.01 <= self.pixel_filter_width <= 10.0:
            raise ValueError(
                f"cycles.pixel_filter_width={self.pixel_filter_width}: need 0.01 .. 10 pixels"
            )


# What rings were rendered with before the Cycles settings were typed (job.json without a
# "cycles" entry): BlenderProc 2.8's init defaults and Blender 4.2's denoiser defaults, read from
# a live scene. bench/render_quality.py's "before" row; a job resuming such a folder compares
# its settings with these.
UNRECORDED_CYCLES = CyclesSettings(
    adaptive_threshold=0.01, adaptive_min_samples=0, denoise_prefilter="ACCURATE",
    glossy_bounces=0, light_tree=False,
)  # fmt: skip


@dataclass
class RenderSettings:
    """Typed render config (SPEC 3 defaults). Cross-field checks in __post_init__."""

    num_views: int = 32
    rings: int = 2
    resolution: int = 256
    # Cycles samples per pixel at most (adaptive sampling stops converged pixels earlier, see
    # CyclesSettings), then OpenImageDenoise; bench/results/render_quality.md has the trade-off.
    samples: int = 32
    denoise: bool = True
    engine: str = "cycles"
    device: str = "auto"  # "auto": GPU when Cycles finds one, else CPU (recorded per ring)
    elevation_range_deg: tuple[float, float] = (0.0, 30.0)
    fov_range_deg: tuple[float, float] = (15.0, 60.0)
    distance_jitter: tuple[float, float] = (0.9, 1.1)
    framing: str = "mvdream"  # or "bounding_sphere" (see cameras.distance_for_fov)
    view_transform: str = "Standard"  # colour management: textures keep their colours
    lights: LightSettings = field(default_factory=LightSettings)
    cycles: CyclesSettings = field(default_factory=CyclesSettings)
    # CPU threads of one render process; 0: the job gives each render process its
    # `ray.cpus_per_worker` (all cores when Blender runs outside a job).
    threads: int = 0
    seed: int = 0  # base seed of a job; per-object seeds come from object_seed(seed, uid)

    def __post_init__(self) -> None:
        # JSON and OmegaConf hand over lists and dicts; keep one canonical form.
        for name in ("elevation_range_deg", "fov_range_deg", "distance_jitter"):
            setattr(self, name, _pair(getattr(self, name), name))
        if not isinstance(self.lights, LightSettings):
            self.lights = LightSettings(**dict(self.lights))
        if not isinstance(self.cycles, CyclesSettings):
            self.cycles = CyclesSettings(**dict(self.cycles))
        if self.threads < 0:
            raise ValueError(f"threads={self.threads}: need >= 0 (0: automatic)")
        if not cameras.has_target_views(self.num_views):
            raise ValueError(
                f"num_views={self.num_views}: must be a positive multiple of 4 so the training "
                "targets at azimuth 0/90/180/270 are views of the ring (SPEC 3)"
            )
        if self.rings < 1:
            raise ValueError(f"rings={self.rings}: need at least one ring per object")
        if self.resolution < 8:
            raise ValueError(f"resolution={self.resolution}: too small to render")
        if self.samples < 1:
            raise ValueError(f"samples={self.samples}: need at least one sample per pixel")
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r}: expected one of {sorted(ENGINES)}")
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r}: expected one of {DEVICES}")
        if self.framing not in ("mvdream", "bounding_sphere"):
            raise ValueError(f"framing={self.framing!r}: expected 'mvdream' or 'bounding_sphere'")
        lo, hi = self.elevation_range_deg
        if not -90.0 < lo <= hi < 90.0:
            raise ValueError(f"elevation_range_deg={self.elevation_range_deg}: need -90<lo<=hi<90")
        lo, hi = self.fov_range_deg
        if not 0.0 < lo <= hi < 180.0:
            raise ValueError(f"fov_range_deg={self.fov_range_deg}: need 0<lo<=hi<180")
        lo, hi = self.distance_jitter
        if not 0.0 < lo <= hi:
            raise ValueError(f"distance_jitter={self.distance_jitter}: need 0<lo<=hi")


@dataclass
class RingParams:
    """The random draws of one ring (all recorded in RingMeta)."""

    ring: int
    elevation_deg: float
    fov_deg: float
    distance: float
    jitter: float
    lights: dict[str, Any]
    cycles_seed: int


@dataclass
class RenderedRing:
    """One rendered ring: metadata, PNG bytes per view, and time spent in Blender's render call."""

    meta: RingMeta
    views_png: list[bytes]  # (V,) PNG, RGBA straight alpha
    blender_seconds: float


def object_seed(base_seed: int, uid: str) -> int:
    """A stable per-object seed (independent of job order and Python's hash randomisation)."""
    digest = hashlib.sha256(f"{base_seed}:{uid}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _light_colour(rng: np.random.Generator, saturation_max: float) -> list[float]:
    hue, sat = float(rng.uniform()), float(rng.uniform(0.0, saturation_max))
    return [round(c, 6) for c in colorsys.hsv_to_rgb(hue, sat, 1.0)]


def sample_ring_params(settings: RenderSettings, seed: int) -> list[RingParams]:
    """Every ring's random parameters from one Generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    light = settings.lights
    rings = []
    for ring in range(settings.rings):
        elevation = _uniform(rng, settings.elevation_range_deg)
        fov = _uniform(rng, settings.fov_range_deg)
        jitter = _uniform(rng, settings.distance_jitter)
        distance = cameras.distance_for_fov(fov, settings.framing, jitter)
        key_azimuth = float(rng.uniform(0.0, 360.0))
        key_energy = _uniform(rng, light.key_energy)
        lights = {
            "world_color": _light_colour(rng, light.world_saturation_max),
            "world_strength": _uniform(rng, light.world_strength),
            "key": {
                "type": "SUN",
                "azimuth_deg": key_azimuth,
                "elevation_deg": _uniform(rng, light.key_elevation_deg),
                "energy": key_energy,
                "color": _light_colour(rng, light.light_saturation_max),
            },
            "fill": {
                "type": "SUN",
                # roughly opposite the key, so the key's shadow side is not black
                "azimuth_deg": (key_azimuth + 180.0 + float(rng.uniform(-45.0, 45.0))) % 360.0,
                "elevation_deg": _uniform(rng, light.fill_elevation_deg),
                "energy": key_energy * _uniform(rng, light.fill_ratio),
                "color": _light_colour(rng, light.light_saturation_max),
            },
        }
        cycles_seed = int(rng.integers(0, 2**31 - 1))
        rings.append(RingParams(ring, elevation, fov, distance, jitter, lights, cycles_seed))
    return rings
