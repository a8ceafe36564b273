"""Hard to crash (issue 14): bad model configs, bad weights and hostile names fail in one line.

Every bad config is refused before anything is built, in one line naming the field as
config.json spells it, with no traceback and no "internal error".
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from vidcls.cli import app
from vidcls.errors import VidclsError, check_finite, printable
from vidcls.models import families
from vidcls.models.validate import ConfigError, check_fits, unbounded_fields
from vidcls.video.synthetic import make_sample_clip
from vidcls.zoo import modeldir as zoo

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "vidcls" / "assets" / "demo-motion"
runner = CliRunner()

NAN = float("nan")
# (section, key, value, text the one error line must hold); the demo-motion config is the base
BAD_CONFIGS = [
    ("arch", "depth", 10**9, "arch.depth = 1000000000 is out of range (1..256)"),
    ("arch", "num_heads", 0, "arch.num_heads = 0 is out of range"),
    ("arch", "embed_dim", 10**400, "arch.embed_dim = 1e400 (about) is out of range"),
    ("arch", "depth", "3", "arch.depth = '3' must be an integer"),
    ("arch", "depth", [3], "arch.depth = [3] must be an integer"),
    ("arch", "depth", True, "arch.depth = True must be an integer"),
    ("arch", "depth", 3.0, "arch.depth = 3.0 must be an integer"),
    ("arch", "depth", -1, "arch.depth = -1 is out of range"),
    ("arch", "depth", 0, "arch.depth = 0 is out of range"),
    ("arch", "depth", None, "arch.depth = None must be an integer"),
    ("arch", "num_classes", 0, "arch.num_classes = 0 is out of range"),
    ("arch", "embed_dim", 63, "arch.embed_dim = 63 is not divisible by arch.num_heads = 4"),
    ("arch", "img_size", 30, "arch.img_size = 30 is not divisible by arch.patch_size = 4"),
    ("arch", "num_frames", 7, "arch.num_frames = 7 is not divisible by arch.tubelet_size = 2"),
    ("arch", "mlp_ratio", NAN, "arch.mlp_ratio = nan must be a finite number"),
    ("arch", "mlp_ratio", "2", "arch.mlp_ratio = '2' must be a finite number"),
    ("arch", "mlp_ratio", 1e300, "arch.mlp_ratio = 1e+300 is out of range"),
    ("arch", "layer_norm_eps", -1, "arch.layer_norm_eps = -1 is out of range"),
    ("arch", "dropout", 1.5, "arch.dropout = 1.5 is out of range"),
    ("arch", "patch_size", 0, "arch.patch_size = 0 is out of range"),
    ("arch", "tubelet_size", 10**400, "arch.tubelet_size = 1e400 (about) is out of range"),
    ("arch", "in_chans", 0, "arch.in_chans = 0 is out of range"),
    ("arch", "mlp_activation", "swish", "arch.mlp_activation = 'swish' must be one of"),
    ("arch", "pool", "max", "arch.pool = 'max' must be one of 'cls', 'mean'"),
    ("arch", "qkv_bias", "yes", "arch.qkv_bias = 'yes' must be one of"),
    ("arch", "cls_token", 1, "arch.cls_token = 1 must be true or false"),
    ("arch", "foo\n\x1b[31m", 1, "has no option(s) foo\\n\\x1b[31m"),
    ("arch", "dropout", 0.1, None),  # a valid change: the model loads and classifies
    ("input", "frames", 10**9, "input.frames = 1000000000 is out of range (1..1024)"),
    ("input", "clips", 10**6, "input.clips = 1000000 is out of range (1..100)"),
    ("input", "std", [0, 0.5, 0.5], "input.std = [0, 0.5, 0.5] is out of range"),
    ("input", "std", [-1, 0.5, 0.5], "input.std = [-1, 0.5, 0.5] is out of range"),
    ("input", "mean", [NAN, 0.5, 0.5], "input.mean = [nan, 0.5, 0.5] must be a list of 3 finite numbers"),
    ("input", "mean", [0.5, 0.5], "input.mean = [0.5, 0.5] must be a list of 3 finite numbers"),
    ("input", "std", "0.5", "input.std = '0.5' must be a list of 3 finite numbers"),
    ("input", "size", 0, "input.size = 0 is out of range"),
    ("input", "size", 32.5, "input.size = 32.5 must be an integer"),
    ("input", "crops", 2, "input.crops = 2 must be one of 1, 3"),
    ("input", "sampling", "random", "input.sampling = 'random' must be one of"),
    ("input", "stride", -4, "input.stride = -4 is out of range"),
    ("input", "resize", 0, "input.resize = 0 is out of range"),
    ("input", "aspect", 5, "input.aspect = 5 must be a string"),
    ("input", "frames", 7, "input.frames = 7, input.size = 32: the model cannot take this view"),
    ("input", "size", 30, "input.frames = 8, input.size = 30: the model cannot take this view"),
]
# whole-file faults: (config.json text, or a function of the demo config giving it; expected text)
BAD_FILES = [
    ('{"arch": {"depth": ' + "9" * 5000 + "}}", "config.json: not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "config.json: not valid JSON"),
    ("[1, 2]", "config.json: expected a JSON object"),
    (lambda c: {**c, "arch": [1]}, "not in vidcls format"),
    (lambda c: {**c, "family": ["joint"]}, "name and family must be strings"),
    (lambda c: {**c, "family": "nope"}, "unknown model family 'nope'"),
    (lambda c: {**c, "input": 5}, "input must be an object of input options"),
    (lambda c: {**c, "id2label": ["left"]}, "id2label must be an object"),
    (lambda c: {**c, "arch": {**c["arch"], "depth": 256, "embed_dim": 65536, "num_heads": 4}},
     "the model is too large for this machine"),
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_sample_clip(tmp_path_factory.mktemp("clip") / "left.mp4", direction="left", seed=1)


def model_dir(root: Path, config) -> Path:
    directory = root / "model"
    shutil.copytree(DEMO, directory)
    base = json.loads((DEMO / "config.json").read_text())
    text = config if isinstance(config, str) else json.dumps(config(base))
    (directory / "config.json").write_text(text)
    return directory


def predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


def assert_one_error_line(result, *expected):
    lines = result.stderr.splitlines()
    assert result.exit_code in (1, 2) and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "internal error" not in lines[0] and "\x1b" not in lines[0]
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("section, key, value, expected", BAD_CONFIGS)
def test_a_bad_config_value_is_one_line_naming_the_field(tmp_path, clip, section, key, value, expected):
    directory = model_dir(tmp_path, lambda c: {**c, section: {**c[section], key: value}})
    result = predict(clip, "--model", directory, "--json")
    if expected is None:
        assert result.exit_code == 0, result.stderr
        return
    # read errors name the file (model directory DIR: config.json: ...), build errors the model (model DIR: ...)
    assert_one_error_line(result, f"{directory}: ", expected)


@pytest.mark.parametrize("config, expected", BAD_FILES)
def test_a_bad_config_file_is_one_line(tmp_path, clip, config, expected):
    result = predict(clip, "--model", model_dir(tmp_path, config), "--json")
    assert_one_error_line(result, expected)


def test_the_worst_configs_fail_fast_through_the_real_command(tmp_path, clip):
    """The issue's cases in a real process: no traceback, no C++ stack, one line, in seconds."""
    for name, change in (("deep", {"depth": 10**9}), ("wide", {"embed_dim": 10**400})):
        directory = model_dir(tmp_path / name, lambda c, change=change: {**c, "arch": {**c["arch"], **change}})
        done = subprocess.run([sys.executable, "-m", "vidcls", "predict", str(clip), "--model", str(directory)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
        assert f"arch.{next(iter(change))} = " in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("family", sorted(families()))
def test_every_numeric_field_of_every_family_is_bounded(family):
    config = families()[family].Config
    assert unbounded_fields(config, config.limits) == []


def test_a_zoo_file_entry_is_checked_too():
    with pytest.raises(ConfigError, match=r"arch.depth = 0 is out of range"):
        zoo.ModelCard(name="x", family="joint", arch={"depth": 0})


def test_check_fits_refuses_what_cannot_fit_and_passes_what_can():
    cls = families()["joint"]
    small = cls.Config(num_classes=4, num_frames=8, img_size=32, patch_size=8, tubelet_size=2, embed_dim=64,
                       depth=2, num_heads=4)
    check_fits(cls, small, 8, 32, available=1 << 30)
    with pytest.raises(ConfigError, match=r"too large for this machine: 0 M parameters .* plus .* GiB for the "
                                          r"largest tensor of one 8x32x32 view"):
        check_fits(cls, small, 8, 32, available=550_000)  # the weights (517 kB) fit, not with the view (98 kB)


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize("fault, expected", [
    (lambda t: t.to(torch.int32), "is int32, not floating point"),
    (lambda t: t > 0, "is bool, not floating point"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "is not finite (NaN or infinity)"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("inf")), "is not finite (NaN or infinity)"),
])
def test_non_float_or_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, clip, fault, expected):
    directory = model_dir(tmp_path, lambda c: c)
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    state["head.weight"] = fault(state["head.weight"])
    save_file(state, str(weights))
    result = predict(clip, "--model", directory, "--json")
    assert_one_error_line(result, f"{weights}: tensor head.weight {expected}")
    assert "NaN" not in result.stdout


