import numpy as np
import pytest

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.config import parse_pipeline
from vidlayer.stages.window import four_n_plus_one, target_size


def windows(path, **params):
    pipeline = parse_pipeline({"stages": [{"stage": "decode"}, {"stage": "filter"}, {"stage": "window", "params": params}]})
    decode, filt, window = [s.build() for s in pipeline.stages]
    clip = Clip(key="k", input_key="k", path=str(path), source=path.name, captions=Captions("c"))
    return [w for shot in filt.process(decode.process(clip)) for w in window.process(shot)]


def test_window_has_4n_plus_1_frames_at_the_training_rate_and_size(write_video, square_frames):
    path = write_video("a.mp4", square_frames(96, 320, 240), fps=24)  # 4 s
    [w] = windows(path, num_frames=49, fps=16, short_side=128)
    assert w.key == "k_s00w00" and w.frames.shape == (49, 128, 176, 3) and w.fps == 16
    assert w.span[1] - w.span[0] == pytest.approx(49 / 16)
    # Centred in the 4 s shot.
    assert w.span[0] == pytest.approx((4 - 49 / 16) / 2, abs=1 / 16)


def test_frames_follow_the_source_timeline(write_video, square_frames):
    source = square_frames(48, 320, 240)
    path = write_video("a.mp4", source, fps=24)
    [w] = windows(path, num_frames=17, fps=12, short_side=240)
    expected = source[np.round((w.span[0] + np.arange(17) / 12) * 24).astype(int)]
    assert np.abs(w.frames.astype(int) - expected).mean() < 3


def test_short_shots_shrink_to_4n_plus_1_or_drop(write_video, square_frames):
    path = write_video("a.mp4", square_frames(30, 320, 240), fps=24)  # 1.25 s: 20 frames at 16 fps
    [w] = windows(path, num_frames=49, min_frames=17)
    assert len(w.frames) == 17
    with pytest.raises(Drop) as drop:
        windows(path, num_frames=49, min_frames=21)
    assert drop.value.reason == "shot_too_short"


def test_several_windows_do_not_overlap(write_video, square_frames):
    path = write_video("a.mp4", square_frames(96, 320, 240), fps=24)
    ws = windows(path, num_frames=17, max_windows=3)
    assert [w.key for w in ws] == ["k_s00w00", "k_s00w01", "k_s00w02"]
    assert all(a.span[1] <= b.span[0] + 1e-6 for a, b in zip(ws, ws[1:]))


def test_helpers():
    assert [four_n_plus_one(n) for n in (0, 1, 4, 5, 48, 49, 50)] == [0, 1, 1, 5, 45, 49, 49]
    assert target_size(1920, 1080, 480, 16, False) == (848, 480)
    assert target_size(320, 240, 480, 16, False) == (320, 240)
    assert target_size(320, 240, 480, 16, True) == (640, 480)
    assert target_size(1080, 1920, 480, 16, False) == (480, 848)


def test_a_slower_source_keeps_its_own_rate_and_repeats_no_frame(write_video, square_frames):
    path = write_video("a.mp4", square_frames(16, 320, 240), fps=8)  # 2 s at 8 fps, like the DAVIS clips
    [w] = windows(path, num_frames=49, fps=16, min_frames=17)
    assert w.fps == 8 and len(w.frames) == 13
    assert len(np.unique(w.source_frames)) == 13 and np.all(np.diff(w.source_frames) == 1)
    with pytest.raises(Drop, match="shorter than min_frames=33 at 16 fps"):
        windows(path, num_frames=49, fps=16, min_frames=33)


def test_each_frame_records_its_source_frame(write_video, square_frames):
    path = write_video("a.mp4", square_frames(48, 320, 240), fps=24)
    [w] = windows(path, num_frames=17, fps=12)
    assert np.array_equal(w.source_frames, np.floor((w.span[0] + np.arange(17) / 12) * 24 + 0.5).astype(int))
