"""Zoo entries whose weights are a file at a URL, and user zoo files (VIDCLS_ZOO).

The authors' checkpoint layouts (built in the tests, as the converter tests build them) are
served by an HTTP server on 127.0.0.1 that honours Range requests and counts what it is
asked; a user zoo file points entries at it. No other address is ever contacted.
"""

import hashlib
import json
import socket
import time

import pytest
import torch
import yaml
from authors_layouts import compact_authors_state, slowfast_saved, vidtr_authors_state, xvit_authors_state
from rich.console import Console
from typer.testing import CliRunner

from vidcls import cache, cli, hub, web
from vidcls.cli import app
from vidcls.convert import convert_checkpoint
from vidcls.errors import UsageError, VidclsError
from vidcls.synthetic import make_sample_clip
from vidcls.zoo import load_model, zoo_entries, zoo_origin

runner = CliRunner()
LABELS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]


@pytest.fixture
def online(tmp_path, monkeypatch):
    """Network mode (HF_HUB_OFFLINE unset), a fresh vidcls cache, progress bars even without a terminal."""
    from huggingface_hub import constants

    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path / "vidcls"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub's switch: show the bar on a non-tty too
    hub.unreachable.cache_clear()
    yield tmp_path
    hub.unreachable.cache_clear()


def write_zoo(path, entries: dict) -> str:
    path.write_text(yaml.safe_dump({"models": entries}))
    return str(path)


# ---------------------------------------------------------------- the authors' layouts, tiny

XVIT_ARCH = {"num_classes": 6, "num_frames": 4, "img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2,
             "num_heads": 4, "shift_div": 4, "num_segments": 2, "head_hidden": 48, "head_dropout": 0.0,
             "head_layer_norm_eps": 1e-5}
VIDTR_ARCH = {"num_classes": 6, "num_frames": 4, "img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 2,
              "num_heads": 4, "mlp_ratio": 2.0, "mlp_activation": "relu", "layer_norm_eps": 1e-5,
              "attention": "shared", "embedding": "attention_input", "pos_every_layer": False}
COMPACT_ARCH = {"num_classes": 6, "num_frames": 8, "img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 7,
                "num_heads": 4, "mlp_ratio": 2.0, "mlp_activation": "relu", "layer_norm_eps": 1e-5,
                "pool_layers": [1, 3, 5], "pool_tau": [6, 4, 2]}


# name -> (family = layout, arch in the zoo entry, the authors' checkpoint, --arch for `vidcls convert`)
LAYOUTS = {
    "xvit": ("xvit", XVIT_ARCH, lambda: slowfast_saved(xvit_authors_state(64, 2, 4, 6, 48, img=32, patch=8)),
             {"num_heads": 4, "shift_div": 4, "num_segments": 2}),
    "vidtr": ("vidtr", VIDTR_ARCH, lambda: {"model": vidtr_authors_state(32, 2, 4, 4, 16, 6)}, {"num_heads": 4}),
    "vidtr-compact": ("vidtr-compact", COMPACT_ARCH,
                      lambda: {"state_dict": compact_authors_state(32, 7, 8, 4, 16, 6)},
                      {"num_heads": 4, "img_size": 32}),
}


def pickle_bytes(checkpoint: dict, tmp_path) -> bytes:
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    return (tmp_path / "ckpt.pth").read_bytes()


def url_entry(family: str, arch: dict, url: str, sha256: str | None = None, layout: str | None = None) -> dict:
    """A user zoo entry for a served checkpoint; its recipe is what `vidcls convert` writes (frames, size)."""
    return {"family": family, "attention": "quadratic", "arch": arch,
            "input": {"frames": arch["num_frames"], "size": arch["img_size"]},
            "weights": {"url": url, "layout": layout or family, "sha256": sha256}, "labels": LABELS}


