"""Hub models: hf:// refs through huggingface_hub's cache, offline; sha256 checks and the lock file."""

import json
import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hub_helpers import add_to_hub_cache, flip_byte, save_transformers, tiny_transformers_model
from vidcls.cli import app
from vidcls.errors import UsageError, VidclsError
from vidcls.models import build_model
from vidcls.zoo import cache, hub
from vidcls.zoo.modeldir import ModelCard, save_model_dir
from vidcls.zoo.resolve import load_model

pytest.importorskip("transformers")
runner = CliRunner()


@pytest.fixture
def vivit_repo(hub_cache, tmp_path):
    """A tiny ViViT in transformers format, cached as hf://someone/tiny-vivit (main)."""
    reference = tiny_transformers_model("vivit", labels=["run", "jump", "swim"])
    source = save_transformers(reference, tmp_path / "src", preprocessor={
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 127.5, "offset": True,
        "size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32}})
    snapshot = add_to_hub_cache(hub_cache, "someone/tiny-vivit", source)
    return reference, snapshot


def lock_entries():
    return json.loads(cache.lock_path().read_text())["files"]


def test_transformers_repo_loads_from_the_hub_cache_offline(vivit_repo):
    reference, snapshot = vivit_repo
    loaded = load_model("hf://someone/tiny-vivit")
    video = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        gap = (reference(pixel_values=video).logits - loaded.module(video.transpose(1, 2))).abs().max().item()
    assert gap <= 1e-4
    assert loaded.labels == ["run", "jump", "swim"]
    assert loaded.card.input.size == 32 and loaded.card.input.resize == 36
    assert loaded.card.input.mean == pytest.approx((0.75,) * 3)  # [-1, 1] rescale, then 0.5 / 0.5
    assert loaded.weights == str(snapshot / "model.safetensors")


def test_first_verified_load_records_the_digest_in_the_lock_file(vivit_repo):
    _, snapshot = vivit_repo
    load_model("hf://someone/tiny-vivit")
    blob = (snapshot / "model.safetensors").resolve()
    assert lock_entries() == {f"someone/tiny-vivit@{snapshot.name}/model.safetensors": blob.name}
    assert cache.lock_path().parent.name == "vidcls"


def test_vidcls_format_repo_at_a_revision(hub_cache, tmp_path):
    arch = {"num_classes": 2, "num_frames": 4, "img_size": 16, "patch_size": 8, "tubelet_size": 2,
            "embed_dim": 32, "depth": 1, "num_heads": 2}
    module = build_model("joint", arch)
    source = save_model_dir(tmp_path / "src", ModelCard("tiny", "joint", arch, labels=["x", "y"]), module)
    add_to_hub_cache(hub_cache, "someone/tiny-joint", source, revision="refs/pr/7")
    loaded = load_model("hf://someone/tiny-joint@refs/pr/7")
    video = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.module(video), module.eval()(video))
    with pytest.raises(VidclsError, match="not in the local Hub cache"):
        load_model("hf://someone/tiny-joint")  # main was never cached


def test_flipped_byte_is_refused_and_removed_from_the_cache(vivit_repo, some_file):
    _, snapshot = vivit_repo
    weights = snapshot / "model.safetensors"
    blob = weights.resolve()
    flip_byte(weights)
    result = runner.invoke(app, ["predict", some_file, "--model", "hf://someone/tiny-vivit"])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "fails its checksum" in message and "the Hub's LFS checksum" in message
    assert "vidcls download hf://someone/tiny-vivit" in message
    assert "Traceback" not in result.output
    assert not blob.exists() and not weights.is_symlink()  # not left looking valid
    assert not cache.lock_path().exists()  # nothing recorded for a bad file
    with pytest.raises(VidclsError, match="not in the local Hub cache"):
        load_model("hf://someone/tiny-vivit")


def test_corruption_after_first_use_is_caught_by_the_lock_file(vivit_repo, tmp_path):
    """A blob not named by its sha256 (no LFS checksum to compare) is still checked once recorded."""
    _, snapshot = vivit_repo
    weights = snapshot / "model.safetensors"
    renamed = weights.resolve().with_name("not-a-sha256-etag")
    weights.resolve().rename(renamed)
    weights.unlink()
    weights.symlink_to(renamed)
    load_model("hf://someone/tiny-vivit")
    flip_byte(weights)
    with pytest.raises(VidclsError, match=r"fails its checksum.*recorded in .*lock.json"):
        load_model("hf://someone/tiny-vivit")


def test_pinned_digest_wins(vivit_repo, tmp_path, monkeypatch):
    entry = {"family": "joint", "attention": "quadratic",
             "weights": {"repo": "someone/tiny-vivit", "filename": "model.safetensors", "sha256": "0" * 64}}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"models": {"pinned": entry}}))
    monkeypatch.setenv("VIDCLS_ZOO", str(tmp_path / "zoo.yaml"))
    with pytest.raises(VidclsError, match="pinned in models.yaml.*vidcls download pinned"):
        load_model("pinned")


