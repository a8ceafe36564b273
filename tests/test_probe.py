"""stdin judged from its head (issue 26, item 11): a non-video piped in fails `-` after its first
2 MiB, not after all of it was copied (up to 8 GiB of disk and time), and every video container
written here still goes through stdin whole.

The clips are noise, so that each is larger than the head and the verdict is really taken on it
(a shorter stream is decoded whole, never judged).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidcls.video import inputs
from vidcls.video.container import VideoDecodeError, open_video
from vidcls.video.probe import HEAD_BYTES, NOT_A_VIDEO, refusal_of_head
from vidcls.video.synthetic import make_sample_clip

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this checkout's vidcls
JUDGED = f" (judged from the first {HEAD_BYTES >> 20} MiB of stdin; the rest was not read)"
VP8 = {"deadline": "realtime", "cpu-used": "16", "b": "50M", "crf": "4"}
VP9 = {"deadline": "realtime", "cpu-used": "8", "crf": "0", "b": "0"}
MPEG = {"qscale": "1", "b": "50M"}
# name: (container format, codec, pixel format, (width, height), codec options); every container
# PyAV writes here that the decoder reads, MP4 and MOV with their index at the end (the default) too
CONTAINERS = {
    "mp4": ("mp4", "libx264", "yuv420p", (320, 240), {"crf": "0"}),
    "mov": ("mov", "mpeg4", "yuv420p", (320, 240), {"qscale": "1"}),
    "3gp": ("3gp", "h263", "yuv420p", (352, 288), {"qscale": "1"}),
    "mkv": ("matroska", "libx264", "yuv420p", (320, 240), {"crf": "0"}),
    "webm": ("webm", "libvpx", "yuv420p", (320, 240), VP8),
    "webm-vp9": ("webm", "libvpx-vp9", "yuv420p", (320, 240), VP9),
    "avi": ("avi", "mjpeg", "yuvj420p", (320, 240), {"qscale": "1"}),
    "mpegts": ("mpegts", "libx264", "yuv420p", (320, 240), {"crf": "0"}),
    "mpeg-ps": ("mpeg", "mpeg2video", "yuv420p", (320, 240), MPEG),
    "vob": ("vob", "mpeg2video", "yuv420p", (320, 240), MPEG),
    "h264": ("h264", "libx264", "yuv420p", (320, 240), {"crf": "0"}),
    "hevc": ("hevc", "libx265", "yuv420p", (320, 240), {"preset": "ultrafast",
                                                         "x265-params": "lossless=1:log-level=none"}),
    "y4m": ("yuv4mpegpipe", "rawvideo", "yuv420p", (320, 240), {}),
    "gif": ("gif", "gif", "rgb8", (320, 240), {}),
    "apng": ("apng", "apng", "rgb24", (320, 240), {}),
    "flv": ("flv", "flv", "yuv420p", (320, 240), {"qscale": "1"}),
    "ogg": ("ogg", "libvpx", "yuv420p", (320, 240), VP8),
    "ivf": ("ivf", "libvpx-vp9", "yuv420p", (320, 240), VP9),
    "nut": ("nut", "ffv1", "yuv420p", (320, 240), {}),
    "mxf": ("mxf", "mpeg2video", "yuv420p", (320, 240), MPEG),
    "asf": ("asf", "wmv2", "yuv420p", (320, 240), {"qscale": "1"}),
    "mjpeg": ("mjpeg", "mjpeg", "yuvj420p", (320, 240), {"qscale": "1"}),
    "m4v": ("m4v", "mpeg4", "yuv420p", (320, 240), {"qscale": "1"}),
    "mpeg1video": ("mpeg1video", "mpeg1video", "yuv420p", (320, 240), MPEG),
    "dv": ("dv", "dvvideo", "yuv411p", (720, 480), {}),
}


def noise_clip(path: Path, name: str, min_bytes: int = HEAD_BYTES + (256 << 10)) -> Path:
    """A clip of noise frames in container `name` of CONTAINERS, at least min_bytes long."""
    fmt, codec, pix_fmt, (width, height), options = CONTAINERS[name]
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(30000, 1001) if fmt == "dv" else 25)
        stream.width, stream.height, stream.pix_fmt, stream.options = width, height, pix_fmt, dict(options)
        while not path.exists() or path.stat().st_size < min_bytes:  # noise: 20-200 kB a frame
            picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    assert path.stat().st_size >= min_bytes, (name, path.stat().st_size)
    return path


class _Stdin:
    """What sys.stdin looks like with a file piped in."""

    def __init__(self, stream) -> None:
        self.buffer = stream

    def isatty(self) -> bool:
        return False


def through_stdin(path: Path, spool: Path, monkeypatch) -> tuple[inputs.VideoInput, int]:
    """`-` gathered with `path` on stdin: the input, and how many bytes of stdin were read."""
    with path.open("rb") as stream:
        monkeypatch.setattr(sys, "stdin", _Stdin(stream))
        (video,) = inputs.gather([inputs.STDIN], spool).videos
        return video, stream.tell()


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_every_container_written_here_goes_through_stdin_whole(name, tmp_path, monkeypatch):
    """The head must not refuse a video that ffmpeg identifies late or at a low score (raw H.264,
    MPEG-TS, ...), nor one it cannot finish opening from a pipe (an MP4 whose index is at the end)."""
    clip = noise_clip(tmp_path / f"clip.{name}", name)
    (tmp_path / "spool").mkdir()
    video, read = through_stdin(clip, tmp_path / "spool", monkeypatch)
    assert video.error is None and read == clip.stat().st_size
    assert Path(video.source).read_bytes() == clip.read_bytes()
    with open_video(video.source) as (container, stream):
        assert next(container.decode(stream)).width == CONTAINERS[name][3][0]


def _tarball(path: Path) -> None:
    member = path.parent / "member.bin"
    member.write_bytes(np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    with tarfile.open(path, "w") as archive:
        archive.add(member, "member.bin")


def _wav(path: Path) -> None:
    with wave.open(str(path), "wb") as sound:
        sound.setnchannels(2), sound.setsampwidth(2), sound.setframerate(44100)
        sound.writeframes(np.random.default_rng(2).integers(-8000, 8000, 2 * 44100 * 15, dtype=np.int16).tobytes())


def _png(path: Path) -> None:
    with av.open(str(path), "w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 1200, 1000, "rgb24"
        picture = np.random.default_rng(3).integers(0, 256, (1000, 1200, 3), dtype=np.uint8)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())


NON_VIDEOS = {
    "random": (lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()),
               NOT_A_VIDEO),
    "zeros": (lambda p: p.write_bytes(bytes(3 << 20)), NOT_A_VIDEO),
    "text": (lambda p: p.write_text(Path(inputs.__file__).read_text() * 200), NOT_A_VIDEO),
    "tarball": (_tarball, NOT_A_VIDEO),
    "png": (_png, "still image, not a video"),
}


@pytest.mark.parametrize("name", list(NON_VIDEOS))
def test_a_non_video_on_stdin_fails_from_its_head(name, tmp_path, monkeypatch):
    """Was: copied whole to TMPDIR (up to 8 GiB), then refused by the decoder with the same reason."""
    make, reason = NON_VIDEOS[name]
    path = tmp_path / name
    make(path)
    assert path.stat().st_size > HEAD_BYTES
    (tmp_path / "spool").mkdir()
    video, read = through_stdin(path, tmp_path / "spool", monkeypatch)
    assert (video.name, video.source, video.error) == ("-", "-", reason + JUDGED)
    assert read == HEAD_BYTES and not any((tmp_path / "spool").iterdir())


def test_an_endless_non_video_on_stdin_is_refused_and_the_others_classified(tmp_path):
    """`predict - good.mp4` with random bytes without end on stdin: `-` fails in one line after a few
    MiB, good.mp4 is classified, and the run ends without waiting for stdin to end."""
    good = make_sample_clip(tmp_path / "good.mp4", frames=8, height=48, width=64)
    block = np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    fed = [0]

    def feed(pipe) -> None:  # until the run stops reading (it exits) or 512 MiB, what was copied before
        try:
            while fed[0] < 512 << 20:
                pipe.write(block)
                fed[0] += len(block)
            pipe.close()
        except (BrokenPipeError, OSError):
            pass

    with (tmp_path / "out").open("w+") as out, (tmp_path / "err").open("w+") as err:
        run = subprocess.Popen([sys.executable, "-m", "vidcls", "predict", "-", str(good), "-m", "demo-motion",
                                "--json", "--workers", "0"], stdin=subprocess.PIPE, stdout=out, stderr=err,
                               env={**ENV, "TMPDIR": str(tmp_path)})
        feeder = threading.Thread(target=feed, args=(run.stdin,), daemon=True)
        feeder.start()
        try:
            run.wait(timeout=120)
        finally:
            run.kill()
        feeder.join(10)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert fed[0] < 4 * HEAD_BYTES, f"{fed[0] >> 20} MiB of stdin taken"
    assert run.returncode == 1, stderr[-2000:]
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [f"error: -: {NOT_A_VIDEO}{JUDGED}"]
    records = {row["video"]: row for row in json.loads(stdout)}
    assert records[str(good)]["top_k"] and not records[str(good)].get("error")


def _audio_first_mpeg_ps(path: Path) -> None:
    """An MPEG-PS file whose first 6 s are audio alone, then 60 frames of noise video (2.6 MB)."""
    rng = np.random.default_rng(4)
    with av.open(str(path), "w", format="mpeg") as container:
        audio = container.add_stream("mp2", rate=48000, layout="stereo")
        video = container.add_stream("mpeg2video", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.options = {"b": "8M", "maxrate": "8M", "bufsize": "1M"}
        for start in range(0, 6 * 48000, 1152):
            sound = av.AudioFrame.from_ndarray(rng.standard_normal((2, 1152)).astype(np.float32) / 10,
                                               format="fltp", layout="stereo")
            sound.sample_rate, sound.pts = 48000, start
            container.mux(audio.encode(sound))
        for index in range(6 * 25, 6 * 25 + 60):
            picture = av.VideoFrame.from_ndarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), format="rgb24")
            picture.pts = index
            container.mux(video.encode(picture))
        container.mux(video.encode())
        container.mux(audio.encode())


@pytest.mark.parametrize("name, make, decoded", [
    ("audio-first.mpg", _audio_first_mpeg_ps, "video"),  # a pipe shows audio alone; the file's end has the video
    ("sound.wav", _wav, "no video stream (audio-only file?)"),
])
def test_an_input_that_opens_without_video_is_copied_for_the_decoder_to_judge(name, make, decoded, tmp_path,
                                                                             monkeypatch):
    """Was (while it was written): an MPEG-PS file whose first seconds are audio refused from its head,
    which the decoder plays from the whole file. Audio alone is then the decoder's verdict, as before."""
    path = tmp_path / name
    make(path)
    assert path.stat().st_size > HEAD_BYTES
    (tmp_path / "spool").mkdir()
    video, read = through_stdin(path, tmp_path / "spool", monkeypatch)
    assert video.error is None and read == path.stat().st_size
    try:
        with open_video(video.source) as (container, stream):
            found = next(container.decode(stream)).format.name and "video"
    except VideoDecodeError as err:
        found = str(err)
    assert found == decoded


def test_the_head_opens_nothing_it_names(tmp_path, monkeypatch):
    """A concat list on stdin named a file that ffmpeg opened relative to the current folder while the
    head was judged (a FIFO there blocked the run); it is no verdict, and the copy is decoded as before."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "named.ts")
    head = (b"ffconcat version 1.0\nfile named.ts\n" + b"# padding\n" * HEAD_BYTES)[:HEAD_BYTES]
    verdict = []
    judge = threading.Thread(target=lambda: verdict.append(refusal_of_head(head)), daemon=True)
    judge.start()
    judge.join(10)
    blocked = judge.is_alive()
    if blocked:  # let the open of the FIFO return, so that the thread ends
        os.close(os.open(tmp_path / "named.ts", os.O_WRONLY | os.O_NONBLOCK))
        judge.join(10)
    assert not blocked and verdict == [None]
