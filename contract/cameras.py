"""The camera convention of the whole pipeline (SPEC section 2) and the ring convention built on
it (SPEC 3). One owner: every other module imports these functions instead of re-deriving a
look-at, a view index or the view-count rule.

World: Blender's, right-handed, z up; objects normalised into [-0.5, 0.5]^3.
Poses: 4x4 camera-to-world (c2w) with OpenGL/Blender camera axes: columns are right, up,
backward; the camera looks down its own -z.
Azimuth 0 puts the camera on -Y looking at the origin, azimuth 90 on +X (counter-clockwise seen
from above); elevation is the angle above the xy-plane. This is also the frame MVDream's released
sampler uses (its y-up look-at followed by its OpenGL->Blender flip), so their checkpoints see the
same camera vectors as ours.
Rings: V views evenly spaced over 360 degrees from azimuth 0, so view i is at azimuth i x 360 / V,
view 0 is the front, and the 4 targets at 0/90/180/270 exist exactly when V is a positive
multiple of 4 (`has_target_views`; render settings, the training config and the training stream
all refuse any other V).

Shapes: N cameras, P points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

CONVENTION = "blender-zup_c2w-opengl_az0-negY_v1"

# Half the diagonal of the unit cube: the radius of the normalised object's bounding sphere.
BOUNDING_SPHERE_RADIUS = math.sqrt(3.0) / 2.0
# SPEC 3 / 6: the model's 4 views, front first (training targets and sampling cameras)
CANONICAL_AZIMUTHS_DEG = (0.0, 90.0, 180.0, 270.0)
# SPEC 3: a ring starts at azimuth 0, so its view 0 is the object's front: the first target and
# the evaluation prompt (training draws its prompt from `prompt_candidates`)
FRONT_VIEW = 0


def camera_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """World position of a camera on the sphere of radius `distance` around the origin."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array(
        [
            distance * math.cos(el) * math.sin(az),
            -distance * math.cos(el) * math.cos(az),
            distance * math.sin(el),
        ],
        dtype=np.float64,
    )


