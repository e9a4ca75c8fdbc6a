from fractions import Fraction

import av
import numpy as np
import pytest

from vidlayer.io.video import VideoError, decode_video, encode_video, probe, read_frames


def test_probe_reports_size_rate_and_length(write_video, square_frames):
    path = write_video("clip.mp4", square_frames(24, 320, 240), fps=24)
    info = probe(path)
    assert (info.width, info.height, info.num_frames, info.codec) == (320, 240, 24, "h264")
    assert info.fps == pytest.approx(24)
    assert info.duration_s == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_read_frames_selects_and_resizes(write_video, square_frames, backend):
    frames = square_frames(24, 320, 240)
    path = write_video("clip.mp4", frames)
    got, used = read_frames(path, [0, 5, 23], size=(160, 120), backend=backend)
    assert used == backend and got.shape == (3, 120, 160, 3)
    full, _ = read_frames(path, [5], backend=backend)
    assert np.abs(full[0].astype(int) - frames[5]).mean() < 6  # lossy H.264 of random texture


def test_backends_agree(write_video, square_frames):
    path = write_video("clip.mp4", square_frames(12, 320, 240))
    a, _ = read_frames(path, range(12), backend="decord")
    b, _ = read_frames(path, range(12), backend="pyav")
    assert np.abs(a.astype(int) - b).mean() < 1.0


def write_turned(path, shown, degrees):
    """What a phone writes: `shown` stored turned back by `degrees`, with a display matrix that turns it upright."""
    stored = np.ascontiguousarray(np.rot90(shown, -round(degrees / 90), axes=(1, 2)))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(16))
        (stream.height, stream.width), stream.pix_fmt = stored.shape[1:3], "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in stored:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return stored


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotated_video_is_probed_and_decoded_as_shown(tmp_path, square_frames, degrees):
    shown = square_frames(8, 240, 320)  # portrait, as the phone showed it
    path = tmp_path / "phone.mp4"
    stored = write_turned(path, shown, degrees)
    with av.open(str(path)) as container:  # the file really holds turned frames and a display rotation
        stream = container.streams.video[0]
        assert (stream.codec_context.height, stream.codec_context.width) == stored.shape[1:3]
        assert next(container.decode(stream)).rotation % 360 == degrees % 360
    info = probe(path)
    assert (info.width, info.height) == (240, 320)
    # Every decoder agrees with the probed size, and a resize to it keeps the picture unsquashed.
    for backend in ("decord", "pyav"):
        full, _ = read_frames(path, range(8), backend=backend)
        assert full.shape == (8, 320, 240, 3) and np.abs(full.astype(int) - shown).mean() < 6
        half, _ = read_frames(path, [0], size=(120, 160), backend=backend)
        expected = shown[0].reshape(160, 2, 120, 2, 3).mean(axis=(1, 3))
        assert half.shape == (1, 160, 120, 3) and np.abs(half[0] - expected).mean() < 6
    assert np.abs(decode_video(path).astype(int) - shown).mean() < 6


def test_auto_falls_back_to_pyav_for_av1(tmp_path):
    """decord's bundled FFmpeg has no AV1 decoder; PyAV's has."""
    frames = np.repeat(np.linspace(0, 255, 128 * 192 * 3).reshape(1, 128, 192, 3).astype(np.uint8), 6, 0)
    path = tmp_path / "av1.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libsvtav1", rate=Fraction(16))
        stream.width, stream.height, stream.pix_fmt = 192, 128, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    got, used = read_frames(path, range(6), backend="auto")
    assert used == "pyav" and len(got) == 6
    with pytest.raises(VideoError, match="decord cannot decode"):
        read_frames(path, range(6), backend="decord")


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty_file"), (b"not a video at all" * 100, "not_a_video")],
)
def test_probe_rejects_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError) as error:
        probe(path)
    assert error.value.reason == reason


def test_probe_rejects_missing_and_directories(tmp_path):
    with pytest.raises(VideoError) as missing:
        probe(tmp_path / "nope.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(VideoError) as directory:
        probe(tmp_path / "dir.mp4")
    assert (missing.value.reason, directory.value.reason) == ("file_not_found", "unreadable_path")


def test_lossless_grey_alpha_round_trips_exactly():
    rng = np.random.default_rng(0)
    alpha = (rng.random((9, 48, 64)) * 255).astype(np.uint8)
    assert np.array_equal(decode_video(encode_video(alpha, 16, lossless=True), grey=True), alpha)


def test_lossless_rgb_round_trips_exactly():
    rng = np.random.default_rng(1)
    frames = (rng.random((5, 48, 64, 3)) * 255).astype(np.uint8)
    assert np.array_equal(decode_video(encode_video(frames, 16, lossless=True)), frames)


def test_lossy_rgb_stays_close(square_frames):
    frames = square_frames(9, 160, 96)
    error = np.abs(decode_video(encode_video(frames, 16, crf=18)).astype(int) - frames).mean()
    assert 0 < error < 6


def test_encode_refuses_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        encode_video(np.zeros((3, 15, 16, 3), np.uint8), 16)


def test_decode_can_stop_early():
    alpha = np.stack([np.full((16, 16), 10 * t, np.uint8) for t in range(12)])
    data = encode_video(alpha, 16, lossless=True)
    head = decode_video(data, grey=True, max_frames=5)
    assert np.array_equal(head, alpha[:5])
    assert len(decode_video(data, grey=True, max_frames=50)) == 12
