import numpy as np
import pytest

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.config import parse_pipeline


def stages(**filter_params):
    pipeline = parse_pipeline({"stages": [{"stage": "decode"}, {"stage": "filter", "params": filter_params}]})
    return [s.build() for s in pipeline.stages]


def run(path, **filter_params):
    decode, filt = stages(**filter_params)
    clip = Clip(key="k", input_key="k", path=str(path), source=path.name, captions=Captions("c"))
    return filt.process(decode.process(clip))


def test_a_single_moving_shot_passes_whole(write_video, square_frames):
    path = write_video("a.mp4", square_frames(48, 320, 240), fps=24)
    [clip] = run(path)
    assert clip.key == "k_s00" and clip.span == (0.0, pytest.approx(2.0))
    assert clip.metrics["filter_shots"] == 1 and clip.metrics["filter_activity"] > 0.4


def test_a_cut_splits_into_two_shots(write_video, square_frames):
    frames = np.concatenate([square_frames(40, 320, 240, "coffee"), square_frames(40, 320, 240, "astronaut")])
    path = write_video("cut.mp4", frames, fps=20)
    shots = run(path)
    assert [s.key for s in shots] == ["k_s00", "k_s01"]
    # The cut is at 2.0 s; each span stays on its own side of it.
    assert shots[0].span[1] <= 2.0 <= shots[1].span[0] + 1 / 8
    with pytest.raises(Drop) as drop:
        run(path, shot_cuts="drop")
    assert drop.value.reason == "shot_cut"


def test_static_footage_is_dropped(write_video, square_frames):
    still = np.repeat(square_frames(1, 320, 240), 32, axis=0)
    with pytest.raises(Drop) as drop:
        run(write_video("still.mp4", still))
    assert drop.value.reason == "too_static"


def test_blank_frames_are_cut_out(write_video, square_frames):
    frames = np.concatenate([np.zeros((24, 240, 320, 3), np.uint8), square_frames(32, 320, 240)])
    [clip] = run(write_video("fade.mp4", frames, fps=16))
    assert clip.span[0] >= 1.5
    with pytest.raises(Drop) as drop:
        run(write_video("black.mp4", np.zeros((32, 240, 320, 3), np.uint8)))
    assert drop.value.reason == "blank"


def test_shaky_footage_is_dropped(write_video, square_frames):
    rng = np.random.default_rng(0)
    big = square_frames(48, 400, 300)
    jitter = rng.integers(-20, 21, size=(48, 2))
    frames = np.stack([f[40 + dy: 280 + dy, 40 + dx: 360 + dx] for f, (dx, dy) in zip(big, jitter)])
    with pytest.raises(Drop) as drop:
        run(write_video("shaky.mp4", np.ascontiguousarray(frames), fps=16))
    assert drop.value.reason == "too_shaky"


@pytest.mark.parametrize("params, reason", [
    ({"min_duration_s": 5.0}, "duration_out_of_bounds"),
    ({"min_fps": 30.0}, "fps_out_of_bounds"),
    ({"min_short_side": 480}, "resolution_out_of_bounds"),
    ({"max_long_side": 300}, "resolution_out_of_bounds"),
])
def test_bounds(write_video, square_frames, params, reason):
    path = write_video("a.mp4", square_frames(32, 320, 240), fps=16)
    with pytest.raises(Drop) as drop:
        run(path, **params)
    assert drop.value.reason == reason


def test_a_1000_fps_clip_is_dropped_for_its_frame_rate(write_video, square_frames):
    """0.1 s at 1000 fps, less than one proxy step: the rate is the reason, not a frame count or the length."""
    path = write_video("fast.mp4", square_frames(100, 320, 240), fps=1000)
    with pytest.raises(Drop) as drop:
        run(path)
    assert drop.value.reason == "fps_out_of_bounds"
    assert drop.value.message == "1000.00 fps is outside [8.0, 240.0] fps"
