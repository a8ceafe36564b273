"""Zoo entries whose weights are a file at a URL, and user zoo files (VIDCLS_ZOO).

The authors' checkpoint layouts (built in the tests, as the converter tests build them) are
served by an HTTP server on 127.0.0.1 that honours Range requests and counts what it is
asked; a user zoo file points entries at it. No other address is ever contacted. Every
released checkpoint of the shipped zoo is also served in its own layout (last section).
"""

import copy
import hashlib
import json
import shutil
import socket
import time
from dataclasses import dataclass

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from authors_layouts import (
    compact_authors_state,
    gluonmm_saved,
    slowfast_saved,
    vidtr_authors_state,
    xvit_authors_forward,
    xvit_authors_state,
)
from vidcls import cli
from vidcls.cli import app
from vidcls.errors import UsageError, VidclsError
from vidcls.models import build_model
from vidcls.video.synthetic import make_sample_clip
from vidcls.zoo import cache, hub, web
from vidcls.zoo.catalog import url_weights, zoo_card, zoo_entries, zoo_origin
from vidcls.zoo.convert import convert_checkpoint, fit_to_arch, to_vidcls
from vidcls.zoo.fetch import pin_hint
from vidcls.zoo.labels import label_set
from vidcls.zoo.resolve import load_model

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
    digest = hashlib.sha256(data).hexdigest()
    assert f"{url} sha256 {digest} recorded in" in download.stderr
    assert f"set `sha256: {digest}` in the weights of '{name}' in {tmp_path / 'lab-zoo.yaml'}" in \
        " ".join(download.stderr.split())
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


def test_digest_printed_by_the_first_download_pinned_makes_later_downloads_verified(served_zoo, server, tmp_path,
                                                                                      monkeypatch):
    """The first person to download an unpinned file pins what `download` printed; a fresh machine is then
    checked against that pin (and says nothing more about pinning), and a changed file is refused."""
    name, url, data = served_zoo("vidtr")
    first = runner.invoke(app, ["download", name])
    hint = " ".join(first.stderr.split())
    digest = hint.split("set `sha256: ")[1].split("`")[0]
    assert first.exit_code == 0 and digest == hashlib.sha256(data).hexdigest()
    zoo = yaml.safe_load((tmp_path / "lab-zoo.yaml").read_text())
    zoo["models"][name]["weights"]["sha256"] = digest
    (tmp_path / "lab-zoo.yaml").write_text(yaml.safe_dump(zoo))
    monkeypatch.setenv("VIDCLS_HOME", str(tmp_path / "another-machine"))
    again = runner.invoke(app, ["download", name])
    assert again.exit_code == 0 and "pin it" not in again.stderr and f"sha256 {digest}" in again.stderr
    assert len(server.served.requests) == 2
    shutil.rmtree(tmp_path / "another-machine")
    server.served.files[f"/{name}.pth"] = data[:-1] + bytes([data[-1] ^ 0xFF])
    refused = runner.invoke(app, ["download", name])
    assert refused.exit_code == 1 and f"the sha256 pinned in {tmp_path / 'lab-zoo.yaml'}" in \
        " ".join(refused.output.split())


def test_pin_hint_names_the_file_that_defines_the_entry():
    digest = "ab" * 32
    shipped = pin_hint("xvit-k600", digest)
    assert f"set `sha256: {digest}` in the weights of 'xvit-k600' in vidcls's models.yaml" in shipped
    assert "VIDCLS_ZOO" in shipped
    assert pin_hint("timesformer-k400", digest) is None and pin_hint("xvit-tiny", digest) is None


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
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"0")  # a file, so the model is loaded (a missing one alone is refused before that)
    result = runner.invoke(app, ["predict", str(clip), "--model", name])
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and "fails its checksum" in message, message
    assert f"the sha256 pinned in {tmp_path / 'lab-zoo.yaml'}" in message and "the download was deleted" in message
    assert "Traceback" not in result.output
    assert not any(web.download_path(url).parent.iterdir())  # neither the file nor a partial of it
    assert not (cache.home() / "converted").exists() and not cache.lock_path().exists()
    server.served.files[f"/{name}.pth"] = good  # the server fixed: the same entry now loads
    assert load_model(name).labels == LABELS


