from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from vidlayer.clip import Captions, Clip, Drop
from vidlayer.config import parse_pipeline


def decode_stage(**params):
    return parse_pipeline({"stages": [{"stage": "decode", "params": params}]}).stages[0].build()


def clip_for(path):
    return Clip(key="k", input_key="k", path=str(path), source=path.name, captions=Captions("c"))


def test_probes_and_decodes_a_small_proxy(write_video, square_frames):
    path = write_video("a.mp4", square_frames(48, 320, 240), fps=24)
    clip = decode_stage(proxy_fps=8, proxy_short_side=64).process(clip_for(path))
    assert (clip.info.width, clip.info.height, clip.info.num_frames) == (320, 240, 48)
    assert clip.info.backend == "decord"
    assert clip.proxy.shape == (16, 64, 86, 3) and clip.proxy_fps == pytest.approx(8)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_rotated_phone_video_keeps_its_portrait_aspect(square_frames, tmp_path, decoder):
    shown = square_frames(48, 240, 320)
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w", format="mp4") as container:  # stored landscape, shown turned 90 degrees
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.set_display_rotation(90)
        for frame in np.rot90(shown, -1, axes=(1, 2)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).rotation == 90
    clip = decode_stage(decoder=decoder, proxy_fps=8, proxy_short_side=64).process(clip_for(path))
    assert (clip.info.width, clip.info.height) == (240, 320)
    assert clip.proxy.shape == (16, 86, 64, 3)
    expected = cv2.resize(shown[0], (64, 86), interpolation=cv2.INTER_AREA)
    assert np.abs(clip.proxy[0].astype(int) - expected).mean() < 8  # the same picture, not a squashed one


def test_truncated_stream_keeps_what_decodes(write_video, square_frames, tmp_path):
    path = write_video("a.mp4", square_frames(48, 320, 240), fps=24)
    data = path.read_bytes()
    # Move the index (moov) to the front so the file still opens, then cut the media data short.
    faststart = tmp_path / "fast.mp4"
    with av.open(str(path)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: int(len(data) * 0.9)])
    clip = decode_stage().process(clip_for(cut))
    assert clip.metrics["decode_truncated"] == 1.0
    assert 2 <= clip.info.num_frames < 48 and len(clip.proxy) < 16


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty_file"),
    (lambda p: p.write_bytes(b"\x00" * 4096), "not_a_video"),
    (lambda p: p.mkdir(), "unreadable_path"),
])
def test_bad_files_are_dropped_with_reasons(tmp_path, make, reason):
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(Drop) as drop:
        decode_stage().process(clip_for(path))
    assert drop.value.reason == reason


def test_single_frame_and_oversized_videos_are_dropped(write_video, square_frames):
    one = write_video("one.mp4", square_frames(1, 64, 48))
    with pytest.raises(Drop) as drop:
        decode_stage().process(clip_for(one))
    assert drop.value.reason == "too_few_frames"
    big = write_video("big.mp4", np.zeros((2, 512, 512, 3), np.uint8))
    with pytest.raises(Drop) as drop:
        decode_stage(max_decode_pixels=100_000).process(clip_for(big))
    assert drop.value.reason == "too_large_to_decode"
