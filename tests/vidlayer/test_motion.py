import cv2
import numpy as np
import pytest
import skimage.data

from vidlayer.motion import (backward_warp, chain_homographies, estimate_motion, fit_camera, homography_flow,
                             invert_flow, plane_residual, residual_flow, to_full, to_working, warp_to)

WIDTH, HEIGHT = 256, 144


def camera_path(num_frames: int) -> np.ndarray:
    """[T, 3, 3] photo-to-frame homographies: a pan with a slow zoom, a little roll and some perspective."""
    frames = []
    for t in range(num_frames):
        angle, zoom = 0.004 * t, 1.0 + 0.01 * t
        cos, sin = zoom * np.cos(angle), zoom * np.sin(angle)
        frames.append(np.array([[cos, -sin, -40.0 - 3.0 * t], [sin, cos, -30.0 - 1.0 * t], [2e-5 * t, 0.0, 1.0]]))
    return np.stack(frames)


def filmed(path: np.ndarray) -> np.ndarray:
    """A photo seen through the camera `path`: pure camera motion, nothing moves on its own."""
    photo = skimage.data.astronaut()
    return np.stack([cv2.warpPerspective(photo, h, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR) for h in path])


def transfer_error(estimated: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance, in pixels, between where two homographies send a grid over the frame."""
    points = np.stack(np.meshgrid(np.linspace(0, WIDTH - 1, 9), np.linspace(0, HEIGHT - 1, 5)), -1).reshape(-1, 1, 2)
    return float(np.linalg.norm(cv2.perspectiveTransform(points, estimated) - cv2.perspectiveTransform(points, truth),
                                axis=-1).mean())


@pytest.mark.parametrize("work_short_side", [240, 72])  # full resolution, and half
def test_estimate_motion_recovers_the_camera_in_full_resolution_pixels(work_short_side):
    path = camera_path(9)
    motion = estimate_motion(filmed(path), work_short_side=work_short_side)
    assert motion.scale == pytest.approx(min(1.0, work_short_side / HEIGHT))
    h, w = round(HEIGHT * motion.scale), round(WIDTH * motion.scale)
    assert motion.flow.shape == (8, h, w, 2) and motion.flow.dtype == np.float32
    assert motion.homographies.shape == (8, 3, 3) and motion.homographies.dtype == np.float64
    for t, estimated in enumerate(motion.homographies):
        truth = path[t + 1] @ np.linalg.inv(path[t])
        assert transfer_error(estimated, truth) < 0.3 / motion.scale


def test_residual_flow_vanishes_under_pure_camera_motion():
    motion = estimate_motion(filmed(camera_path(9)))
    residual = np.linalg.norm(residual_flow(motion), axis=-1)
    assert np.median(residual) < 0.1 and np.percentile(residual, 95) < 0.5
    # The camera flow does account for real motion: the raw flow is several pixels.
    assert np.median(np.linalg.norm(motion.flow, axis=-1)) > 2


def test_a_camera_tracking_a_large_subject_follows_the_background_at_the_border():
    """The subject holds still in the frame and fills most of it; the background slides past around it.
    The largest consistent motion is the subject's, but the border's is the camera's."""
    flow = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    flow[..., 0] = 3.0
    flow[25:-15, 35:-35] = 0.0  # the tracked subject: 2/3 of the frame
    camera = fit_camera(flow, scale=1.0)
    assert np.allclose(camera, [[1, 0, 3], [0, 1, 0], [0, 0, 1]], atol=1e-3)


def pan_and(region: tuple[slice, slice], motion: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """[1, h, w, 2] flow of a 2-pixel pan with `region` moving by `motion` instead, and the pan's flow."""
    camera = np.zeros((1, HEIGHT, WIDTH, 2), np.float32)
    camera[..., 0] = 2.0
    flow = camera.copy()
    flow[(0, *region)] = motion
    return flow, camera


def test_a_near_background_plane_is_not_independent_motion_but_a_subject_still_is():
    """Parallax: a near ground band slides faster than the far backdrop, along the whole bottom edge."""
    flow, camera = pan_and((slice(-45, None), slice(None)), (6.0, 0.0))
    flow[0, 30:70, 100:150] = (0.0, 3.0)  # a subject moving on its own, away from the border
    residual = np.linalg.norm(plane_residual(flow, camera), axis=-1)[0]
    assert np.median(residual[-40:]) < 0.1 and np.median(residual[:25]) < 0.1
    assert np.median(residual[35:65, 105:145]) > 3.0


def test_a_second_motion_away_from_the_border_is_no_background_plane():
    flow, camera = pan_and((slice(30, 110), slice(60, 200)), (6.0, 0.0))  # a large subject inside the frame
    residual = np.linalg.norm(plane_residual(flow, camera), axis=-1)[0]
    assert np.median(residual[40:100, 70:190]) > 3.5


def test_static_frames_give_the_identity():
    motion = estimate_motion(filmed(camera_path(1)).repeat(4, axis=0))
    assert np.allclose(motion.homographies, np.eye(3), atol=1e-3)
    assert np.abs(motion.flow).max() < 0.1


def test_chained_homographies_compose_and_invert():
    steps = np.stack([h2 @ np.linalg.inv(h1) for h1, h2 in zip(camera_path(5), camera_path(5)[1:])])
    forward = chain_homographies(steps, 0, 4)
    expected = camera_path(5)[4] @ np.linalg.inv(camera_path(5)[0])
    assert np.allclose(forward, expected / expected[2, 2])
    assert np.allclose(chain_homographies(steps, 4, 0), np.linalg.inv(forward) / np.linalg.inv(forward)[2, 2])
    assert np.allclose(chain_homographies(steps, 2, 2), np.eye(3))


def test_resolution_changes_round_trip_and_respect_pixel_centres():
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])
    assert np.allclose(to_full(shift, 0.5)[:2, 2], [6.0, -4.0])  # a shift doubles at twice the resolution
    h = camera_path(3)[2]
    assert np.allclose(to_working(to_full(h, 0.25), 0.25), h / h[2, 2])


def test_homography_flow_and_warps_agree():
    image = filmed(camera_path(1))[0]
    h = camera_path(2)[1] @ np.linalg.inv(camera_path(2)[0])
    moved = warp_to(image, h)
    flow = homography_flow(h, HEIGHT, WIDTH)
    # Following the camera's flow from a pixel of `image` lands on the same colour in `moved`.
    back = backward_warp(moved, flow)
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(back[inner].astype(int) - image[inner].astype(int)).mean() < 4


def test_invert_flow_undoes_a_smooth_flow():
    ys, xs = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    flow = np.stack([2.0 + 0.02 * ys, -1.0 + 0.01 * xs], axis=-1)  # a gentle shear
    inverse = invert_flow(flow)
    # Going forward then back returns to the start: f(x) + g(x + f(x)) = 0.
    roundtrip = flow + backward_warp(inverse, flow)
    assert np.abs(roundtrip[10:-10, 10:-10]).max() < 0.05
