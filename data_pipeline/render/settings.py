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
class RenderSettings:
    """Typed render config (SPEC 3 defaults). Cross-field checks in __post_init__."""

    num_views: int = 32
    rings: int = 2
    resolution: int = 256
    # Cycles samples per pixel (adaptive), then OpenImageDenoise: denoised 32 spp is clean for the
    # mostly diffuse Objaverse materials. On a CPU, denoising a 256 px view costs about as much as
    # 16 samples; with a GPU both are cheap.
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
    seed: int = 0  # base seed of a job; per-object seeds come from object_seed(seed, uid)

    def __post_init__(self) -> None:
        # JSON and OmegaConf hand over lists and dicts; keep one canonical form.
        for name in ("elevation_range_deg", "fov_range_deg", "distance_jitter"):
            setattr(self, name, _pair(getattr(self, name), name))
        if not isinstance(self.lights, LightSettings):
            self.lights = LightSettings(**dict(self.lights))
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
