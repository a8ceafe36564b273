"""Hostile files in one predict call: seeded mutants of small mp4/webm/mkv clips (flipped bytes,
cut tails, zeroed and duplicated ranges, junk headers) between good clips. Whatever a mutant
does, the call ends without a traceback, every failed input gets exactly one error line, and
every good clip in the same call is classified. Hostile names (tests/hostile_names.py: rich
markup, terminal escapes, bytes that are not UTF-8, in file names and a model's labels) go
through the table, the timeline and a resumed -o in the same way."""

import json
import os
import random
import re

import pytest
from rich.text import Text
from typer.testing import CliRunner

from hostile_names import HOSTILE_FILE_NAMES, HOSTILE_LABELS, HOSTILE_MODEL_NAME, hostile_copies, hostile_model
from vidcls.cli import app
from vidcls.errors import printable
from vidcls.inference.results import read_records
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip

runner = CliRunner()
CONTAINERS = {".mp4": "libx264", ".webm": "libvpx", ".mkv": "libx264"}
MUTANTS = 102


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.choice(["flip", "truncate", "zero", "duplicate", "header"])
    if kind == "flip":
        for _ in range(rng.randint(1, 40)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del out[rng.randrange(1, len(out)):]
    elif kind == "zero":
        start = rng.randrange(len(out))
        out[start:start + rng.randint(1, 2000)] = bytes(min(len(out) - start, rng.randint(1, 2000)))
    elif kind == "duplicate":
        start = rng.randrange(len(out))
        piece = out[start:start + rng.randint(1, 4000)]
        at = rng.randrange(len(out))
        out[at:at] = piece
    else:
        out[:rng.randint(1, 64)] = rng.randbytes(rng.randint(1, 64))
    return bytes(out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    rng = random.Random(2024)
    sources, goods = [], []
    for i, (suffix, codec) in enumerate(CONTAINERS.items()):
        spec = random_spec(random.Random(i), ["left", "right", "up"][i], frames=12, height=48, width=64)
        path = root / f"good-{i}{suffix}"
        write_video(path, render_clip(spec), codec=codec)
        sources.append(path)
        goods.append((path, spec.direction))
    mutants = []
    for n in range(MUTANTS):
        source = sources[n % len(sources)]
        path = root / f"mutant-{n:03d}{source.suffix}"
        path.write_bytes(mutate(source.read_bytes(), rng))
        mutants.append(path)
    return goods, mutants


def test_mutants_never_cost_the_good_clips(corpus):
    goods, mutants = corpus
    inputs = [str(p) for p, _ in goods[:2]] + [str(p) for p in mutants] + [str(goods[2][0])]
    result = runner.invoke(app, ["predict", *inputs, "-m", "demo-motion", "--json", "--workers", "0",
                                 "--top-k", "1"])
    assert result.exit_code in (0, 1), result.output[-2000:]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "internal error" not in result.output
    rows = json.loads(result.stdout)
    assert [r["video"] for r in rows] == inputs  # every input answered once, in order
    by_name = {r["video"]: r for r in rows}
    for path, direction in goods:
        assert by_name[str(path)]["error"] is None and by_name[str(path)]["top_k"][0]["label"] == direction
    failed = [r["video"] for r in rows if r["error"]]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == len(failed) == len(set(failed))
    for line, video in zip(error_lines, failed, strict=True):
        assert line.startswith(f"error: {video}: ")
    assert all(re.fullmatch(r"[^\n\x1b]*", r["error"]) for r in rows if r["error"])
    assert result.exit_code == (1 if failed else 0)


def test_forged_headers_through_predict_timeline_and_output_beside_good_clips(corpus, tmp_path):
    """Files whose headers promise 10^15 ms, a 10^12 ms timestamp, a frame every 100000 s or 2^31-1
    samples (tests/forged_headers.py) grew memory without bound under --timeline (24 GB from one
    16 KB file). Run in a subprocess under a 4 GiB address-space limit and a timeout, so a
    regression fails here instead of taking the machine: every input is answered, in order, the
    forged ones with a bounded timeline (at most one window per frame they hold) or one error line."""
    import os
    import resource
    import subprocess
    import sys

    from forged_headers import FRAMES, forge_all

    goods, _ = corpus
    forged = forge_all(tmp_path / "forged")
    inputs = [str(goods[0][0]), *map(str, forged.values()), str(goods[1][0])]
    output = tmp_path / "out.jsonl"

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    done = subprocess.run([sys.executable, "-m", "vidcls", "predict", *inputs, "-m", "demo-motion", "--timeline",
                           "-o", str(output), "--workers", "0", "--top-k", "1"], capture_output=True, text=True,
                          timeout=180, preexec_fn=cap, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["video"] for r in rows] == inputs
    by_name = {r["video"]: r for r in rows}
    for path, direction in goods[:2]:
        assert by_name[str(path)]["error"] is None and by_name[str(path)]["top_k"][0]["label"] == direction
    for path in forged.values():
        row = by_name[str(path)]
        assert row["error"] or 1 <= len(row["timeline"]) <= FRAMES, row
    failed = [r["video"] for r in rows if r["error"]]
    assert len(error_lines := [line for line in done.stderr.splitlines() if line.startswith("error:")]) == len(failed)
    assert all(line.startswith(f"error: {video}: ") for line, video in zip(error_lines, failed, strict=True))


RAW = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what must never reach a terminal (newline aside)


def test_hostile_names_and_labels_cost_no_output(corpus, tmp_path):
    """The issue's names in one folder between good clips, classified by a model whose name and labels
    are hostile too: the table (predict), the segments (--timeline), -o x.csv (then --resume, which
    must find every record) and --json each answer every video once, show every name and label as
    written (markup literal, escapes spelled out: errors.printable) and nothing raw reaches the terminal."""
    goods, _ = corpus
    folder = tmp_path / "names"
    names = hostile_copies(folder, goods[0][0])
    broken = os.path.join(os.fsencode(folder), b"[bold red]broken\x1b[2J\xff.mp4")
    with open(broken, "wb") as junk:
        junk.write(b"not a video")
    broken_name = os.fsdecode(broken)
    model = hostile_model(tmp_path / "model")
    inputs = [str(goods[1][0]), str(folder), str(goods[2][0])]
    videos = {str(goods[1][0]), str(goods[2][0]), broken_name, *names}
    assert len(names) == len(HOSTILE_FILE_NAMES) + 1
    shown_labels = {printable(label) for label in HOSTILE_LABELS}
    base = ["predict", *inputs, "-m", str(model), "--workers", "0", "--top-k", "2"]

    def check(result, table: bool) -> None:
        assert result.exit_code == 1, result.output[-3000:]
        assert "Traceback" not in result.output and "internal error" not in result.output
        assert not RAW.search(result.stdout) and not RAW.search(result.stderr)
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert line.startswith(f"error: {printable(broken_name)}: ")
        if table:
            for name in videos - {broken_name}:
                assert printable(name) in result.stdout, name
            assert any(label in result.stdout for label in shown_labels)
            assert "[bold red]x.mp4" in result.stdout  # markup shown as written

    check(runner.invoke(app, base), table=True)
    check(runner.invoke(app, [*base, "--timeline"]), table=True)

    out = tmp_path / "x.csv"
    check(runner.invoke(app, [*base, "--timeline", "-o", str(out)]), table=False)
    records = read_records(out)
    assert sorted(r["video"] for r in records) == sorted(videos)  # each once, the bytes of every name kept
    assert all(r["model"] == HOSTILE_MODEL_NAME for r in records)
    assert {item["label"] for r in records for item in r["top_k"]} <= set(HOSTILE_LABELS)
    before = out.read_bytes()
    resumed = runner.invoke(app, [*base, "--timeline", "-o", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert f"0 classified (0 failed), {len(videos)} already there" in resumed.stderr
    assert out.read_bytes() == before

    as_json = runner.invoke(app, [*base, "--json"])
    assert as_json.exit_code == 1 and not RAW.search(as_json.stderr)
    assert sorted(r["video"] for r in json.loads(as_json.stdout)) == sorted(videos)

    from vidcls.cli.render import bar_text

    for name in [*videos, *HOSTILE_LABELS, HOSTILE_MODEL_NAME]:  # the progress bar reads markup
        assert Text.from_markup(bar_text(name)).plain == printable(name)


def test_hostile_names_in_the_lines_other_commands_print(tmp_path):
    """The lines besides tables (`wrote ...` of sample-clip; export, download, convert and benchmark
    print theirs through the same helper) show a name as written, escapes spelled out."""
    name = tmp_path / "[bold red]clip\x1b]0;pwned\x07.mp4"
    result = runner.invoke(app, ["sample-clip", str(name), "--frames", "4", "--width", "32", "--height", "32"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"wrote {printable(str(name))} (4 frames") and not RAW.search(result.stderr)
