"""Timelines of long videos: windows, one pass over the file, segments, the plot and the annotated video."""

import json
import time
from itertools import pairwise

import pytest
import torch

import vidcls
import vidcls.video.decode as video_module
from vidcls.errors import UsageError
from vidcls.inference.predict import predict_video
from vidcls.inference.timeline import (
    SEGMENT_COLUMNS,
    Timeline,
    Window,
    owned_bounds,
    plan_windows,
    segment_rows,
    smooth_probabilities,
    timeline,
)
from vidcls.video.container import DecodeStats
from vidcls.video.decode import open_frames, probe, read_frames
from vidcls.video.encode import write_video
from vidcls.video.synthetic import ShapeClipSpec, render_path
from vidcls.viz.overlay import text_mask, window_caption, write_annotated_video
from vidcls.zoo.modeldir import InputSpec

FPS = 12
LEGS = [("left", 48), ("up", 48), ("right", 48), ("down", 48)]  # 4 s each at 12 fps: a square loop


def truth_intervals(legs, fps):
    start, out = 0.0, []
    for direction, frames in legs:
        out.append((start, start + frames / fps, direction))
        start += frames / fps
    return out


@pytest.fixture(scope="module")
def path_clip(tmp_path_factory):
    # noise_seed 4: x264 puts no scene-cut keyframe in this clip (seeds 0-3 get one with numpy's noise), so it
    # is one group of pictures, as test_video_is_opened_once_and_each_frame_decoded_once needs (with seed 0's
    # keyframe at frame 147 the windows' reader decoded 334 frames, 191 of them distinct)
    spec = ShapeClipSpec("left", height=64, width=64, size=(12.0, 12.0), speed=0.75, start=(46.0, 46.0),
                         shape="circle", color=(250, 200, 40), background=(20, 30, 60), noise=5.0, noise_seed=4)
    path = tmp_path_factory.mktemp("timeline") / "square-loop.mp4"
    write_video(path, render_path(spec, LEGS), fps=FPS)
    return path


@pytest.fixture(scope="module")
def model():
    return vidcls.load_model("demo-motion")


@pytest.fixture(scope="module")
def loop_timeline(path_clip, model):
    return timeline(path_clip, model, stats=DecodeStats())


def test_segments_match_the_direction_changes(loop_timeline):
    truth = truth_intervals(LEGS, FPS)
    matched = sum(max(0.0, min(seg.end_s, t_end) - max(seg.start_s, t_start))
                  for seg in loop_timeline.segments() for t_start, t_end, direction in truth
                  if seg.label == direction)
    coverage = matched / loop_timeline.duration_s
    print(f"segments {[(s.label, round(s.start_s, 1), round(s.end_s, 1)) for s in loop_timeline.segments()]}, "
          f"coverage {coverage:.3f}")
    assert coverage >= 0.85
    assert [s.label for s in loop_timeline.segments()] == [d for d, _ in LEGS]


def test_json_has_timeline_and_segments(loop_timeline):
    record = loop_timeline.to_json()
    assert set(record) == {"timeline", "segments"}
    assert len(record["timeline"]) == len(loop_timeline.windows) == 15  # 16 s, 2 s windows every 1 s
    first = record["timeline"][0]
    assert (first["start_s"], first["end_s"]) == (0.0, 2.0)
    assert [t["label"] for t in first["top_k"]][0] == "left" and len(first["top_k"]) == 4
    segments = record["segments"]
    assert segments[0]["start_s"] == 0.0 and segments[-1]["end_s"] == 16.0
    assert all(a["end_s"] == b["start_s"] for a, b in pairwise(segments))
    assert all(0.5 < s["score"] <= 1 for s in segments)
    rows = segment_rows(loop_timeline)
    assert len(rows[0]) == len(SEGMENT_COLUMNS) and rows[0][3] == "left" and rows[-1][1] == "0:16.0"


@pytest.mark.parametrize("num_frames, fps, window, hop", [
    (192, 12, 2.0, 1.0), (100, 25, 2.0, 2.0), (101, 30, 0.5, 0.2), (30, 25, 2.0, 1.0), (1, 25, 2.0, 1.0),
    (1000, 29.97, 3.3, 1.7)])
