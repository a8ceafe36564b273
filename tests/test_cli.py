"""End-to-end command line: output formats, exit codes and one-line errors that keep other results."""

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import typer
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

import vidcls
from vidcls import api, cli
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.errors import UsageError
from vidcls.video.synthetic import make_sample_clip

ROOT = Path(__file__).resolve().parents[1]

runner = CliRunner()


def invoke(*args, **options):
    return runner.invoke(app, [str(a) for a in args], **options)


@pytest.fixture(scope="module")
def good_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return [make_sample_clip(root / "left.mp4", direction="left", seed=1),
            make_sample_clip(root / "up.mp4", direction="up", frames=24, height=64, width=48, seed=2)]


def write_audio_only(path):
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_png(path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes([200, 30, 30] * 8) for _ in range(8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, good_clips):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = good_clips[0].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    write_audio_only(root / "audio.m4a")
    (root / "notes.txt").write_text("this is not a video\n")
    write_png(root / "image.png")
    return [root / n for n in ("empty.mp4", "random.mp4", "truncated.mp4", "audio.m4a", "notes.txt",
                               "image.png", "missing.mp4")]


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("vidcls ")


def test_models_json_lists_the_zoo():
    result = invoke("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    names = {row["name"] for row in rows}
    assert {"demo-motion", "joint", "joint-tiny"} <= names
    for row in rows:
        assert {"name", "family", "attention", "frames", "size", "weights", "labels"} <= set(row)


def test_models_json_is_the_library_listing(monkeypatch):
    """`vidcls models --json` prints what vidcls.list_models returns: the CLI calls the public function."""
    assert json.loads(invoke("models", "--json").stdout) == vidcls.list_models()
    from vidcls.zoo import catalog

    assert vidcls.list_models is catalog.list_models is api.list_models
    monkeypatch.setattr(catalog, "list_models", lambda: [{"name": "stub"}])
    assert json.loads(invoke("models", "--json").stdout) == [{"name": "stub"}]


def test_models_table_fits_80_columns(monkeypatch):
    """Each model is one line of whole cells at 80 columns; --with-weights adds the full sources."""
    monkeypatch.setattr(cli.zoo, "out", Console(width=80, force_terminal=True, color_system=None))
    rows = vidcls.list_models()
    lines = invoke("models").stdout.splitlines()
    assert max(map(len, lines)) <= 80
    table = [line.split() for line in lines]
    assert ["demo-motion", "joint", "8x1", "32", "1", "package", "synthetic-motion"] in table
    assert ["timesformer-k400", "divided", "8x32", "224", "3", "hf", "kinetics-400"] in table
    assert ["xvit-ssv2", "xvit", "16x1", "224", "6", "url", "sth-sth-v2"] in table
    marks = {"hf": "hf", "https": "url", "package": "package"}
    for row in rows:
        mark = "none" if row["weights"] is None else marks[row["weights"].split(":")[0]]
        labels = {"something-something-v2": "sth-sth-v2"}.get(row["labels"], row["labels"] or "-")
        cells = [row["name"], row["family"], f"{row['frames']}x{row['stride']}", str(row["size"]),
                 str(row["views"]), mark, labels]
        assert cells in table, row["name"]
    assert "hf://facebook/timesformer-base-finetuned-k400" not in "".join(lines)
    wide = invoke("models", "--with-weights").stdout.splitlines()
    assert max(map(len, wide)) <= 80
    squashed = "".join("".join(wide).split())  # a long source folds over lines inside its column
    for row in rows:
        if row["weights"]:
            assert row["weights"] in squashed, row["name"]


def test_predict_table_and_json(good_clips):
    table = invoke("predict", *good_clips, "--model", "demo-motion", "--top-k", "2")
    assert table.exit_code == 0, table.output
    assert "left" in table.stdout and "up" in table.stdout
    result = invoke("predict", *good_clips, "--model", "demo-motion", "--json", "--clips", "2", "--crops", "3")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["video"] for r in rows] == [str(p) for p in good_clips]
    assert [r["top_k"][0]["label"] for r in rows] == ["left", "up"]
    assert rows[0]["frames_used"] == 2 * 8 and rows[0]["error"] is None
    assert set(rows[0]["top_k"][0]) == {"label", "index", "score"}
    assert len(rows[0]["top_k"]) == 4  # top-k defaults to 5, capped by the 4 classes
    for row in rows:  # wall time spent on the video, also under its deprecated name
        assert row["processing_s"] > 0 and row["seconds"] == row["processing_s"]
        assert row["processing_s"] >= sum(row["timing_ms"].values()) / 1e3 - 1e-4  # each rounded: 0.1 ms apart at most


def test_predict_directory_input(good_clips):
    result = invoke("predict", good_clips[0].parent, "--model", "demo-motion", "--json")
    assert result.exit_code == 0
    assert sorted(r["video"] for r in json.loads(result.stdout)) == sorted(str(p) for p in good_clips)


def test_each_bad_input_is_one_line_and_keeps_good_results(good_clips, bad_inputs):
    result = invoke("predict", good_clips[0], *bad_inputs, good_clips[1], "--model", "demo-motion", "--json")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [r["video"] for r in rows] == [str(p) for p in [good_clips[0], *bad_inputs, good_clips[1]]]
    assert rows[0]["top_k"] and rows[-1]["top_k"]
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == len(bad_inputs)
    for bad, row, line in zip(bad_inputs, rows[1:-1], error_lines, strict=True):
        assert row["top_k"] == [] and row["error"]
        assert str(bad) in line and line.startswith("error:")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("index", range(7))
def test_each_bad_input_alone_exits_1(bad_inputs, index):
    result = invoke("predict", bad_inputs[index], "--model", "demo-motion")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and str(bad_inputs[index]) in result.stderr


def test_unknown_model_exits_2_suggesting_the_closest_name(good_clips):
    result = invoke("predict", good_clips[0], "--model", "demo-motoin")
    assert result.exit_code == 2
    assert "did you mean demo-motion" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag,value", [("--top-k", "0"), ("--clips", "0"), ("--batch-size", "0"),
                                        ("--device", "gpu"), ("--device", "cuda:"), ("--device", "cpu:0"),
                                        ("--precision", "fp8"), ("--crops", "2")])