def test_check_finite_names_what_is_not_finite():
    check_finite(torch.ones(3), "logits")
    with pytest.raises(VidclsError, match=r"^logits of x.mp4 is not finite"):
        check_finite(torch.tensor([1.0, float("-inf")]), "logits of x.mp4")


# ---------------------------------------------------------------- names in error lines


def test_printable_escapes_newlines_controls_and_terminal_escapes():
    assert printable("a\nb\x1b[31mc\td\u202ee\x00f") == "a\\nb\\x1b[31mc\\td\\u202ee\\x00f"
    assert printable("plain/é path\\x") == "plain/é path\\x"


@pytest.mark.parametrize("name", ["bad\nname", "red\x1b[31mname", "both\n\x1b[31m\x1b]0;title\x07"])
def test_a_hostile_name_gives_exactly_one_error_line_and_no_raw_escape(tmp_path, clip, name):
    missing = tmp_path / name
    result = predict(clip, "--model", missing)
    assert_one_error_line(result, f"--model {printable(missing)}: no such directory")
    bad_config = tmp_path / f"m{name}"
    shutil.copytree(DEMO, bad_config)
    (bad_config / "config.json").write_text("{")
    assert_one_error_line(predict(clip, "--model", bad_config), f"{printable(bad_config)}/config.json: not valid JSON")