@pytest.fixture
def served_zoo(online, server, tmp_path, monkeypatch):
    """serve(layout, data=None, sha256=None) -> (zoo name, url, checkpoint bytes): the authors' checkpoint
    served at /NAME.pth and a VIDCLS_ZOO file entry for it."""
    entries = {}

    def serve(layout: str, data: bytes | None = None, sha256: str | None = None, entry_layout: str | None = None):
        family, arch, checkpoint, _ = LAYOUTS[layout]
        data = data if data is not None else pickle_bytes(checkpoint(), tmp_path)
        name = f"lab-{layout}"
        url = f"http://127.0.0.1:{server.server_address[1]}/{name}.pth"
        server.served.files[f"/{name}.pth"] = data
        entries[name] = url_entry(family, arch, url, sha256, entry_layout)
        monkeypatch.setenv("VIDCLS_ZOO", write_zoo(tmp_path / "lab-zoo.yaml", entries))
        return name, url, data

    return serve


def by_hand(layout: str, data: bytes, tmp_path):
    """The checkpoint converted with `vidcls convert`'s function, into a model directory."""
    family, _, _, arch = LAYOUTS[layout]
    (tmp_path / "by-hand.pth").write_bytes(data)
    out = tmp_path / f"by-hand-{layout}"
    report = convert_checkpoint(tmp_path / "by-hand.pth", family, out, arch=arch, labels=LABELS)
    assert not report.missing and not report.unexpected
    return out