def test_windows_cover_the_video_without_gaps(num_frames, fps, window, hop):
    spec = InputSpec(frames=8, stride=2, sampling="dense")
    windows = plan_windows(num_frames, fps, spec, window, hop, clips=2)
    duration = num_frames / fps
    assert windows[0].start_s == 0.0 and windows[-1].end_s == pytest.approx(duration)
    for a, b in pairwise(windows):
        assert a.start_s < b.start_s <= a.end_s  # no gap between consecutive windows
    for w in windows:
        assert w.end_s - w.start_s == pytest.approx(min(window, duration))
        assert len(w.indices) == 16 and all(0 <= i < num_frames for i in w.indices)
        assert all(round(w.start_s * fps) <= i < max(round(w.end_s * fps), 1) for i in w.indices)
        if round(w.end_s * fps) - round(w.start_s * fps) >= 15:  # room for the recipe's 8 frames 2 apart
            assert {b - a for a, b in pairwise(w.indices[:8])} == {2}
    bounds = owned_bounds(windows)
    assert bounds[0] == 0.0 and bounds[-1] == pytest.approx(duration)
    assert all(a < b for a, b in pairwise(bounds))


def test_video_is_opened_once_and_each_frame_decoded_once(path_clip, model, monkeypatch):
    opens, seen = [], []
    real_open, real_frames = video_module.av.open, video_module.decoded_frames

    def counting_open(*args, **kwargs):
        opens.append(args[0])
        return real_open(*args, **kwargs)

    def recording_frames(*args):
        for frame in real_frames(*args):
            seen.append(frame.pts)
            yield frame

    monkeypatch.setattr(video_module.av, "open", counting_open)
    monkeypatch.setattr(video_module, "decoded_frames", recording_frames)
    stats = DecodeStats()
    result = timeline(path_clip, model, window_s=3.0, hop_s=1.5, stats=stats)
    assert opens == [str(path_clip)] * 2  # once to count its packets (the header may lie), once to decode
    assert len(seen) == len(set(seen)) == stats.frames_decoded
    assert stats.frames_decoded <= result.num_frames == 192


def test_long_windows_decode_sparsely(tmp_path, model):
    """Windows far apart on a video with frequent keyframes: frames between them are skipped."""
    clip = torch.zeros(600, 32, 32, 3, dtype=torch.uint8)
    clip[:, :, :, 0] = torch.arange(600).remainder(256)[:, None, None].to(torch.uint8)
    path = tmp_path / "long.mp4"
    write_video(path, clip, fps=25, gop=25)
    stats = DecodeStats()
    result = timeline(path, model, window_s=8.0, hop_s=8.0, stats=stats)
    assert len(result.windows) == 3
    assert stats.seeks >= 2 and stats.frames_decoded < 200  # 24 frames wanted of 600


def test_a_window_as_long_as_the_video_gives_predicts_answer(path_clip, model):
    whole = timeline(path_clip, model, window_s=100.0, top_k=4)
    assert len(whole.windows) == 1
    expected = predict_video(path_clip, model, top_k=4).top_k
    got = whole.to_json()["timeline"][0]["top_k"]
    assert [t["label"] for t in got] == [t["label"] for t in expected]
    assert [t["score"] for t in got] == pytest.approx([t["score"] for t in expected], abs=1e-5)


def test_batching_does_not_change_the_result(path_clip, model):
    one = timeline(path_clip, model, batch_size=1, crops=3)
    many = timeline(path_clip, model, batch_size=7, crops=3)
    torch.testing.assert_close(one.probs, many.probs, atol=1e-5, rtol=0)


def test_smoothing_averages_neighbouring_windows():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    smoothed = smooth_probabilities(probs, 3)
    torch.testing.assert_close(smoothed[:, 0], torch.tensor([0.5, 2 / 3, 2 / 3, 1.0]))
    assert smooth_probabilities(probs, 1) is probs


def test_segments_merge_runs_and_weigh_scores_by_owned_time():
    windows = [Window(0.0, 2.0, (0,)), Window(1.0, 3.0, (1,)), Window(2.0, 4.0, (2,)), Window(2.5, 4.5, (3,))]
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    result = Timeline("v.mp4", "m", ["a", "b"], 10.0, 45, windows, probs)
    # owned: [0, 1.5), [1.5, 2.5), [2.5, 3.25), [3.25, 4.5)
    a, b = result.segments()
    assert (a.label, a.start_s, a.end_s) == ("a", 0.0, 2.5)
    assert (b.label, b.start_s, b.end_s) == ("b", 2.5, 4.5)
    assert a.score == pytest.approx((1.5 * 0.9 + 1.0 * 0.7) / 2.5)
    assert b.score == pytest.approx((0.75 * 0.8 + 1.25 * 0.6) / 2.0)
    assert [result.window_at(t) for t in (0.0, 1.49, 1.5, 3.3, 9.0)] == [0, 0, 1, 3, 3]


@pytest.mark.parametrize("options, message", [
    ({"window_s": 2.0, "hop_s": 3.0}, "gaps"), ({"window_s": 0.0}, "--window"), ({"smooth": 0}, "--smooth")])