def test_changed_file_behind_a_recorded_url_is_refused(served_zoo, server):
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
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"0")  # a file, so the model is loaded (a missing one alone is refused before that)
    start = time.monotonic()
    result = runner.invoke(app, ["predict", str(clip), "--model", "nowhere"])
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
    monkeypatch.setattr(cli.zoo, "out", Console(width=400))  # the table's console is made at import
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


# ---------------------------------------------------------------- every released checkpoint, its own layout


@dataclass(frozen=True)
class Released:
    """What the authors' config file (`source`) of one released checkpoint says, transcribed here so that
    the zoo entry is checked against it rather than against itself. Their ViT-B throughout: 768 wide, 12
    blocks of 12 heads, MLP 3072, 224 px frames cut in 16 px patches."""

    layout: str
    source: str
    frames: int  # DATA.NUM_FRAMES / MODEL.TEMP_LEN: the clip, and the rows of their time or position table
    stride: int | None  # DATA.SAMPLING_RATE / DATA.FRAME_RATE; None: one frame from each of `frames` segments
    classes: int
    views: tuple[int, int]  # test clips x crops
    segments: int = 0  # XVIT.NUM_SEGMENTS
    shift_div: int = 0  # XVIT.SHIFT_DIV
    pool_layers: tuple[int, ...] = ()  # MODEL.LAYER_POOL
    pool_dropped: tuple[int, ...] = ()  # MODEL.NUMBER_OF_KEYS: frames dropped at each (their `t - k`)

    def checkpoint(self, width: int, meta: bool = False, time_rows: int | None = None) -> dict:
        """The state dict their code saves for this config, `width` wide (768: theirs)."""
        rows = time_rows or self.frames
        if self.layout == "xvit":
            return xvit_authors_state(width, 12, rows, self.classes, head_mlp=width, meta=meta)
        build = vidtr_authors_state if self.layout == "vidtr" else compact_authors_state
        return build(width, 12, self.frames, patches=196, patch=16, classes=self.classes, mlp=4 * width, meta=meta)

    def saved(self, state: dict) -> dict:
        """The checkpoint file's content: SlowFast's wrapper for X-ViT, gluonmm's for VidTr."""
        return slowfast_saved(state) if self.layout == "xvit" else gluonmm_saved(state)


GLUONMM = "amazon-science/gluonmm scripts/action_recognition/config/"
RELEASED = {
    "xvit-k600": Released("xvit", "1adrianb/video-transformers configs/Kinetics/xvit_B16_16x16_k600.yaml",
                          frames=16, stride=16, classes=600, views=(1, 3), segments=8, shift_div=8),
    "xvit-ssv2": Released("xvit", "1adrianb/video-transformers configs/SSv2/xvit_B16_16x16.yaml",
                          frames=16, stride=None, classes=174, views=(2, 3), segments=16, shift_div=4),
    "vidtr-s-k400": Released("vidtr", GLUONMM + "vidtr_s_8x8_patch16_224_k400.yaml", 8, 8, 400, (10, 3)),
    "vidtr-m-k400": Released("vidtr", GLUONMM + "vidtr_m_16x4_patch16_224_k400.yaml", 16, 4, 400, (10, 3)),
    "vidtr-l-k400": Released("vidtr", GLUONMM + "vidtr_l_32x2_patch16_224_k400.yaml", 32, 2, 400, (10, 3)),
    "c-vidtr-s-k400": Released("vidtr-compact", GLUONMM + "cvidtr_s_8x8_patch16_224_k400.yaml", 8, 8, 400, (10, 3),
                               pool_layers=(1, 3, 5), pool_dropped=(2, 2, 2)),
    "c-vidtr-m-k400": Released("vidtr-compact", GLUONMM + "cvidtr_m_16x4_patch16_224_k400.yaml", 16, 4, 400,
                               (10, 3), pool_layers=(1, 2, 4), pool_dropped=(8, 4, 2)),
}
NARROW = 48  # the one reduction of the served checkpoints: 4 channels per head instead of 64