def predictions(clip, model: str) -> list:
    result = runner.invoke(app, ["predict", str(clip), "--model", model, "--json", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    return [item["top_k"] for item in json.loads(result.stdout)]


# ---------------------------------------------------------------- the URL source


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_url_entry_downloads_verifies_converts_and_predicts_like_the_converter(layout, served_zoo, server, tmp_path):
    name, url, data = served_zoo(layout)
    download = runner.invoke(app, ["download", name])
    assert download.exit_code == 0, download.output
    assert f"{name}.pth" in download.stderr and "100%" in download.stderr  # huggingface_hub's progress bar
    assert f"{url} sha256 {hashlib.sha256(data).hexdigest()[:16]}... recorded in" in download.stderr
    directory = cache.converted_dir(hashlib.sha256(data).hexdigest())
    assert download.stdout.strip() == str(directory)
    assert json.loads(cache.lock_path().read_text())["files"] == {url: hashlib.sha256(data).hexdigest()}
    assert not web.download_path(url).exists()  # only the conversion is kept
    assert server.served.requests == [(f"/{name}.pth", None)]

    hand = by_hand(layout, data, tmp_path)
    zoo_model, hand_model = load_model(name), load_model(str(hand))
    assert zoo_model.weights == str(directory / "model.safetensors") and zoo_model.labels == LABELS
    arch = LAYOUTS[layout][1]
    torch.manual_seed(0)
    video = torch.randn(2, 3, arch["num_frames"], arch["img_size"], arch["img_size"])
    with torch.no_grad():
        assert torch.equal(zoo_model.module(video), hand_model.module(video))

    clip = make_sample_clip(tmp_path / "clip.mp4", frames=16, height=48, width=64)
    first = predictions(clip, name)
    assert predictions(clip, name) == first == predictions(clip, str(hand))
    assert len(server.served.requests) == 1  # load and predicts read the converted cache only


def test_first_predict_downloads_and_offline_mode_then_works_from_the_cache(served_zoo, server, tmp_path):
    from huggingface_hub import constants

    name, _, _ = served_zoo("vidtr")
    clip = make_sample_clip(tmp_path / "clip.mp4", frames=16, height=48, width=64)
    first = predictions(clip, name)  # no `vidcls download` first
    constants.HF_HUB_OFFLINE = True  # restored by the fixture's monkeypatch
    assert predictions(clip, name) == first
    assert len(server.served.requests) == 1


def test_partial_download_resumes_where_it_stopped(served_zoo, server, tmp_path):
    name, url, data = served_zoo("vidtr")
    partial = web.download_path(url).with_name(web.download_path(url).name + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:1000])  # what an interrupted download left
    result = runner.invoke(app, ["download", name])
    assert result.exit_code == 0, result.output
    assert server.served.requests == [(f"/{name}.pth", "bytes=1000-")]
    assert server.served.bytes_sent == len(data) - 1000
    assert not partial.exists()
    assert (cache.converted_dir(hashlib.sha256(data).hexdigest()) / "model.safetensors").is_file()


def test_complete_partial_download_is_verified_not_fetched_again(served_zoo, server):
    name, url, data = served_zoo("vidtr")
    partial = web.download_path(url).with_name(web.download_path(url).name + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data)  # downloaded whole, stopped before its check
    assert runner.invoke(app, ["download", name]).exit_code == 0
    assert server.served.requests == [(f"/{name}.pth", f"bytes={len(data)}-")] and server.served.bytes_sent == 0


def test_wrong_byte_against_the_pinned_digest_is_refused_and_deleted(served_zoo, server, tmp_path):
    _, _, good = served_zoo("vidtr")
    bad = bytearray(good)
    bad[-100] ^= 0xFF
    name, url, _ = served_zoo("vidtr", data=bytes(bad), sha256=hashlib.sha256(good).hexdigest())
    result = runner.invoke(app, ["predict", "clip.mp4", "--model", name])
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and "fails its checksum" in message, message
    assert f"the sha256 pinned in {tmp_path / 'lab-zoo.yaml'}" in message and "the download was deleted" in message
    assert "Traceback" not in result.output
    assert not any(web.download_path(url).parent.iterdir())  # neither the file nor a partial of it
    assert not (cache.home() / "converted").exists() and not cache.lock_path().exists()
    server.served.files[f"/{name}.pth"] = good  # the server fixed: the same entry now loads
    assert load_model(name).labels == LABELS


def test_changed_file_behind_a_recorded_url_is_refused(served_zoo, server):
    import shutil

    name, url, data = served_zoo("vidtr")
    assert runner.invoke(app, ["download", name]).exit_code == 0
    shutil.rmtree(cache.home() / "converted")  # the conversion is gone: the file is fetched again
    changed = bytearray(data)
    changed[-100] ^= 0xFF
    server.served.files[f"/{name}.pth"] = bytes(changed)
    with pytest.raises(VidclsError, match=r"fails its checksum.*recorded in .*lock\.json"):
        load_model(name)
    assert not web.download_path(url).exists()


def test_file_in_another_layout_than_its_entry_says_is_refused(served_zoo):
    name, url, _ = served_zoo("xvit", entry_layout="xvit")
    _, _, vidtr_bytes = served_zoo("vidtr")
    served_zoo("xvit", data=vidtr_bytes)  # a VidTr checkpoint behind the X-ViT entry's URL
    with pytest.raises(VidclsError, match="keys are in the vidtr layout, not the xvit layout"):
        load_model(name)
    assert web.download_path(url).is_file()  # verified and kept: fixing the entry needs no new download


def test_unreachable_url_fails_within_seconds_naming_offline_mode_and_the_cache(online, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    entry = url_entry("vidtr", VIDTR_ARCH, f"http://127.0.0.1:{port}/vidtr.pth")
    monkeypatch.setenv("VIDCLS_ZOO", write_zoo(tmp_path / "zoo.yaml", {"nowhere": entry}))
    start = time.monotonic()
    result = runner.invoke(app, ["predict", "clip.mp4", "--model", "nowhere"])
    took = time.monotonic() - start
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and took < 5, (took, message)
    assert "the network is unreachable" in message and "does not answer" in message
    assert "HF_HUB_OFFLINE=1" in message and str(cache.home()) in message


def test_offline_mode_does_not_download(served_zoo, server):
    from huggingface_hub import constants

    name, _, _ = served_zoo("vidtr")
    constants.HF_HUB_OFFLINE = True
    with pytest.raises(VidclsError, match="HF_HUB_OFFLINE=1 forbids downloading it.*vidcls download lab-vidtr"):
        load_model(name)
    assert server.served.requests == []


def test_missing_file_on_the_server_is_one_line(served_zoo, server):
    name, _, _ = served_zoo("vidtr")
    server.served.files.clear()
    result = runner.invoke(app, ["download", name])
    assert result.exit_code == 1 and "download failed" in result.output and "404" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- user zoo files


def test_user_zoo_adds_and_overrides_entries_and_models_says_where_from(tmp_path, monkeypatch):
    mine = {"family": "joint", "attention": "quadratic", "description": "a lab's own",
            "arch": {"num_classes": 3, "num_frames": 4, "img_size": 16, "patch_size": 8, "embed_dim": 32,
                     "depth": 1, "num_heads": 2},
            "input": {"frames": 4, "size": 16}, "weights": None, "dataset": None}
    first = write_zoo(tmp_path / "a.yaml", {"lab-joint": mine, "joint-tiny": mine})
    second = write_zoo(tmp_path / "b.yaml", {"lab-joint": {**mine, "description": "replaced"}})
    monkeypatch.setenv("VIDCLS_ZOO", f"{first}:{second}")
    assert zoo_origin("lab-joint") == second and zoo_origin("joint-tiny") == first and zoo_origin("xvit") == "vidcls"
    assert zoo_entries()["lab-joint"]["description"] == "replaced"
    assert load_model("joint-tiny", allow_random=True).card.arch["num_classes"] == 3
    rows = {row["name"]: row for row in json.loads(runner.invoke(app, ["models", "--json"]).stdout)}
    assert rows["lab-joint"]["zoo"] == second and rows["joint-tiny"]["zoo"] == first
    assert rows["demo-motion"]["zoo"] == "vidcls"
    monkeypatch.setattr(cli, "out", Console(width=400))  # the table's console is made at import
    table = runner.invoke(app, ["models"])
    assert table.exit_code == 0 and second in table.output
    monkeypatch.delenv("VIDCLS_ZOO")
    assert "lab-joint" not in zoo_entries() and zoo_entries()["joint-tiny"]["arch"]["num_classes"] == 4


@pytest.mark.parametrize("entry, problem", [
    ({"family": "vidtr", "attention": "quadratic", "arch": VIDTR_ARCH, "input": {"frames": 4},
      "weights": {"url": "http://127.0.0.1:1/x.pth", "layout": "xvit"}, "labels": LABELS},
     "xvit layout converts to family xvit, not vidtr"),
    ({"family": "vidtr", "attention": "quadratic", "arch": VIDTR_ARCH, "input": {"frames": 4},
      "weights": {"url": "http://127.0.0.1:1/x.pth", "layout": "vidtr"}}, "needs `labels: [...]` or a shipped"),
    ({"family": "vidtr", "attention": "quadratic", "input": {"frames": 4},
      "weights": {"url": "http://127.0.0.1:1/x.pth", "layout": "vidtr"}, "labels": LABELS}, "needs the arch"),
    ({"family": "vidtr", "attention": "quadratic", "arch": VIDTR_ARCH, "input": {"frames": 4},
      "weights": {"url": "ftp://example/x.pth", "layout": "vidtr"}, "labels": LABELS}, "not an http(s) URL"),
    ({"family": "vidtr", "attention": "quadratic", "arch": VIDTR_ARCH, "input": {"frames": 4},
      "weights": {"url": "http://127.0.0.1:1/x.pth", "layout": "vidtr", "sha256": "abc"}, "labels": LABELS},
     "64 hex digits"),
    ({"family": "nope", "attention": "quadratic"}, "unknown model family 'nope'"),
    ({"family": "joint", "attention": "cubic"}, "attention must be one of"),
    ({"family": "joint", "attention": "quadratic", "arch": {"depthh": 2}}, "no option(s) depthh"),
    ({"family": "joint", "attention": "quadratic", "weights": {"repo": "a/b", "url": "http://x/y"}}, "one of package"),
])
def test_bad_user_zoo_entries_name_the_file_and_entry(entry, problem, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDCLS_ZOO", write_zoo(tmp_path / "bad.yaml", {"broken": entry}))
    with pytest.raises(UsageError) as raised:
        zoo_entries()
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'bad.yaml'}: model 'broken': ") and problem in message, message


def test_missing_or_malformed_user_zoo_file_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDCLS_ZOO", str(tmp_path / "absent.yaml"))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 2 and "VIDCLS_ZOO" in result.output and "absent.yaml" in result.output
    (tmp_path / "list.yaml").write_text("- just\n- a list\n")
    monkeypatch.setenv("VIDCLS_ZOO", str(tmp_path / "list.yaml"))
    with pytest.raises(UsageError, match="expected a mapping `models:`"):
        zoo_entries()