def test_bad_options_are_refused_before_decoding(options, message, model, tmp_path):
    with pytest.raises(UsageError, match=message):
        timeline(tmp_path / "missing.mp4", model, **options)


def test_unreadable_video_names_the_file(model, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(vidcls.VidclsError, match="notes.mp4: "):
        timeline(bad, model)


def test_frame_reader_wants_increasing_chunks(path_clip):
    with open_frames(path_clip) as reader:
        assert reader.info.num_frames == 192
        assert sorted(reader.pick([0, 5])) == [0, 5]
        with pytest.raises(ValueError, match="above 5"):
            reader.pick([3])
        torch.testing.assert_close(reader.pick([7])[7], read_frames(path_clip, [7])[0])


def test_plot_is_a_readable_png(loop_timeline, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from vidcls.viz.timeline import plot_timeline, tick_step

    path = plot_timeline(loop_timeline, tmp_path / "timeline.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width == 1200 and 150 <= height <= 600
    assert tick_step(16) == 2 and tick_step(7200) == 900


def test_annotated_video_keeps_frames_and_rate_and_shows_the_label(path_clip, loop_timeline, tmp_path):
    out = write_annotated_video(path_clip, loop_timeline, tmp_path / "annotated.mp4")
    source, written = probe(path_clip), probe(out)
    assert (written.num_frames, written.fps, written.width, written.height) == (
        source.num_frames, source.fps, source.width, source.height)
    stats = DecodeStats()
    frames = read_frames(out, list(range(source.num_frames)), stats)
    assert stats.frames_decoded == source.num_frames
    for index in (10, 70, 130, 180):  # one frame in each leg: its caption is drawn in white
        caption = window_caption(loop_timeline, loop_timeline.window_at(index / FPS))
        assert caption.split()[0] == LEGS[index // 48][0]
        mask = text_mask(caption)
        text = frames[index, 1:1 + mask.shape[0], 1:1 + mask.shape[1]].float().mean(-1)
        assert text[mask].mean() > 180 and text[~mask].mean() < 100


@pytest.mark.slow
def test_two_hour_clip_costs_windows_not_the_file(tmp_path, model):
    """Measured, not asserted: time against the number of windows on a 2-hour 32x32 clip."""
    spec = ShapeClipSpec("left", height=32, width=32, size=(8.0, 8.0), speed=0.5, start=(26.0, 26.0))
    loop = render_path(spec, [(d, 40) for d in ("left", "up", "right", "down")])  # 32 s at 5 fps
    path = tmp_path / "two-hours.mp4"
    started = time.perf_counter()
    write_video(path, loop.repeat(225, 1, 1, 1), fps=5, gop=50)  # 7200 s, a keyframe every 10 s
    print(f"\nwrote 2 h at 5 fps, 32x32 ({probe(path).num_frames} frames) in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    with open_frames(path) as reader:
        decoded = sum(1 for _ in reader)
    print(f"decoding all {decoded} frames: {time.perf_counter() - started:.2f} s")
    for window in (2.0, 60.0, 300.0, 1200.0):
        stats = DecodeStats()
        started = time.perf_counter()
        result = timeline(path, model, window_s=window, stats=stats)
        print(f"window {window:6.0f} s: {len(result.windows):5d} windows, {stats.frames_decoded:6d} frames "
              f"decoded, {stats.seeks:4d} seeks, {time.perf_counter() - started:6.2f} s")
        assert result.windows[-1].end_s == pytest.approx(7200.0)


def test_predict_timeline_from_the_command_line(path_clip, tmp_path):
    """`predict --timeline` puts the library's timeline into each video's JSON and --output
    record, draws one plot and one annotated video per video, and a bad video fails alone."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from vidcls.cli import app
    from vidcls.inference.results import read_records

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "tl.jsonl"
    result = CliRunner().invoke(app, ["predict", str(path_clip), str(bad), "-m", "demo-motion", "--json",
                                      "--plot", str(tmp_path / "tl.png"), "--out-video", str(tmp_path / "a.mp4"),
                                      "--smooth", "2", "-o", str(out)])
    assert result.exit_code == 1, result.output
    good, failed = json.loads(result.stdout)
    expected = timeline(path_clip, vidcls.load_model("demo-motion"), smooth=2).to_json()
    assert good["timeline"] == expected["timeline"] and good["segments"] == expected["segments"]
    assert [s["label"] for s in good["segments"]] == [d for d, _ in LEGS]
    assert failed["error"] == "not a video file or unsupported format" and "timeline" not in failed
    assert read_records(out)[0]["segments"] == expected["segments"]
    with Image.open(tmp_path / "tl-square-loop.png") as image:
        assert image.width == 1200
    assert probe(tmp_path / "a-square-loop.mp4").num_frames == probe(path_clip).num_frames
    table = CliRunner().invoke(app, ["predict", str(path_clip), "-m", "demo-motion", "--timeline"])
    assert table.exit_code == 0 and "segments" in table.stdout and "0:04" in table.stdout


def test_a_timeline_failure_costs_only_its_video(path_clip, tmp_path, monkeypatch):
    """Not only decoding errors: any failure while labelling one video over time (here its plot)
    is that video's one-line error, and the next video still gets its timeline."""
    import vidcls.viz.timeline
    from vidcls.inference.options import TimelineOptions

    real = vidcls.viz.timeline.plot_timeline

    def plot(found, path, title=None):
        if "first" in path.name:
            raise OSError(28, "No space left on device")
        return real(found, path, title=title)

    monkeypatch.setattr(vidcls.viz.timeline, "plot_timeline", plot)
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    for copy in (first, second):
        copy.write_bytes(path_clip.read_bytes())
    run = vidcls.predict_run([first, second], "demo-motion", timeline=TimelineOptions(plot=tmp_path / "tl.png"))
    failed, done = run.predictions
    # the output's failure, named as such (not the input's), and the labels it has are kept
    assert failed.error == f"cannot write --plot {tmp_path / 'tl-first.png'}: No space left on device"
    assert failed.timeline is not None and failed.top_k
    assert done.error is None and [s["label"] for s in done.timeline["segments"]] == [d for d, _ in LEGS]


def test_overflowing_logits_are_that_videos_error_in_strict_json(path_clip, model, tmp_path):
    """The timeline batches through the engine's batcher: a head whose logits overflow fails the
    video with one reason (exit 1), and --json stays strict JSON (no NaN is ever printed)."""
    from typer.testing import CliRunner

    from vidcls.cli import app
    from vidcls.zoo.modeldir import save_model_dir

    broken = vidcls.load_model("demo-motion").module
    with torch.no_grad():
        broken.get_classifier().weight.fill_(3e38)
    directory = save_model_dir(tmp_path / "overflow", model.card, broken)
    result = CliRunner().invoke(app, ["predict", str(path_clip), "--model", str(directory), "--timeline", "--json"])

    def refuse(constant):
        raise AssertionError(f"{constant} in --json output")

    records = json.loads(result.stdout, parse_constant=refuse)
    assert result.exit_code == 1
    assert records[0]["top_k"] == [] and "not finite" in records[0]["error"]


def write_with_sound(path, frames: torch.Tensor, fps: int, rate: int = 16000):
    """A video with an AAC track (a 440 Hz tone, 1024-sample frames) as long as its frames, written with PyAV."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width, video.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        samples = 0
        for index, frame in enumerate(frames.numpy()):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            while samples < (index + 1) * rate / fps:
                tone = 0.2 * np.sin(2 * np.pi * 440 * (samples + np.arange(1024)) / rate)
                chunk = av.AudioFrame.from_ndarray(tone[None].astype(np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, samples = rate, samples, samples + 1024
                container.mux(audio.encode(chunk))
        container.mux(video.encode())
        container.mux(audio.encode())
    return path


def audio_packets(path) -> list[tuple[bytes, int]] | None:
    """(bytes, pts) of every packet of a file's first audio stream; None without one."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        return [(bytes(p), p.pts) for p in container.demux(container.streams.audio[0]) if p.dts is not None]


def test_the_annotated_video_keeps_the_input_s_sound_as_it_is(tmp_path, model):
    """--out-video copies the audio stream packet for packet (remuxed, not re-encoded) at the same
    times; --no-audio (audio=False) leaves it out."""
    from typer.testing import CliRunner

    from vidcls.cli import app

    spec = ShapeClipSpec("left", height=32, width=32, size=(8.0, 8.0), speed=1.0, start=(26.0, 14.0))
    source = write_with_sound(tmp_path / "talk.mp4", render_path(spec, [("left", 24), ("up", 24)]), fps=FPS)
    found = timeline(source, model)
    kept = write_annotated_video(source, found, tmp_path / "kept.mp4")
    assert len(audio_packets(source)) > 10 and audio_packets(kept) == audio_packets(source)
    assert probe(kept).num_frames == probe(source).num_frames
    assert audio_packets(write_annotated_video(source, found, tmp_path / "silent.mp4", audio=False)) is None
    for flags, expected in (([], audio_packets(source)), (["--no-audio"], None)):
        out = tmp_path / f"cli{len(flags)}.mp4"
        result = CliRunner().invoke(app, ["predict", str(source), "-m", "demo-motion", "--out-video", str(out), *flags])
        assert result.exit_code == 0, result.output
        assert audio_packets(out) == expected
