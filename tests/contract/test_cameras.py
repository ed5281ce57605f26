"""The camera convention (SPEC 2): azimuth 0 on -Y, 90 on +X, elevation above the xy-plane,
OpenGL camera axes in a right-handed c2w looking at the origin, vertical FoV."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from contract import cameras


@pytest.mark.parametrize(
    ("azimuth", "expected"),
    [(0, (0, -2, 0)), (90, (2, 0, 0)), (180, (0, 2, 0)), (270, (-2, 0, 0))],
)
def test_azimuth_zero_on_negative_y_and_ninety_on_positive_x(azimuth, expected):
    c2w = cameras.orbit_c2w(azimuth, 0.0, 2.0)
    np.testing.assert_allclose(c2w[:3, 3], expected, atol=1e-12)


def test_elevation_is_the_angle_above_the_xy_plane():
    position = cameras.orbit_c2w(30.0, 25.0, 3.0)[:3, 3]
    assert math.degrees(math.asin(position[2] / np.linalg.norm(position))) == pytest.approx(25.0)
    assert np.linalg.norm(position) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("azimuth", "elevation"), list(itertools.product([0, 37, 90, 200, 333], [0, 15, 30, -10]))
)
def test_c2w_is_a_rotation_looking_at_the_origin(azimuth, elevation):
    c2w = cameras.orbit_c2w(azimuth, elevation, 1.7)
    rot, position = c2w[:3, :3], c2w[:3, 3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)  # right-handed, not mirrored
    np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
    # The camera looks down its -z: -z points from the camera to the origin.
    np.testing.assert_allclose(-rot[:, 2], -position / np.linalg.norm(position), atol=1e-12)
    # Upright: the right axis is horizontal and the up axis has a positive world-z component.
    assert abs(rot[2, 0]) < 1e-12
    assert rot[2, 1] > 0


def test_projection_is_not_mirrored_and_not_upside_down():
    """From the front camera (azimuth 0) +X is on the right of the image and +Z at the top."""
    c2w = cameras.orbit_c2w(0.0, 0.0, 3.0)
    points = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.3]])
    uv, depth = cameras.project(points, c2w, 40.0, 100)
    np.testing.assert_allclose(uv[0], [50.0, 50.0])
    assert uv[1, 0] > 50 and uv[1, 1] == pytest.approx(50)
    assert uv[2, 1] < 50 and uv[2, 0] == pytest.approx(50)
    np.testing.assert_allclose(depth, 3.0)
    # Seen from azimuth 90 (camera on +X) the object's -Y side (its front) is on the left.
    uv90, _ = cameras.project(np.array([[0.0, -0.3, 0.0]]), cameras.orbit_c2w(90, 0, 3.0), 40, 100)
    assert uv90[0, 0] < 50


def test_fov_is_vertical_and_reaches_the_image_edge():
    fov, size = 50.0, 64
    c2w = cameras.orbit_c2w(0.0, 0.0, 2.0)
    top = np.array([[0.0, 0.0, 2.0 * math.tan(math.radians(fov / 2))]])  # on the top frustum plane
    uv, _ = cameras.project(top, c2w, fov, size, size * 2)
    assert uv[0, 1] == pytest.approx(0.0, abs=1e-9)
    k = cameras.intrinsics(fov, size, size * 2)
    assert k[1, 1] == pytest.approx(size / math.tan(math.radians(fov / 2)))  # from the height


def test_ring_azimuths_put_targets_at_quarter_turns():
    az = cameras.ring_azimuths(32)
    assert az[[0, 8, 16, 24]].tolist() == [0.0, 90.0, 180.0, 270.0]
    rings = cameras.ring_c2w(az, 10.0, 2.0)
    assert rings.shape == (32, 4, 4)


def test_view_indices_of_a_ring() -> None:  # was evaluation's target_view_indices
    assert cameras.view_indices(32, [0, 90, 180, 270]) == [0, 8, 16, 24]
    assert cameras.view_indices(8, [0, 90, 180, 270]) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="no view at azimuth"):
        cameras.view_indices(6, [0, 90, 180, 270])


def test_ring_convention_has_one_rule_for_view_count_targets_and_front():
    """SPEC 3: targets exist exactly for positive multiples of 4 and are 0, V/4, V/2, 3V/4 (the
    formula training used before it moved here); view 0 is the front and a prompt candidate."""
    for v in range(-8, 4001):
        assert cameras.has_target_views(v) == (v > 0 and v % 4 == 0)
        if not cameras.has_target_views(v):
            with pytest.raises(ValueError, match="multiple of 4"):
                cameras.target_views(v)
            continue
        targets = cameras.target_views(v)
        assert targets == [k * v // 4 for k in range(4)]
        azimuths = cameras.ring_azimuths(v)
        np.testing.assert_allclose(azimuths[targets], cameras.CANONICAL_AZIMUTHS_DEG, atol=1e-9)
        assert cameras.view_indices(v, azimuths) == list(range(v))
        assert targets[0] == cameras.FRONT_VIEW
        assert cameras.FRONT_VIEW in cameras.prompt_candidates(azimuths)


def test_network_camera_has_unit_translation_and_row_major_layout():
    c2w = cameras.ring_c2w(cameras.ring_azimuths(4), 20.0, 2.5)
    vec = cameras.network_camera(c2w)
    assert vec.shape == (4, 16)
    translation = vec[:, [3, 7, 11]]
    np.testing.assert_allclose(np.linalg.norm(translation, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(vec[:, :3], c2w[:, 0, :3], rtol=1e-6)  # first row of rotation


@pytest.mark.parametrize("fov", [15.0, 40.0, 60.0])
def test_bounding_sphere_framing_keeps_every_corner_in_frame(fov):
    corners = np.array(list(itertools.product([-0.5, 0.5], repeat=3)))
    distance = cameras.distance_for_fov(fov, "bounding_sphere", jitter=0.9)
    for azimuth, elevation in itertools.product(range(0, 360, 15), [0.0, 15.0, 30.0]):
        uv, depth = cameras.project(
            corners, cameras.orbit_c2w(azimuth, elevation, distance), fov, 64
        )
        assert (depth > 0).all()
        assert ((uv >= 0) & (uv <= 64)).all()


def test_mvdream_framing_follows_its_formula():
    assert cameras.distance_for_fov(60.0, "mvdream", 1.1) == pytest.approx(
        0.5 / math.tan(math.radians(30.0)) * 1.1
    )
    with pytest.raises(ValueError, match="framing"):
        cameras.distance_for_fov(60.0, "orbit")


def test_canonical_order_puts_views_front_first():
    assert cameras.canonical_order(np.array([0.0, 90.0, 180.0, 270.0])) == [0, 1, 2, 3]
    # MVDream's views start at azimuth 90: the front is its last view
    assert cameras.canonical_order(np.array([90.0, 180.0, 270.0, 0.0])) == [3, 0, 1, 2]
    assert cameras.canonical_order(np.array([90.0, 180.0, 270.0, 360.0])) == [3, 0, 1, 2]
    with pytest.raises(ValueError, match="not the canonical"):
        cameras.canonical_order(np.array([45.0, 135.0, 225.0, 315.0]))