def test_missing_weights_offline_say_how_to_fetch_them(hub_cache, some_file):
    result = runner.invoke(app, ["predict", some_file, "--model", "timesformer-k400"])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "files are not in the local Hub cache" in message and "HF_HUB_OFFLINE=1" in message
    assert "fetch the weights with `vidcls download timesformer-k400`" in message


def test_pickle_only_repo_points_to_convert(hub_cache, tmp_path):
    reference = tiny_transformers_model("videomae")
    source = save_transformers(reference, tmp_path / "src")
    (source / "model.safetensors").unlink()
    torch.save(reference.state_dict(), source / "pytorch_model.bin")
    add_to_hub_cache(hub_cache, "someone/pickled", source)
    # offline, the cache cannot say the safetensors file does not exist upstream: mark it
    # the way huggingface_hub does after a 404
    snapshot = next((hub_cache / "models--someone--pickled" / "snapshots").iterdir())
    no_exist = hub_cache / "models--someone--pickled" / ".no_exist" / snapshot.name / "model.safetensors"
    no_exist.parent.mkdir(parents=True)
    no_exist.touch()
    with pytest.raises(VidclsError, match="has no model.safetensors.*vidcls convert hf://someone/pickled"):
        load_model("hf://someone/pickled")


def test_download_command_verifies_and_prints_the_snapshot(vivit_repo):
    _, snapshot = vivit_repo
    result = runner.invoke(app, ["download", "hf://someone/tiny-vivit"])
    assert result.exit_code == 0, result.output
    assert str(snapshot) in result.output.replace("\n", "")
    assert "recorded in" in result.output
    assert runner.invoke(app, ["download", "hf://someone/tiny-vivit"]).exit_code == 0


def test_download_of_a_model_without_hub_weights_is_a_usage_error():
    result = runner.invoke(app, ["download", "joint-tiny"])
    assert result.exit_code == 2 and "no weights on the Hub" in result.output


def test_damaged_lock_file_is_an_error_not_a_fresh_start(vivit_repo):
    cache.lock_path().parent.mkdir(parents=True)
    cache.lock_path().write_text("{not json")
    with pytest.raises(VidclsError, match="lock file .* is unreadable"):
        load_model("hf://someone/tiny-vivit")


@pytest.mark.parametrize("ref", ["hf://noslash", "hf://a/b/c", "hf:///repo"])
def test_bad_hub_refs_are_usage_errors(ref):
    with pytest.raises(UsageError, match="hf://OWNER/REPO"):
        hub.parse_hf_ref(ref)