def test_bad_flag_value_exits_2(good_clips, flag, value):
    result = invoke("predict", good_clips[0], "--model", "demo-motion", flag, value)
    assert result.exit_code == 2 and flag in result.stderr
    assert "predictions" not in result.stdout


@pytest.mark.parametrize("flag,value,allowed", [("--device", "gpu", "auto|cpu|cuda[:N]"),
                                                ("--precision", "fp8", "auto|fp32|bf16|fp16"), ("--crops", "2", "1|3")])
def test_bad_choice_is_one_line_naming_the_choices(good_clips, flag, value, allowed):
    result = invoke("predict", good_clips[0], "--model", "demo-motion", flag, value)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {flag} must be {allowed}, got {value!r}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_exits_2(good_clips):
    result = invoke("predict", good_clips[0], "--model", "demo-motion", "--device", "cuda:0")
    assert result.exit_code == 2 and "CUDA is not available" in result.stderr


def test_architecture_only_model_is_refused_for_predict(good_clips):
    result = invoke("predict", good_clips[0], "--model", "joint-tiny")
    assert result.exit_code == 2 and "--weights" in result.stderr


def test_sample_clip_command(tmp_path):
    result = invoke("sample-clip", tmp_path / "clip.mp4", "--direction", "down")
    assert result.exit_code == 0 and (tmp_path / "clip.mp4").stat().st_size > 0
    refused = invoke("sample-clip", tmp_path / "x.mp4", "--direction", "sideways")
    assert refused.exit_code == 2 and not (tmp_path / "x.mp4").exists()
    assert refused.stderr == "error: --direction must be left|right|up|down, got 'sideways'\n"


def test_error_lines_keep_square_brackets(tmp_path):
    """File names are printed verbatim, not read as rich markup."""
    missing = tmp_path / "[red]clip.mp4"
    result = invoke("predict", missing, "--model", "demo-motion")
    assert result.exit_code == 1 and "[red]clip.mp4" in result.stderr