def look_at_c2w(
    position: np.ndarray, target: np.ndarray | None = None, world_up: np.ndarray | None = None
) -> np.ndarray:
    """4x4 c2w whose -z axis points from `position` to `target` (OpenGL camera axes)."""
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    world_up = np.array([0.0, 0.0, 1.0]) if world_up is None else np.asarray(world_up, float)
    position = np.asarray(position, dtype=np.float64)
    forward = target - position
    norm = np.linalg.norm(forward)
    if norm < 1e-9:
        raise ValueError("camera position coincides with its target")
    forward /= norm
    right = np.cross(forward, world_up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("camera looks along the world up axis: elevation must stay below 90")
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4, dtype=np.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


def orbit_c2w(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """c2w of a camera on the orbit around the origin, looking at the origin."""
    return look_at_c2w(camera_position(azimuth_deg, elevation_deg, distance))


def ring_azimuths(num_views: int, start_deg: float = 0.0) -> np.ndarray:
    """`num_views` azimuths evenly spaced over 360 degrees from `start_deg`.  # (N,)"""
    return (start_deg + np.arange(num_views) * (360.0 / num_views)) % 360.0


def ring_c2w(azimuths_deg: np.ndarray, elevation_deg: float, distance: float) -> np.ndarray:
    """One c2w per azimuth at a shared elevation and distance.  # (N, 4, 4)"""
    return np.stack([orbit_c2w(float(a), elevation_deg, distance) for a in azimuths_deg])


def has_target_views(num_views: int) -> bool:
    """True when a ring of `num_views` views has a view at each of CANONICAL_AZIMUTHS_DEG (SPEC 3):
    `num_views` is a positive multiple of 4."""
    return num_views > 0 and num_views % len(CANONICAL_AZIMUTHS_DEG) == 0


def view_indices(num_views: int, azimuths_deg: Iterable[float]) -> list[int]:
    """Indices of the views at `azimuths_deg` on a ring of `num_views` views (the inverse of
    `ring_azimuths`); refuses a ring that has no view at one of them."""
    step = 360.0 / num_views
    out = []
    for az in azimuths_deg:
        index = az / step
        if abs(index - round(index)) > 1e-6:
            raise ValueError(f"a ring of {num_views} views has no view at azimuth {az}")
        out.append(round(index) % num_views)
    return out


def target_views(num_views: int) -> list[int]:
    """Indices of the 4 targets, the views at azimuth 0/90/180/270: 0, V/4, V/2, 3V/4 (SPEC 3);
    ValueError unless `has_target_views`."""
    if not has_target_views(num_views):
        raise ValueError(
            f"a ring of {num_views} views has no views at exactly 0/90/180/270 degrees: the view "
            "count must be a multiple of 4"
        )
    return view_indices(num_views, CANONICAL_AZIMUTHS_DEG)


def prompt_candidates(azimuths_deg: Sequence[float]) -> list[int]:
    """Views with azimuth in [-90, 90], both ends included (SPEC 3): where training draws its image
    prompt; symmetric about the front, V/2 + 1 candidates on a ring with `has_target_views`."""
    wrapped = (np.asarray(azimuths_deg, dtype=np.float64) + 180.0) % 360.0 - 180.0
    return [i for i, a in enumerate(wrapped) if abs(a) <= 90.0 + 1e-6]


def distance_for_fov(fov_deg: float, framing: str, jitter: float = 1.0) -> float:
    """Camera distance for a vertical FoV.

    framing="mvdream": 0.5 / tan(fov/2) x jitter (MVDream's rule; the unit cube's half side fills
    the half-height, so corners can leave the frame). framing="bounding_sphere": the whole bounding
    sphere stays inside the frame for every azimuth and elevation (jitter >= 1 only zooms out).
    """
    half = math.radians(fov_deg) / 2.0
    if framing == "mvdream":
        return 0.5 / math.tan(half) * jitter
    if framing == "bounding_sphere":
        return BOUNDING_SPHERE_RADIUS / math.sin(half) * max(jitter, 1.0)
    raise ValueError(f"unknown framing {framing!r}; expected 'mvdream' or 'bounding_sphere'")


def intrinsics(fov_deg: float, width: int, height: int | None = None) -> np.ndarray:
    """3x3 pinhole matrix from a vertical FoV; square pixels, principal point at the centre."""
    height = width if height is None else height
    f = (height / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def project(
    points: np.ndarray, c2w: np.ndarray, fov_deg: float, width: int, height: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x right, y down, pixel centres at +0.5) of world points.

    Returns (uv, depth): uv (P, 2) and depth (P,) along the viewing direction (positive in front).
    """
    height = width if height is None else height
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]  # (P, 3) in camera axes
    depth = -cam[:, 2]
    k = intrinsics(fov_deg, width, height)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = k[0, 2] + k[0, 0] * cam[:, 0] / depth
        v = k[1, 2] - k[1, 1] * cam[:, 1] / depth
    return np.stack([u, v], axis=-1), depth


# SPEC 2: the width of the network's camera input, the flattened 4x4 camera-to-world matrix
CAMERA_DIM = 16


def network_camera(c2w: np.ndarray) -> np.ndarray:
    """The network's camera input (SPEC section 2): the flattened (row-major) 4x4 c2w with its
    translation rescaled to unit length.  (..., 4, 4) -> (..., 16)"""
    c2w = np.array(c2w, dtype=np.float32, copy=True)
    t = c2w[..., :3, 3]
    norm = np.linalg.norm(t, axis=-1, keepdims=True)
    c2w[..., :3, 3] = t / np.maximum(norm, 1e-8)
    return c2w.reshape(*c2w.shape[:-2], CAMERA_DIM)


def canonical_order(azimuths_deg: np.ndarray) -> list[int]:
    """Indices that put views sampled at `azimuths_deg` in the canonical order 0/90/180/270
    (SPEC 3's targets, where held-out rings have their true renders)."""
    position = {round(float(a)) % 360: i for i, a in enumerate(azimuths_deg)}
    wanted = [round(a) % 360 for a in CANONICAL_AZIMUTHS_DEG]
    if sorted(position) != sorted(wanted) or len(position) != len(azimuths_deg):
        raise ValueError(
            f"views at azimuths {[float(a) for a in azimuths_deg]} are not the canonical "
            f"{list(CANONICAL_AZIMUTHS_DEG)} in some order (an azimuth start that is not a "
            "multiple of 90 degrees)"
        )
    return [position[a] for a in wanted]
