"""Video probing, decoding and encoding.

Decoding prefers decord (fast seeking, resize inside the decoder) and falls back to PyAV,
which reads whatever FFmpeg reads. Sizes and frames are as a player shows them: a phone
video stored landscape with a 90 degree display rotation is portrait in `probe` and in every
decoded frame (decord turns frames itself, PyAV frames are turned here), so a resize to the
probed aspect never squashes it. Encoding uses PyAV's bundled FFmpeg (no ffmpeg binary
needed). Alpha mattes are encoded as lossless single-channel H.264 in full colour range, so
a matte decodes back bit-exactly; colour layers use ordinary 4:2:0 H.264 at a high quality.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidlayer.clip import VideoInfo

try:
    import decord
except ImportError:  # decord ships no wheels for some platforms (e.g. aarch64 Linux)
    decord = None

FULL_RANGE = 2  # AVCOL_RANGE_JPEG: code values 0..255, so grey levels survive unchanged


class VideoError(Exception):
    """A video that cannot be used; `reason` is a short stable code for the manifest."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def probe(path: str | Path) -> VideoInfo:
    """Read container metadata without decoding the whole stream."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VideoError("file_not_found", f"{path} does not exist") from None
    except OSError as e:
        raise VideoError("unreadable_path", f"cannot stat {path}: {e.strerror or e}") from None
    if path.is_dir():
        raise VideoError("unreadable_path", f"{path} is a directory")
    if size == 0:
        raise VideoError("empty_file", f"{path} is 0 bytes")
    if not os.access(path, os.R_OK):
        raise VideoError("unreadable_path", f"no permission to read {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no_video_stream", f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            frames = int(stream.frames) or int(round(duration * fps))
            codec = stream.codec_context.name
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            if _quarter_turns(_first_frame_rotation(container, stream)) % 2:
                width, height = height, width
    except VideoError:
        raise
    except av.error.PermissionError:
        raise VideoError("unreadable_path", f"no permission to read {path}") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError("not_a_video", f"cannot open {path.name} as a video ({_first_line(e)})") from None
    if width <= 0 or height <= 0:
        raise VideoError("not_a_video", f"{path.name} has no frame size")
    if fps <= 0:
        raise VideoError("unknown_fps", f"{path.name} declares no frame rate")
    if duration <= 0 and frames > 0:
        duration = frames / fps
    return VideoInfo(width=width, height=height, fps=fps, num_frames=frames, duration_s=duration, codec=codec, backend="")


def read_frames(
    path: str | Path,
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
    backend: str = "auto",
    threads: int = 1,
) -> tuple[np.ndarray, str]:
    """Decode the frames at `indices` (sorted, source frame numbers) resized to `size` = (w, h).

    Returns [N, H, W, 3] uint8 RGB and the backend that did it. Fewer frames than asked come
    back only when the stream ends early (a truncated file); the caller decides what that means.
    """
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown decode backend {backend!r}")
    indices = sorted(set(int(i) for i in indices))
    if not indices:
        raise ValueError("no frames requested")
    if backend in ("auto", "decord") and decord is not None:
        try:
            return _read_decord(path, indices, size, threads), "decord"
        except Exception as e:  # decord signals unsupported streams with assorted exception types
            if backend == "decord":
                raise VideoError("decode_error", f"decord cannot decode {Path(path).name}: {_first_line(e)}") from None
    elif backend == "decord":
        raise VideoError("decode_error", "decord is not installed on this platform")
    return _read_pyav(path, indices, size, threads), "pyav"


def _read_decord(path: str | Path, indices: list[int], size: tuple[int, int] | None, threads: int) -> np.ndarray:
    kwargs = {"width": size[0], "height": size[1]} if size else {}
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads, **kwargs)
    available = [i for i in indices if i < len(reader)]
    if not available:
        raise IndexError("no requested frame exists in the stream")
    return reader.get_batch(available).asnumpy()


def _read_pyav(path: str | Path, indices: list[int], size: tuple[int, int] | None, threads: int) -> np.ndarray:
    wanted = iter(indices)
    target = next(wanted)
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_count = max(1, threads)
            for number, frame in enumerate(container.decode(stream)):
                if number < target:
                    continue
                out.append(_displayed(frame, "rgb24", size))
                target = next(wanted, None)
                if target is None:
                    break
    except av.error.FFmpegError as e:
        if not out:
            raise VideoError("decode_error", f"cannot decode {Path(path).name}: {_first_line(e)}") from None
    if not out:
        raise VideoError("decode_error", f"{Path(path).name} yielded no frames")
    return np.stack(out)


def encode_video(frames: np.ndarray, fps: float, *, crf: int = 18, lossless: bool = False, preset: str = "medium") -> bytes:
    """Encode [T, H, W, 3] RGB or [T, H, W] grey frames to H.264 mp4 bytes.

    RGB is 4:2:0 at `crf` (what every player reads), or lossless RGB (libx264rgb) when asked.
    Grey is single-channel full-range H.264, lossless when asked, so an alpha matte decodes
    back exactly.
    """
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"expected uint8 [T,H,W] or [T,H,W,3], got {frames.dtype} {frames.shape}")
    grey = frames.ndim == 3
    height, width = frames.shape[1:3]
    if width % 2 or height % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
    codec = "libx264rgb" if lossless and not grey else "libx264"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "gray" if grey else ("rgb24" if lossless else "yuv420p")
        # qp 0 selects x264's lossless mode.
        stream.options = {"qp": "0", "preset": preset} if lossless else {"crf": str(crf), "preset": preset}
        if grey:
            stream.codec_context.color_range = FULL_RANGE
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray" if grey else "rgb24")
            if grey:
                frame.color_range = FULL_RANGE
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_video(data: bytes | str | Path, grey: bool = False, max_frames: int | None = None) -> np.ndarray:
    """Decode a video (bytes or path) to [T, H, W, 3] RGB, or [T, H, W] when `grey`; at most `max_frames`."""
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    frames = []
    with av.open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(_displayed(frame, "gray" if grey else "rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise VideoError("decode_error", "the video has no frames")
    return np.stack(frames)


def _first_frame_rotation(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The display rotation in degrees counter-clockwise, 0 when the first frame does not decode.

    FFmpeg 7 and later no longer export the `rotate` tag and PyAV has no reader for the stream's
    display matrix, but the decoder attaches that matrix to every frame. A stream that does not
    decode is left to `read_frames`, which reports it with its own reason.
    """
    try:
        return next(container.decode(stream)).rotation
    except (av.error.FFmpegError, StopIteration):
        return 0


def _quarter_turns(degrees: float) -> int:
    """Counter-clockwise quarter turns (0..3) nearest to a rotation; players round the same way."""
    return round(degrees / 90) % 4


def _displayed(frame: av.VideoFrame, format: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The frame as shown, turned by its display rotation the way decord turns it, sized to `size` = (w, h)."""
    turns = _quarter_turns(frame.rotation)
    width, height = size if size else (None, None)
    if turns % 2:
        width, height = height, width  # resize before turning: the coded frame is the other way round
    image = frame.to_ndarray(format=format, width=width, height=height, interpolation="AREA")
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]
