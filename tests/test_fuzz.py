"""Hostile files in one predict call: seeded mutants of small mp4/webm/mkv clips (flipped bytes,
cut tails, zeroed and duplicated ranges, junk headers) between good clips. Whatever a mutant
does, the call ends without a traceback, every failed input gets exactly one error line, and
every good clip in the same call is classified."""

import json
import random
import re

import pytest
from typer.testing import CliRunner

from vidcls.cli import app
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