@pytest.fixture
def unreachable_hub(hub_cache, monkeypatch):
    """Online mode, with the Hub endpoint a 127.0.0.1 port where nothing listens (no traffic leaves the machine)."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.unreachable.cache_clear()
    yield hub_cache
    hub.unreachable.cache_clear()


def test_unreachable_hub_fails_within_seconds_naming_offline_mode(unreachable_hub):
    import time

    start = time.monotonic()
    result = runner.invoke(app, ["download", "timesformer-k400"])
    took = time.monotonic() - start
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and took < 5, (took, message)  # huggingface_hub alone retries for ~50 s
    assert "the network is unreachable" in message and "does not answer" in message
    assert "HF_HUB_OFFLINE=1" in message and str(unreachable_hub) in message


def test_unreachable_hub_still_serves_the_cache(vivit_repo, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    hub.unreachable.cache_clear()
    try:
        loaded = load_model("hf://someone/tiny-vivit")
    finally:
        hub.unreachable.cache_clear()
    assert loaded.labels == ["run", "jump", "swim"]


# ---------------------------------------------------------------- downloads bounded as they stream (issue 26, item 9)


@pytest.fixture
def hub_zoo(hub_cache, fake_hub, tmp_path, monkeypatch):
    """The tiny ViViT on a fake Hub on 127.0.0.1 as someone/tiny-vivit; zoo(**weights) names a user zoo
    entry pinned to it (weights: its repo and filename, plus `weights`)."""
    reference = tiny_transformers_model("vivit", labels=["run", "jump", "swim"])
    source = save_transformers(reference, tmp_path / "src", preprocessor={"crop_size": {"height": 32, "width": 32}})
    for path in source.iterdir():
        fake_hub.files[f"someone/tiny-vivit/{path.name}"] = path.read_bytes()

    def zoo(**weights) -> str:
        entry = {"family": "joint", "attention": "quadratic",
                 "weights": {"repo": "someone/tiny-vivit", "filename": "model.safetensors", **weights}}
        (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"models": {"remote": entry}}))
        monkeypatch.setenv("VIDCLS_ZOO", str(tmp_path / "zoo.yaml"))
        return "remote"

    return zoo


def blobs(hub_cache):
    return sorted(p.name for p in (hub_cache / "models--someone--tiny-vivit" / "blobs").iterdir())


def error_lines(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("filename, weights, problem", [
    ("config.json", {}, r"config\.json: the server announces 10,737,418,240 bytes, more than the 67,108,864 "
                        r"expected of this file"),  # a side file's bound
    ("model.safetensors", {}, r"model\.safetensors: the server announces 10,737,418,240 bytes, more than the "
                              r"[0-9,]+ expected of this file"),  # from the architecture
    ("model.safetensors", {"size": 5000}, r"model\.safetensors: the server announces 10,737,418,240 bytes, "
                                          r"more than the 5,000 expected of this file"),  # the entry's own size
])
def test_a_hub_file_announced_above_its_bound_is_refused_before_the_first_byte(filename, weights, problem, hub_zoo,
                                                                              fake_hub, hub_cache):
    """huggingface_hub checked the size only after the transfer, and its disk-space check only warns."""
    fake_hub.announced[f"someone/tiny-vivit/{filename}"] = 10 << 30
    result = runner.invoke(app, ["download", hub_zoo(**weights)])
    assert result.exit_code == 1, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and re.fullmatch(rf"error: hf://someone/tiny-vivit: {problem}", lines[0]), lines
    assert not [name for name in blobs(hub_cache) if name.endswith(".incomplete")]
    assert ("GET /someone/tiny-vivit/resolve/main/" + filename, None) in fake_hub.requests  # refused on its headers


def test_a_hub_file_that_streams_past_its_bound_is_stopped_and_partials_dropped(hub_zoo, fake_hub, hub_cache):
    """A Hub (or mirror, or proxy) that announces a small file and streams forever filled the disk."""
    from filelock import FileLock

    from http_helpers import HUB_CAP

    fake_hub.announced["someone/tiny-vivit/model.safetensors"] = 1000
    fake_hub.endless.add("someone/tiny-vivit/model.safetensors")
    folder = hub_cache / "models--someone--tiny-vivit"
    (folder / "blobs").mkdir(parents=True)
    stale = folder / "blobs" / f"{'a' * 64}.0badc0de.incomplete"  # a download killed on the way
    stale.write_bytes(b"\0" * 100)
    busy = folder / "blobs" / f"{'b' * 64}.incomplete"  # one another process is writing now
    busy.write_bytes(b"\0" * 100)
    (hub_cache / ".locks" / folder.name).mkdir(parents=True)
    with FileLock(str(hub_cache / ".locks" / folder.name / f"{'b' * 64}.lock")):
        result = runner.invoke(app, ["download", hub_zoo(size=5000)])
    assert result.exit_code == 1, result.output
    assert error_lines(result.output) == ["error: hf://someone/tiny-vivit: model.safetensors: the server sent more "
                                          "than the 5,000 bytes expected of this file; stopped there"]
    assert fake_hub.bytes_sent < HUB_CAP  # the client hung up: nothing near the cap reached the disk
    assert [name for name in blobs(hub_cache) if name.endswith(".incomplete")] == [busy.name]


def test_a_hub_download_cut_short_is_one_line(hub_zoo, fake_hub, hub_cache):
    """A Hub (or a proxy) that closes the connection before the size it announced: huggingface_hub
    retries, then raises its HTTP client's own error (neither OSError nor HfHubHTTPError)."""
    fake_hub.cut.add("someone/tiny-vivit/model.safetensors")
    result = runner.invoke(app, ["download", hub_zoo()])
    assert result.exit_code == 1, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and lines[0].startswith(
        "error: hf://someone/tiny-vivit: downloading model.safetensors failed ("), lines
    assert "internal error" not in result.output