@pytest.mark.parametrize("command,listed", [
    ("predict", ["auto|cpu|cuda[:N]", "auto|fp32|bf16|fp16", "1|3", "docs/cli.md"]),
    ("benchmark", ["auto|cpu|cuda[:N]", "auto|fp32|bf16|fp16"]), ("sample-clip", ["left|right|up|down"]),
    ("train", ["auto|cpu|cuda[:N]", "fp32|bf16|fp16", "adamw|sgd", "central|average", "--out"]),
    ("convert", ["--output", "--out"])])
def test_help_lists_the_choices(command, listed):
    result = invoke(command, "--help", env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for text in listed:
        assert text in result.stdout, text


def test_every_cli_md_reference_names_docs_cli_md():
    source = "".join(path.read_text() for path in (ROOT / "vidcls" / "cli").glob("*.py"))
    assert source.count("cli.md") == source.count("docs/cli.md") > 0


@pytest.mark.parametrize("where", ["before", "after", None])
def test_debug_before_or_after_the_command_keeps_the_traceback(monkeypatch, where, some_file):
    """With --debug (either side of the command) the exception reaches the top, where Python prints
    its traceback; without it, one line and the exit code."""
    def broken():
        raise RuntimeError("boom")

    from vidcls.zoo import catalog

    monkeypatch.setattr(catalog, "list_models", broken)  # what `vidcls models` calls

    def with_debug(*args):
        return {"before": ["--debug", *args], "after": [*args, "--debug"], None: list(args)}[where]

    internal = invoke(*with_debug("models"))
    vidcls_error = invoke(*with_debug("predict", some_file, "--model", "no-such-model"))
    if where is None:
        assert internal.exit_code == 1 and isinstance(internal.exception, SystemExit)
        assert internal.stderr == "error: internal error: RuntimeError: boom (rerun with --debug for details)\n"
        assert vidcls_error.exit_code == 2 and isinstance(vidcls_error.exception, SystemExit)
        assert len(vidcls_error.stderr.splitlines()) == 1
    else:
        assert isinstance(internal.exception, RuntimeError) and str(internal.exception) == "boom"
        assert isinstance(vidcls_error.exception, UsageError) and "no-such-model" in str(vidcls_error.exception)


def test_convert_output_and_its_out_alias(tmp_path):
    """--output, -o and --out write the same model directory (here: the demo model, converted as is)."""
    demo = ROOT / "vidcls" / "assets" / "demo-motion"
    arch = [item for pair in (("--arch", f"{k}={v}") for k, v in json.loads((demo / "config.json").read_text())
                              ["arch"].items()) for item in pair]
    for flag in ("--output", "-o", "--out"):
        result = invoke("convert", demo, "--family", "joint", *arch, flag, tmp_path / flag)
        assert result.exit_code == 0, result.output
        weights = load_file(tmp_path / flag / "model.safetensors")
        assert all(torch.equal(weights[k], v) for k, v in load_file(demo / "model.safetensors").items())


def cli_imports(*args: str) -> list[str]:
    """Which of torch and typer `vidcls ARGS` (run as the console script runs it) has imported when it exits."""
    code = ("import atexit, sys; atexit.register(lambda: print([m for m in ('torch', 'typer') if m in sys.modules])); "
            "from vidcls.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1].replace("'", '"'))


def test_import_version_and_help_do_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import vidcls, vidcls.cli, sys; print('torch' in sys.modules)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    for args in (["--version"], ["--help"]):  # --help builds every command's options
        assert cli_imports(*args) == ["typer"], args  # typer: the check does see what was imported


def test_models_and_sample_clip_do_not_import_torch(tmp_path):
    """Listing the zoo and writing a synthetic clip read YAML and JSON and encode with PyAV: torch's
    import (2-5 s) is not theirs to pay (a subprocess sys.modules check, as for the refusals)."""
    assert cli_imports("models") == ["typer"]
    assert cli_imports("models", "--json", "--with-weights") == ["typer"]
    assert cli_imports("sample-clip", str(tmp_path / "clip.mp4"), "--direction", "up") == ["typer"]
    with av.open(str(tmp_path / "clip.mp4")) as written:
        assert sum(1 for _ in written.decode(video=0)) == 16


def test_the_console_script_builds_only_the_command_it_runs():
    """main() hands typer an app holding the named command alone (building all of them costs every start
    0.15-0.3 s); help, --version and unknown names get the whole app."""
    from vidcls.cli.app import app_for

    def names(args):
        return [info.name for info in app_for(args).registered_commands]

    assert names(["predict", "clip.mp4", "--json"]) == ["predict"]
    assert names(["--debug", "models"]) == ["models"]
    for whole in (["--help"], ["--version"], [], ["predictt", "clip.mp4"]):
        assert app_for(whole) is app, whole
    done = subprocess.run([sys.executable, "-c", "from vidcls.cli import main; main()", "--debug", "models", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout) == vidcls.list_models()
    typo = subprocess.run([sys.executable, "-c", "from vidcls.cli import main; main()", "modles"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert typo.returncode == 2 and "modles" in typo.stderr


def shaped_model(tmp_path, ref, **arch):
    """A model directory of a zoo architecture with `arch` changed and random weights (for its shapes only)."""
    import dataclasses

    from vidcls.models import build_model
    from vidcls.zoo.modeldir import save_model_dir
    from vidcls.zoo.resolve import resolve

    card = resolve(ref, need_weights=False).card
    card = dataclasses.replace(card, arch={**card.arch, **arch}, labels=["left", "right", "up", "down"])
    return save_model_dir(tmp_path / ref, card, build_model(card.family, card.arch))


@pytest.mark.parametrize("ref,arch,frames,reason", [
    ("demo-motion", {}, 7, "frame count 7 is not a multiple of its tubelet size 2; nearest valid frame count: 6 or 8"),
    ("xvit-tiny", {"num_segments": 4}, 6, "not a whole number of 4-frame mixing groups"),
    ("vidtr-tiny", {"embedding": "attention_input", "attention": "shared"}, 16, "runs on 8 frames of 32 px only"),
])
def test_a_frame_count_the_model_cannot_take_is_refused_before_decoding(tmp_path, ref, arch, frames, reason):
    """predict, predict --timeline and evaluate refuse it in one line, exit 2, before any video is opened
    (the video is no video: decoding it would be exit 1); a valid count runs."""
    model = ref if not arch else str(shaped_model(tmp_path, ref, **arch))
    data = tmp_path / "data" / "left"
    data.mkdir(parents=True)
    (data / "broken.mp4").write_bytes(b"not a video")
    for command in (["predict", data / "broken.mp4"], ["predict", data / "broken.mp4", "--timeline"],
                    ["evaluate", "--data", tmp_path / "data"]):
        result = invoke(*command, "--model", model, "--frames", frames)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: ") and reason in result.stderr and "broken" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    clip = make_sample_clip(tmp_path / "clip.mp4", direction="left", frames=16, height=32, width=32)
    valid = invoke("predict", clip, "--model", model, "--frames", 8, "--json")
    assert valid.exit_code == 0, valid.output


def test_the_timeline_takes_the_clip_length_of_frames(tmp_path):
    """--frames sets the timeline's clip too (it kept the model's 8 frames), and the library call refuses
    a count the model cannot take before opening the file."""
    from vidcls.inference.timeline import timeline

    clip = make_sample_clip(tmp_path / "clip.mp4", direction="left", frames=32, height=32, width=32)
    rows = {n: json.loads(invoke("predict", clip, "--model", "demo-motion", "--timeline", "--frames", n,
                                 "--json").stdout)[0] for n in (4, 8)}
    for n, row in rows.items():
        assert row["frames_used"] == n * len(row["timeline"]), n
    with pytest.raises(UsageError, match="nearest valid frame count: 6 or 8"):
        timeline(tmp_path / "missing.mp4", vidcls.load_model("demo-motion"), frames=7)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_ctrl_c_says_what_was_written_and_how_to_go_on(tmp_path, monkeypatch, ctrl_c_after, command):
    """Ctrl-C after 2 of 4 videos: the `done:` line of what --output holds, then one line naming the file,
    the count and --resume (exit 130); without --output, that nothing was kept."""
    data = tmp_path / "data"
    clips = [make_sample_clip(data / d / f"{d}.mp4", direction=d, seed=i) for i, d in enumerate(DIRECTIONS)]
    name = f"{command}_run"
    real = getattr(api, name)

    def interrupted(*args, on_result, **kwargs):
        stop = ctrl_c_after(2)
        return real(*args, on_result=lambda p: (on_result(p), stop(p)), **kwargs)

    monkeypatch.setattr(api, name, interrupted)
    args = ["predict", *clips] if command == "predict" else ["evaluate", "--data", data]
    output = tmp_path / "out.jsonl"
    result = invoke(*args, "--model", "demo-motion", "--output", output)
    assert result.exit_code == 130, result.output
    verb = {"predict": "classified", "evaluate": "evaluated"}[command]
    assert result.stderr.splitlines() == [
        f"done: 2 {verb} (0 failed): {output}",
        f"error: interrupted after 2 of 4 videos: their results are in {output}; rerun the same command with "
        f"--resume to continue"]
    assert len(output.read_text().splitlines()) == 2
    bare = invoke(*args, "--model", "demo-motion")
    assert bare.exit_code == 130 and bare.stderr.splitlines() == [
        "error: interrupted after 2 of 4 videos; nothing was kept (with --output FILE results stream to FILE, and "
        "--resume continues it)"]


def command_names() -> list[str]:
    group = typer.main.get_command(app)
    return [name for name in group.list_commands(None) if not group.get_command(None, name).hidden]


@pytest.mark.parametrize("name", [None, *command_names()])
def test_help_reads_at_80_columns(name):
    """Every flag whole (never `--max-bad-fracti…`), prose re-flowed to the width (not hard-wrapped
    then re-wrapped into one-word lines), plain metavars (no `<bool>`, `<list[str]>`, `{ref}`) and
    square brackets kept as text (`vidcls[onnx]`)."""
    import inspect
    import re
    import textwrap

    group = typer.main.get_command(app)
    command = group if name is None else group.get_command(None, name)
    done = subprocess.run([sys.executable, "-m", "vidcls", *([name] if name else []), "--help"], cwd=ROOT,
                          env={**os.environ, "COLUMNS": "80"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert max(map(len, text.splitlines())) <= 80
    assert "…" not in text
    assert not re.search(r"(^|\s)-[-\w]+ [<{]", text), text  # a flag's metavar: N, FILE, auto|cpu, ...
    for param in command.params:
        for flag in [] if param.hidden else [*param.opts, *param.secondary_opts]:
            if flag.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), flag
    for paragraph in inspect.cleandoc(command.help).split("\n\n"):  # re-flowed, as textwrap fills it
        assert textwrap.fill(" ".join(paragraph.split()), 78, initial_indent="  ", subsequent_indent="  ") in text
    if name == "export":
        assert "(`vidcls[onnx]`)" in text


@pytest.mark.parametrize("args,names", [
    (["predict", "clip.mp4", "-m", "demo-motion", "--top-k", "0"], "--top-k"),
    (["predict", "clip.mp4", "-m", "demo-motion", "--frobnicate"], "--frobnicate"),
    (["predict", "clip.mp4"], "--model"),
    (["evaluate", "-m", "demo-motion"], "--data"),
    (["predcit"], "predict"),
])
def test_usage_errors_are_one_line(args, names):
    """typer's boxed usage errors become one `error:` line (exit 2) naming the flag, as every other error."""
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], result.stderr
    assert "--help" in lines[0] and result.stdout == ""


def test_library_warnings_are_one_warning_line(tmp_path):
    """The position-embedding interpolation (a Python UserWarning in the model code) is one `warning:`
    line, without Python's file path and source line."""
    clip = make_sample_clip(tmp_path / "clip.mp4", direction="left", frames=16, height=32, width=32)
    result = invoke("predict", clip, "--model", "demo-motion", "--frames", "12", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == ["warning: joint: interpolating position embedding from grid (4, 8, 8) to "
                                          "(6, 8, 8); the model was trained at the former"]


@pytest.mark.parametrize("width", [14, 20, 30, 40, 47])
def test_middle_cut_keeps_the_file_name(width):
    from vidcls.cli.render import middle_cut

    path = "/data/kinetics-400/val/abseiling/clip.mp4"  # 41 characters
    cut = middle_cut(path, width)
    if width >= len(path):
        assert cut == path
        return
    assert len(cut) == width and cut.count("…") == 1
    head, tail = cut.split("…")
    assert path.startswith(head) and path.endswith(tail) and tail.endswith("/clip.mp4")
    assert middle_cut("a-very-long-file-name.mp4", 11) == "a-ver…e.mp4"  # a name wider than the column


def test_a_long_video_path_keeps_its_file_name_at_80_columns(tmp_path, monkeypatch):
    """On an 80-column terminal a long path is cut in the middle (its file name stays); in a pipe the
    table is plain text with the whole path."""
    deep = tmp_path.joinpath(*[f"folder-number-{i}" for i in range(6)])
    clip = make_sample_clip(deep / "the-clip-to-find.mp4", direction="left", seed=1)
    monkeypatch.setattr(cli.predict, "out", Console(width=80, force_terminal=True, color_system=None))
    lines = invoke("predict", clip, "--model", "demo-motion").stdout.splitlines()
    assert max(map(len, lines[:-1])) <= 80  # the table; the cost line wraps where the terminal does
    first = next(line for line in lines if "the-clip-to-find.mp4" in line)
    assert "…/the-clip-to-find.mp4" in first and first.split("│")[1].strip().startswith("/")
    monkeypatch.setattr(cli.predict, "out", Console(width=80))  # a pipe
    piped = invoke("predict", clip, "--model", "demo-motion").stdout
    assert f"{clip} 1 left" in " ".join(piped.split()) and not set("│┃━…") & set(piped)
    assert piped.splitlines()[-1].startswith("cost: ")  # one line, not wrapped at 80


def test_progress_is_on_stderr_while_stdout_is_a_file(monkeypatch):
    """The progress bar follows stderr: shown on a terminal whether stdout is one or a file."""
    from vidcls.cli import render

    monkeypatch.setattr(render, "out", Console(width=80))  # stdout redirected
    monkeypatch.setattr(render, "err", Console(stderr=True, force_terminal=True))
    assert not render.progress_bar().disable
    monkeypatch.setattr(render, "err", Console(stderr=True))  # stderr redirected too: messages only
    assert render.progress_bar().disable


def test_ray_without_ray_installed_is_one_line(tmp_path, monkeypatch):
    """--ray imports ray only when asked: without it, one line naming the extra to install."""
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed, whether it is or not
    clip = make_sample_clip(tmp_path / "clip.mp4", direction="left")
    result = invoke("predict", clip, "--model", "demo-motion", "--ray", "local", "--output", tmp_path / "p.jsonl")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "error: --ray needs the optional package ray[data]: " \
                                             "pip install 'vidcls[ray]'"


@pytest.mark.parametrize("extra,message", [
    ([], "--ray needs --output"), (["-o", "p.jsonl", "--timeline"], "--ray does not take --timeline"),
    (["-o", "p.jsonl", "--shard", "0/2", "--json"], "--ray does not take --shard, --json"),
    (["-o", "p.jsonl", "--frames", "7"], "nearest valid frame count: 6 or 8"),
    (["-o", "p.txt"], "p.txt"), (["-o", "p.jsonl", "--ray", "videos/"], "--ray takes auto, local")])
def test_ray_refuses_what_it_cannot_do_before_starting(tmp_path, monkeypatch, extra, message):
    """Options --ray cannot honour, and a clip the model cannot take, are exit 2 before Ray is imported."""
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", "clip.mp4", "--model", "demo-motion", "--ray", "auto", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_serve_without_its_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "starlette", None)  # what a missing package looks like to find_spec
    result = invoke("serve", "--model", "demo-motion")
    assert result.exit_code == 2 and "pip install 'vidcls[serve]'" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_serve_config_warns_beyond_this_machine_and_checks_limits():
    from vidcls.serve.config import ServeConfig

    assert ServeConfig("m").exposure_warning() is None
    assert ServeConfig("m", host="localhost").exposure_warning() is None
    assert ServeConfig("m", host="::1").exposure_warning() is None
    assert "every network interface" in ServeConfig("m", host="0.0.0.0").exposure_warning()
    assert "192.168.1.5" in ServeConfig("m", host="192.168.1.5").exposure_warning()
    with pytest.raises(UsageError, match="--max-queue must be >= 1"):
        ServeConfig("m", max_queue=0)