def test_every_released_checkpoint_of_the_zoo_is_covered():
    assert {name for name in zoo_entries() if url_weights(name) is not None} == set(RELEASED)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_entry_is_its_authors_config(name):
    release, entry = RELEASED[name], zoo_entries()[name]
    arch, recipe = entry["arch"], entry["input"]
    assert entry["family"] == entry["weights"]["layout"] == release.layout
    assert {k: arch[k] for k in ("num_frames", "num_classes", "img_size", "patch_size", "embed_dim", "depth",
                                 "num_heads")} == {"num_frames": release.frames, "num_classes": release.classes,
                                                   "img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12,
                                                   "num_heads": 12}
    assert (recipe["frames"], recipe["clips"], recipe["crops"]) == (release.frames, *release.views)
    assert (recipe["sampling"], recipe["stride"]) == (("segment", 1) if release.stride is None
                                                      else ("dense", release.stride))
    assert len(label_set(entry["dataset"])) == release.classes
    if release.layout == "xvit":
        assert (arch["num_segments"], arch["shift_div"], arch["head_layer_norm_eps"]) == \
            (release.segments, release.shift_div, 1e-5)
    if release.layout == "vidtr-compact":
        kept = [release.frames - sum(release.pool_dropped[:i + 1]) for i in range(len(release.pool_dropped))]
        assert (arch["pool_layers"], arch["pool_tau"]) == (list(release.pool_layers), kept)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_layout_at_full_size_is_the_entry_key_for_key(name):
    """Every tensor their code saves for this config, at full size (meta device: shapes and dtypes only),
    has its place, shape and dtype in the entry's model, and the model has nothing else."""
    release, card = RELEASED[name], zoo_card(name)
    state, unused, layout = to_vidcls(release.checkpoint(768, meta=True))
    state = fit_to_arch(layout, state, card.arch)
    assert layout == release.layout and not unused
    with torch.device("meta"):
        model = build_model(card.family, card.arch)
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == expected


def narrowed(name: str, url: str) -> dict:
    """The shipped entry, its ViT width narrowed to NARROW, its weights at `url`."""
    entry = copy.deepcopy(zoo_entries()[name])
    entry["arch"] |= {"embed_dim": NARROW} | ({"head_hidden": NARROW} if entry["family"] == "xvit" else {})
    entry["weights"] |= {"url": url, "sha256": None}
    return entry


@pytest.mark.parametrize("name, time_rows", [(name, None) for name in sorted(RELEASED)] + [("xvit-k600", 8)],
                         ids=[*sorted(RELEASED), "xvit-k600-8-time-rows"])
def test_released_entry_converts_through_its_url_and_runs_at_its_recipe(name, time_rows, online, server, tmp_path,
                                                                         monkeypatch):
    """The entry's own layout (every number of it but the width, NARROW instead of 768: a full-width
    forward at 8-32 x 224 takes 4-8 s here, and the full-width layout is checked key for key above),
    saved as their code saves it, served on 127.0.0.1, loaded by the entry's name and run at its recipe.

    time_rows: xvit-k600 with an 8-row time table, which their code (temp_embed of DATA.NUM_FRAMES rows)
    would not save for its config but which the README once expected; it converts too, repeated over the
    clip as their forward would use it."""
    release = RELEASED[name]
    state = release.checkpoint(NARROW, time_rows=time_rows)
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}.pth"
    server.served.files[f"/{name}.pth"] = pickle_bytes(release.saved(state), tmp_path)
    monkeypatch.setenv("VIDCLS_ZOO", write_zoo(tmp_path / "released.yaml", {name: narrowed(name, url)}))
    loaded = load_model(name)
    recipe = loaded.card.input
    assert recipe == zoo_card(name).input and (recipe.frames, recipe.size) == (release.frames, 224)
    assert len(loaded.labels) == release.classes == loaded.module.num_classes
    classifier = state["consensus.mlp_head.4.weight" if release.layout == "xvit" else "fc.weight"]
    assert torch.equal(loaded.module.get_classifier().weight, classifier)
    torch.manual_seed(0)
    video = torch.randn(1, 3, recipe.frames, recipe.size, recipe.size)
    with torch.no_grad():
        logits = loaded.module(video)
        assert logits.shape == (1, release.classes) and torch.isfinite(logits).all()
        if release.layout == "xvit":
            expected = xvit_authors_forward(state, video, 12, release.segments, release.shift_div)
            assert (logits - expected).abs().max().item() <= 1e-4
    assert server.served.requests == [(f"/{name}.pth", None)]