def test_a_hub_file_within_its_bounds_downloads_and_verifies(hub_zoo, fake_hub, hub_cache):
    size = len(fake_hub.files["someone/tiny-vivit/model.safetensors"])
    result = runner.invoke(app, ["download", hub_zoo(size=size)])  # the bound is the file's exact size
    assert result.exit_code == 0, result.output
    assert "recorded in" in result.output
    assert runner.invoke(app, ["download", "hf://someone/tiny-vivit"]).exit_code == 0  # bound: MAX_BYTES
    assert not [name for name in blobs(hub_cache) if name.endswith(".incomplete")]
    assert load_model("remote").labels == ["run", "jump", "swim"]


def test_a_refusal_the_transfer_swallows_still_fails_the_download(hub_zoo, fake_hub, hub_cache, monkeypatch):
    """hf_xet logs an exception raised in a progress update and goes on writing: the file that came of
    it is then refused and removed once the call returns."""
    import huggingface_hub

    real = huggingface_hub.hf_hub_download

    def like_xet(repo, filename, *, tqdm_class, **kwargs):
        if filename != "model.safetensors":
            return real(repo, filename, tqdm_class=tqdm_class, **kwargs)
        bar = tqdm_class(total=1000, disable=True)  # the size the HEAD answer announced
        try:
            bar.update(20_000)
        except VidclsError:
            pass  # what hf_xet does with it
        snapshot = add_to_hub_cache(hub_cache, "someone/tiny-vivit", hub_cache.parent / "xet", commit="d" * 40)
        return str(snapshot / "model.safetensors")

    (hub_cache.parent / "xet").mkdir()
    (hub_cache.parent / "xet" / "model.safetensors").write_bytes(b"\0" * 20_000)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", like_xet)
    result = runner.invoke(app, ["download", hub_zoo(size=5000)])
    assert result.exit_code == 1, result.output
    assert error_lines(result.output) == ["error: hf://someone/tiny-vivit: model.safetensors: the server sent more "
                                          "than the 5,000 bytes expected of this file; stopped there"], result.output
    assert not (hub_cache / "models--someone--tiny-vivit" / "snapshots" / ("d" * 40) / "model.safetensors").exists()


def test_a_hub_entry_size_that_is_not_a_byte_count_is_a_usage_error(hub_zoo):
    result = runner.invoke(app, ["download", hub_zoo(size="5000")])
    assert result.exit_code == 2 and "weights size must be the file's size in bytes" in result.output, result.output


def test_convert_from_the_hub_is_bounded_too(hub_zoo, fake_hub, tmp_path):
    convert = ["convert", "hf://someone/tiny-vivit", "--family", "joint", "-o", str(tmp_path / "out")]
    fake_hub.announced["someone/tiny-vivit/config.json"] = 10 << 30
    result = runner.invoke(app, convert)
    assert result.exit_code == 1 and error_lines(result.output) == [
        "error: hf://someone/tiny-vivit: config.json: the server announces 10,737,418,240 bytes, more than the "
        "67,108,864 expected of this file"], result.output
    del fake_hub.announced["someone/tiny-vivit/config.json"]
    result = runner.invoke(app, convert)
    assert result.exit_code == 0 and (tmp_path / "out" / "model.safetensors").is_file(), result.output
