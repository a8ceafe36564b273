"""vidcls.train: data lists, augmentation, optimiser pieces, head replacement, and real training runs.

The runs train tiny models on a direction-of-motion dataset written once per session
(one shape moving left / right / up / down); every run uses 1 thread per process, since
the machine is shared and oversubscribed OpenMP threads make tiny models 10-20x slower.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hub_helpers import add_to_hub_cache, flip_byte, timm_vit_state
from vidcls import fileio
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.errors import UsageError, VidclsError
from vidcls.inference.predict import predict_video
from vidcls.models import build_model
from vidcls.train import TrainConfig, train
from vidcls.train.config import lr_factor
from vidcls.train.data import (
    EpochSampler,
    VideoClipDataset,
    class_list,
    collate,
    folder_samples,
    label_indices,
    list_samples,
    read_samples,
)
from vidcls.train.loop import Trainer, parameter_groups
from vidcls.train.weights import head_labels, load_with_head, starting_model
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip
from vidcls.video.transforms import random_crop, train_view
from vidcls.zoo import modeldir
from vidcls.zoo.cache import lock_path
from vidcls.zoo.convert.timm import IMAGENET_REF
from vidcls.zoo.modeldir import InputSpec
from vidcls.zoo.resolve import load_model

ROOT = Path(__file__).resolve().parents[1]
SPEC = InputSpec(frames=8, size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
# The motion clips: white shapes on black, 10 px, 2.5 px per frame over 8 frames of 32x32.
# Shape and start position vary; only the direction tells the classes apart.
MOTION = dict(frames=8, height=32, width=32, size=(10.0, 10.0), speed=2.5, background=(0, 0, 0),
              color=(255, 255, 255), distractors=(), noise=0.0)


def write_motion_set(root: Path, per_class: int, seed: int) -> Path:
    rng = random.Random(seed)
    for direction in DIRECTIONS:
        (root / direction).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_video(root / direction / f"{i:03d}.mp4", render_clip(random_spec(rng, direction, **MOTION)))
    return root


@pytest.fixture(scope="session")
def motion(tmp_path_factory) -> Path:
    """train/ (40 clips per class), val/ (10 per class), fresh/ (2 per class), each from its own seed."""
    root = tmp_path_factory.mktemp("motion")
    write_motion_set(root / "train", 40, seed=1)
    write_motion_set(root / "val", 10, seed=2)
    write_motion_set(root / "fresh", 2, seed=3)
    return root


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def subset_list(path: Path, source: Path, per_class: int) -> Path:
    """A `path label` list of the first clips of each class, with paths relative to the list."""
    lines = [f"{os.path.relpath(video, path.parent)} {video.parent.name}"
             for folder in sorted(source.iterdir()) for video in sorted(folder.iterdir())[:per_class]]
    path.write_text("\n".join(lines) + "\n")
    return path


def quick_config(motion: Path, output: Path, **overrides) -> TrainConfig:
    options = dict(model="joint-tiny", train=motion / "train", val=motion / "val", output=output, epochs=1,
                   batch_size=16, lr=2e-3, workers=0, flip=False, progress=False, warmup_epochs=0.5)
    return TrainConfig(**{**options, **overrides})


# ----------------------------------------------------------------------------- DATA parsing


def test_folder_samples_take_every_visible_file(tmp_path):
    for name in ("b/x.mp4", "b/sub/y.avi", "a/z.txt", "a/.hidden.mp4", ".cache/w.mp4", "b/.git/q"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    samples = folder_samples(tmp_path)
    assert [(s.path.relative_to(tmp_path).as_posix(), s.label) for s in samples] == \
        [("a/z.txt", "a"), ("b/sub/y.avi", "b"), ("b/x.mp4", "b")]


def test_text_list_labels_with_spaces_folders_and_relative_paths(tmp_path):
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "train.txt"
    listing.write_text("# comment\n\n../v/a.mp4 air drumming\n/abs/b.mp4\tabseiling\n"
                       "ApplyEyeMakeup/v_01.avi\n")
    samples = list_samples(listing)
    assert [(str(s.path), s.label) for s in samples] == [
        (str(tmp_path / "lists" / "../v/a.mp4"), "air drumming"), ("/abs/b.mp4", "abseiling"),
        (str(tmp_path / "lists" / "ApplyEyeMakeup/v_01.avi"), "ApplyEyeMakeup")]
    listing.write_text("noclass.mp4\n")
    with pytest.raises(VidclsError, match="train.txt:1: no label"):
        list_samples(listing)


def test_csv_list_with_header(tmp_path):
    listing = tmp_path / "val.csv"
    listing.write_text('Label,video,split\n"pushing something from left to right",clips/1.webm,val\n'
                       "abseiling,/data/2.mp4,val\n")
    assert [(str(s.path), s.label) for s in read_samples(listing)] == [
        (str(tmp_path / "clips/1.webm"), "pushing something from left to right"), ("/data/2.mp4", "abseiling")]
    listing.write_text("label,youtube_id\nabseiling,abc\n")
    with pytest.raises(VidclsError, match="path column"):
        read_samples(listing)


def test_class_list_and_unseen_val_label(tmp_path):
    assert class_list(["b", "a", "b"]) == ["a", "b"]
    assert class_list(["10", "2", "1"]) == ["1", "2", "10"]  # integer labels keep their value as index
    samples = list_samples(_write(tmp_path / "l.txt", "x.mp4 cat\ny.mp4 zebra\n"))
    assert label_indices(samples[:1], ["cat", "dog"], "--val") == [0]
    with pytest.raises(VidclsError, match="'zebra'"):
        label_indices(samples, ["cat", "dog"], "--val")
    with pytest.raises(VidclsError, match="no such data"):
        read_samples(tmp_path / "missing")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- augmentation, sampling


def test_random_crop_and_train_view_match_plain_slicing():
    clip = torch.randint(0, 256, (8, 36, 40, 3), dtype=torch.uint8)
    video = clip.permute(3, 0, 1, 2).float() / 255
    gen = torch.Generator().manual_seed(5)
    crop = random_crop(video, 32, gen)
    gen = torch.Generator().manual_seed(5)
    top, left = int(torch.randint(5, (1,), generator=gen)), int(torch.randint(9, (1,), generator=gen))
    assert torch.equal(crop, video[..., top:top + 32, left:left + 32])
    # scale (1, 1): no resize; the view is a crop, flipped or not, then normalised
    view = train_view(clip, 32, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(1), resize=36,
                      scale=(1.0, 1.0), flip=True)
    unflipped = train_view(clip, 32, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(1), resize=36,
                           scale=(1.0, 1.0), flip=False)
    assert view.shape == (3, 8, 32, 32)
    assert torch.equal(view, unflipped) or torch.equal(view, unflipped.flip(-1))
    windows = [(video[..., y:y + 32, x:x + 32] - 0.5) / 0.25 for y in range(5) for x in range(9)]
    assert any(torch.allclose(unflipped, w, atol=1e-6) for w in windows)


def test_dataset_is_deterministic_per_seed_epoch_and_sample(motion):
    samples = read_samples(motion / "val")
    paths, labels = [s.path for s in samples], label_indices(samples, class_list(s.label for s in samples), "x")
    data = VideoClipDataset(paths, labels, SPEC, train=True, seed=3)
    first = data[5].video
    assert torch.equal(first, VideoClipDataset(paths, labels, SPEC, train=True, seed=3)[5].video)
    data.set_epoch(1)
    assert not torch.equal(first, data[5].video)
    views = VideoClipDataset(paths, labels, SPEC, train=False)[5].video
    assert views.shape == (1, 3, 8, 32, 32)


def test_shuffled_frames_are_a_permutation(motion):
    path = next((motion / "val" / "left").iterdir())
    natural = VideoClipDataset([path], [0], SPEC, train=False)[0].video[0]
    shuffled = VideoClipDataset([path], [0], SPEC, train=False, shuffle_frames=True)[0].video[0]
    assert not torch.equal(natural, shuffled)
    remaining = list(range(8))
    for t in range(8):  # every shuffled frame is one of the natural frames, each used once
        match = next(i for i in remaining if torch.equal(shuffled[:, t], natural[:, i]))
        remaining.remove(match)


def test_bad_file_becomes_a_failed_item(tmp_path):
    bad = _write(tmp_path / "notes.mp4", "not a video")
    item = VideoClipDataset([bad], [0], SPEC, train=True)[0]
    assert item.video is None and "not a video" in item.error
    batch = collate([item])
    assert batch.videos is None and batch.failures == [(str(bad), item.error)]


def test_epoch_sampler_resumes_part_way_and_shards_disjointly():
    sampler = EpochSampler(10, rank=0, world_size=1, seed=4)
    sampler.set_position(2)
    order = list(sampler)
    assert sorted(order) == list(range(10))
    sampler.set_position(3)
    assert list(sampler) != order
    sampler.set_position(2, skip=6)
    assert list(sampler) == order[6:]
    shards = [EpochSampler(10, rank, 2, seed=4) for rank in (0, 1)]
    for shard in shards:
        shard.set_position(2)
    assert sorted(list(shards[0]) + list(shards[1])) == list(range(10))


# ----------------------------------------------------------------------------- optimiser pieces


@pytest.mark.parametrize("warmup,total,expected", [
    # 4 warm-up steps: the first step already moves (1/4), the 4th reaches the peak; then a cosine
    # over the 8 remaining steps: cos^2 values 0.8536 (a quarter), 0.5 (half way), 0.1464, 0 at the end
    (4, 12, {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 6: 0.853553, 8: 0.5, 10: 0.146447, 12: 0.0, 13: 0.0}),
    (0, 10, {0: 1.0, 5: 0.5, 10: 0.0}),  # no warm-up: the decay starts at the peak
    (1, 6, {0: 1.0, 2: 0.904508, 4: 0.345492, 6: 0.0}),  # the extended run of test_resume_with_more_epochs...
])
def test_lr_factor_is_linear_warmup_then_cosine(warmup, total, expected):
    assert {step: lr_factor(step, warmup, total) for step in expected} == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["xvit-tiny", "ff-linear-tiny"])
def test_no_weight_decay_on_norms_biases_embeddings(name):
    module = load_model(name, allow_random=True).module
    groups = parameter_groups(module, 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    names = dict(module.named_parameters())
    # reference: by name, the way a reader would list them
    expected = {n for n, p in names.items()
                if n.endswith("weight") and p.ndim >= 2 and "norm" not in n}
    assert {n for n, p in names.items() if id(p) in decayed} == expected
    assert groups[1]["weight_decay"] == 0.0 and len(decayed) + len(groups[1]["params"]) == len(names)


@pytest.mark.parametrize(("name", "classifier"), [("joint-tiny", "head"), ("xvit-tiny", "head.fc2")])
def test_new_head_replaces_only_the_classifier(name, classifier):
    """The model is built at the weights' class count, loaded strictly, then given a new classifier
    (X-ViT's is the last layer of its temporal attention head)."""
    card = load_model(name, allow_random=True).card
    source = build_model(card.family, {**card.arch, "num_classes": 7}).state_dict()
    target = build_model(card.family, {**card.arch, "num_classes": 7})
    replaced = load_with_head(target, source, "src", 4)
    assert replaced == [f"{classifier}.bias", f"{classifier}.weight"]
    assert target(torch.randn(1, 3, 8, 32, 32)).shape == (1, 4)
    for key, value in target.state_dict().items():
        if key in replaced:  # fresh: a weight unlike the old one's (a ViT-initialised bias is zero in both)
            assert value.shape[0] == 4 and (key.endswith("bias") or not torch.equal(value, source[key][:4])), key
        else:
            assert torch.equal(value, source[key]), key
    assert load_with_head(target, target.state_dict(), "src", None) == []  # kept: nothing replaced
    same_count = load_with_head(target, source := target.state_dict(), "src", 4)  # new names: new head
    assert same_count == replaced and not torch.equal(target.get_classifier().weight, source[replaced[1]])
    wider = build_model(card.family, {**card.arch, "embed_dim": 32, "num_heads": 2})
    with pytest.raises(VidclsError, match="do not fit"):
        load_with_head(build_model(card.family, card.arch), wider.state_dict(), "src", 4)


def test_head_labels_keep_a_model_s_names_in_its_order():
    model = ["left", "right", "up", "down"]
    assert head_labels(["down", "left", "right", "up"], model) == model  # sorted data, the model's order
    assert head_labels(["left", "up"], model) == model  # a subset keeps the whole head
    assert head_labels(["a", "b", "c", "d"], model) is None  # as many classes, other names: a new head
    assert head_labels(["left", "sideways"], model) is None and head_labels(["left"], None) is None


@pytest.mark.parametrize("init", [None, str(ROOT / "vidcls" / "assets" / "demo-motion")])
def test_fine_tuning_keeps_a_model_s_head_for_its_own_class_names(init):
    """Data folders named as the model's labels (sorted: down, left, right, up) keep its head and its
    label order, from --model's own weights or from --init REF; other names get a new head."""
    demo = load_model("demo-motion")
    for classes in (["down", "left", "right", "up"], ["left", "up"]):
        start = starting_model("demo-motion", init, classes, name="run")
        assert start.card.labels == demo.labels == ["left", "right", "up", "down"]
        assert torch.equal(start.module.get_classifier().weight, demo.module.get_classifier().weight)
        assert "4-class head kept" in start.origin
    renamed = starting_model("demo-motion", init, ["a", "b", "c", "d"], name="run")
    assert renamed.card.labels == ["a", "b", "c", "d"] and "replaced by a new 4-class head" in renamed.origin
    assert not torch.equal(renamed.module.get_classifier().weight, demo.module.get_classifier().weight)


def test_a_fine_tuned_model_names_its_classes_as_before(small_motion, tmp_path, one_thread):
    """Fine-tuning demo-motion (lr 1e-12: the weights stay) on folders named left/right/up/down ends with a
    model that predicts what demo-motion predicts, label for label (the head kept by class count alone
    relabelled every class as another: val top-1 0-36%)."""
    result = train(quick_config(small_motion, tmp_path / "run", model="demo-motion", lr=1e-12, batch_size=4))
    assert result.classes == ["left", "right", "up", "down"]
    first = (tmp_path / "run" / "train.log").read_text().splitlines()[0]
    assert "4-class head kept" in first, first
    tuned, demo = load_model(str(tmp_path / "run")), load_model("demo-motion")
    videos = sorted((small_motion / "val").rglob("*.mp4"))
    for video in videos:
        got, want = predict_video(video, tuned, top_k=4), predict_video(video, demo, top_k=4)
        assert [k["label"] for k in got.top_k] == [k["label"] for k in want.top_k], video
        assert [k["score"] for k in got.top_k] == pytest.approx([k["score"] for k in want.top_k], abs=1e-4)


def test_init_imagenet_reads_timm_weights_from_the_hub_cache(hub_cache, tmp_path):
    """--init imagenet goes through the real download path (offline cache, LFS checksum, lock file)."""
    image = timm_vit_state(width=64, depth=2, patch=8, side=4)  # joint-tiny's shape, not ViT-B
    (tmp_path / "timm").mkdir()
    save_file(image, tmp_path / "timm" / "model.safetensors")
    add_to_hub_cache(hub_cache, IMAGENET_REF.removeprefix("hf://"), tmp_path / "timm")
    start = starting_model("joint-tiny", "imagenet", ["a", "b", "c"], name="run", inflate="average")
    state = start.module.state_dict()
    assert torch.equal(state["blocks.1.attn.qkv.weight"], image["blocks.1.attn.qkv.weight"])
    assert torch.allclose(state["patch_embed.proj.weight"], image["patch_embed.proj.weight"][:, :, None] / 2)
    assert state["head.weight"].shape == (3, 64) and start.card.labels == ["a", "b", "c"]
    assert IMAGENET_REF in start.origin and "video-only tensors and the head keep" in start.origin
    assert any(key.startswith("timm/vit_base_patch16_224") for key in json.loads(lock_path().read_text())["files"])


def test_init_imagenet_refuses_a_corrupted_cached_file(hub_cache, tmp_path):
    (tmp_path / "timm").mkdir()
    save_file(timm_vit_state(width=64), tmp_path / "timm" / "model.safetensors")
    snapshot = add_to_hub_cache(hub_cache, IMAGENET_REF.removeprefix("hf://"), tmp_path / "timm")
    flip_byte((snapshot / "model.safetensors").resolve())
    with pytest.raises(VidclsError, match="fails its checksum"):
        starting_model("joint-tiny", "imagenet", ["a", "b"], name="run")
    assert not (snapshot / "model.safetensors").exists()


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(UsageError, match="--optimizer"):
        TrainConfig(model="joint-tiny", train=tmp_path, val=tmp_path, output=tmp_path, optimizer="lamb")
    with pytest.raises(UsageError, match="--max-bad-fraction"):
        TrainConfig(model="joint-tiny", train=tmp_path, val=tmp_path, output=tmp_path, max_bad_fraction=2)


# ----------------------------------------------------------------------------- training runs


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def cli_args(motion: Path, output: Path, *extra: str, train: Path | None = None, val: Path | None = None) -> list[str]:
    return ["train", "--model", "joint-tiny", "--train", str(train or motion / "train"),
            "--val", str(val or motion / "val"), "--output", str(output), "--workers", "0", "--no-flip",
            "--batch-size", "8", "--lr", "2e-3", "--warmup-epochs", "0.5", *extra]


def test_cli_refuses_bad_runs_before_training(motion, tmp_path):
    code, output = run_cli(*cli_args(motion, tmp_path / "r", "--init", "imagenet", "--model", "ff-linear-tiny"))
    assert code == 2 and "no ImageNet initialisation for family 'ff-linear'" in output
    code, output = run_cli(*cli_args(motion, tmp_path / "r", "--resume"))
    assert code == 2 and "nothing to resume" in output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "metrics.jsonl").write_text("")
    code, output = run_cli(*cli_args(motion, tmp_path / "used"))
    assert code == 2 and "already holds a run" in output and "Traceback" not in output
    out_alias = [arg.replace("--output", "--out") for arg in cli_args(motion, tmp_path / "used")]
    assert run_cli(*out_alias) == (code, output)  # --out is --output
    code, output = run_cli(*cli_args(motion, tmp_path / "r", "--optimizer", "lamb"))
    assert code == 2 and "--optimizer" in output
    unseen = _write(tmp_path / "val.txt", f"{motion / 'val/left/000.mp4'} sideways\n")
    code, output = run_cli(*cli_args(motion, tmp_path / "r", val=unseen))
    assert code == 1 and "'sideways'" in output


def test_undecodable_videos_are_skipped_counted_and_listed(motion, tmp_path, one_thread):
    """64 good clips plus three bad files (4.5%, just under the 5% default); decoded by 2 workers."""
    bad = tmp_path / "bad"
    bad.mkdir()
    good = next((motion / "train" / "up").iterdir())
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (bad / "notes.txt").write_text("this is not a video\n" * 20)
    listing = subset_list(tmp_path / "train.txt", motion / "train", 16)
    with listing.open("a") as f:
        f.writelines(f"{bad / name} up\n" for name in ("empty.mp4", "cut.mp4", "notes.txt"))
    val = subset_list(tmp_path / "val.txt", motion / "val", 2)
    result = train(quick_config(motion, tmp_path / "run", train=listing, val=val, workers=2))
    assert sorted(result.skipped) == sorted(str(bad / n) for n in ("cut.mp4", "empty.mp4", "notes.txt"))
    log = (tmp_path / "run" / "train.log").read_text()
    assert sorted(line.split("skipped ")[1].split(":")[0] for line in log.splitlines() if " skipped " in line) == \
        sorted(result.skipped)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["skipped"] == 3
    assert "3 undecodable video(s) skipped" in log


def test_too_many_bad_videos_stop_the_run_early(motion, tmp_path):
    listing = subset_list(tmp_path / "train.txt", motion / "train", 2)
    with listing.open("a") as f:
        for i in range(3):
            (tmp_path / f"{i}.mp4").write_bytes(b"")
            f.write(f"{i}.mp4 up\n")
    code, output = run_cli(*cli_args(motion, tmp_path / "run", train=listing))
    # one bad video of 11 already exceeds 5%: the run stops at the first batch that has one
    assert code == 1 and re.search(r"[123] of 11 train videos could not be decoded", output)
    assert "--max-bad-fraction 0.05" in output and "Traceback" not in output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # stopped inside the first epoch


def test_init_from_a_model_with_other_classes_replaces_the_head(motion, tmp_path, one_thread):
    first = train(quick_config(motion, tmp_path / "four", train=subset_list(tmp_path / "t4.txt", motion / "train", 4)))
    names = {"left": "west", "right": "east"}  # the same clips under names the first model does not have
    two = _write(tmp_path / "t2.txt", "".join(f"{p}\t{names[d]}\n" for d in names
                                               for p in sorted((motion / "train" / d).iterdir())[:4]))
    val2 = _write(tmp_path / "v2.txt", "".join(f"{p}\t{names[d]}\n" for d in names
                                                for p in sorted((motion / "val" / d).iterdir())[:2]))
    second = train(quick_config(motion, tmp_path / "two", train=two, val=val2, init=str(first.output)))
    assert second.classes == ["east", "west"]
    log = (tmp_path / "two" / "train.log").read_text()
    assert "4-class head replaced by a new 2-class head (head.bias, head.weight)" in log
    assert load_model(str(tmp_path / "two")).labels == ["east", "west"]


def test_default_workers_follow_the_cores_as_predict_s_do(small_motion, tmp_path, monkeypatch, one_thread):
    """Without --workers, training decodes in as many processes as predict would use (2 cores, a cheap
    model on CPU: 2), not a fixed 4 that torch warns about on a 2-core machine."""
    import vidcls.train.loop as loop
    from vidcls.inference.engine import default_workers

    used, real = [], loop.make_loader
    monkeypatch.setattr(loop, "make_loader", lambda *args: (used.append(args[3]), real(*args))[1])
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert TrainConfig(model="joint-tiny", train=tmp_path, val=tmp_path, output=tmp_path).workers is None
    train(quick_config(small_motion, tmp_path / "run", workers=None))
    assert used == [2, 2] == [default_workers(torch.device("cpu"), 0.01)] * 2


def test_a_run_that_does_not_learn_says_so_once(small_motion, tmp_path, one_thread):
    """Loss at ln(4) for three epochs (lr 1e-9: nothing moves) -> one warning with a hint, in the log too."""
    train(quick_config(small_motion, tmp_path / "run", lr=1e-9, epochs=4, warmup_epochs=0))
    warnings = [line for line in (tmp_path / "run" / "train.log").read_text().splitlines() if "not learning" in line]
    assert len(warnings) == 1 and "WARNING train loss has stayed at ln(4) = 1.386" in warnings[0]
    assert "--lr (now 1e-09" in warnings[0]


@pytest.mark.parametrize("losses,expected", [
    ([1.386, 1.39, 1.38], True), ([2.0, 1.386, 1.39, 1.38], True), ([1.386, 1.386], False),
    ([1.386, 1.2, 1.386], False), ([1.386, 1.386, 1.30], False)])
def test_at_chance_is_three_epochs_at_ln_classes(losses, expected):
    from vidcls.train.log import at_chance

    assert at_chance(losses, 4) is expected  # ln 4 = 1.3863, 2% of it is 0.028


def test_run_files_have_the_permissions_of_the_run_directory(finished_run):
    """model.safetensors and last/ were 0600 / 0700 beside 0644 files: everything now has the modes
    a plain open() and mkdir() give (those of train.log and of the run directory itself)."""
    file_mode = finished_run.joinpath("train.log").stat().st_mode & 0o777
    folder_mode = finished_run.stat().st_mode & 0o777
    for path in [finished_run / "last", *finished_run.rglob("*")]:
        if not path.name.startswith("."):
            assert path.stat().st_mode & 0o777 == (folder_mode if path.is_dir() else file_mode), path


def test_gradient_accumulation_matches_the_larger_batch(motion, tmp_path, one_thread):
    """Two batches of 4 accumulated = one batch of 8: same data order, same augmentation, same update."""
    listing = subset_list(tmp_path / "train.txt", motion / "train", 4)
    val = subset_list(tmp_path / "val.txt", motion / "val", 1)
    runs = [train(quick_config(motion, tmp_path / name, train=listing, val=val, epochs=2, batch_size=size,
                               accumulate=accumulate))
            for name, size, accumulate in (("big", 8, 1), ("accumulated", 4, 2))]
    big, accumulated = (load_file(tmp_path / name / "last" / "model.safetensors") for name in ("big", "accumulated"))
    assert all(torch.allclose(big[k], accumulated[k], atol=1e-4) for k in big)  # Adam amplifies rounding
    assert runs[0].history[-1]["train_loss"] == pytest.approx(runs[1].history[-1]["train_loss"], abs=1e-4)
    # the epoch's val metrics against a plain per-video reference: vidcls.predict with the final weights
    model = load_model(str(tmp_path / "big" / "last"))
    predictions = [predict_video(sample.path, model, top_k=4) for sample in read_samples(val)]
    truth = [Path(p.video).parent.name for p in predictions]
    top1 = sum(p.top_k[0]["label"] == t for p, t in zip(predictions, truth, strict=True)) / len(truth)
    loss = -sum(math.log(next(k["score"] for k in p.top_k if k["label"] == t))
                for p, t in zip(predictions, truth, strict=True))
    assert runs[0].history[-1]["val_top1"] == pytest.approx(top1)
    assert runs[0].history[-1]["val_loss"] == pytest.approx(loss / len(truth), abs=1e-4)


def start_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "vidcls", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"run ended early ({process.returncode}): {process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def checkpoint_epoch(output: Path) -> int:
    state = output / "last" / "trainer_state.pt"
    return torch.load(state, weights_only=True)["epoch"] if state.is_file() else -1


def test_killed_and_stopped_runs_resume_to_the_same_weights(motion, tmp_path, one_thread, monkeypatch):
    """SIGKILL after the first checkpoint, resume, SIGTERM part-way, resume: the weights of one straight run.

    The killed run is a `vidcls train` process; the others run in this process (quicker), where
    SIGTERM is sent right after the second optimizer step, so it always lands mid-epoch.
    """
    listing = subset_list(tmp_path / "train.txt", motion / "train", 8)
    val = subset_list(tmp_path / "val.txt", motion / "val", 2)
    config = lambda out, **extra: quick_config(motion, out, train=listing, val=val, epochs=3, seed=7,  # noqa: E731
                                               batch_size=8, **extra)
    killed = start_cli(cli_args(motion, tmp_path / "run", "--epochs", "3", "--seed", "7", train=listing, val=val))
    killer = threading.Thread(target=lambda: (wait_for(lambda: checkpoint_epoch(tmp_path / "run") >= 1, killed),
                                              killed.send_signal(signal.SIGKILL)))
    killer.start()
    straight = train(config(tmp_path / "straight"))
    killer.join()
    killed.wait()
    epoch = checkpoint_epoch(tmp_path / "run")
    assert 1 <= epoch < 3  # really killed before the end

    steps = []
    optimizer_step = Trainer.optimizer_step

    def step_then_terminate(self):
        optimizer_step(self)
        steps.append(self.scheduler.last_epoch)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's GracefulStop

    monkeypatch.setattr(Trainer, "optimizer_step", step_then_terminate)
    stopped = train(config(tmp_path / "run", resume=True))
    monkeypatch.undo()
    assert stopped.interrupted == "SIGTERM" and "stopped by SIGTERM" in (tmp_path / "run" / "train.log").read_text()
    state = torch.load(tmp_path / "run" / "last" / "trainer_state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (epoch, 2)  # stopped in the middle of the epoch
    train(config(tmp_path / "run", resume=True))

    for name in ("last/model.safetensors", "model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "run" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = [[{k: v for k, v in json.loads(line).items() if k not in ("seconds", "clips_per_s")}
             for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()] for out in ("straight", "run")]
    assert rows[0] == rows[1] and [r["epoch"] for r in rows[0]] == [1, 2, 3]
    assert straight.history[-1]["epoch"] == 3


def test_resume_with_more_epochs_extends_a_finished_run(motion, tmp_path, one_thread, monkeypatch):
    """--resume --epochs 3 after a 1-epoch run trains epochs 2 and 3 on a re-planned schedule; fewer
    epochs than done is refused. 16 clips in batches of 8: 2 steps an epoch, a warm-up of 1 step."""
    listing = subset_list(tmp_path / "train.txt", motion / "train", 4)
    val = subset_list(tmp_path / "val.txt", motion / "val", 1)
    run = tmp_path / "run"
    args = lambda epochs, *extra: cli_args(motion, run, "--epochs", str(epochs), *extra,  # noqa: E731
                                           train=listing, val=val)
    assert run_cli(*args(1))[0] == 0
    used = []  # the learning rate each optimizer step of the extended run uses
    optimizer_step = Trainer.optimizer_step
    monkeypatch.setattr(Trainer, "optimizer_step",
                        lambda self: (used.append(self.optimizer.param_groups[0]["lr"]), optimizer_step(self)))
    code, output = run_cli(*args(3, "--resume"))
    assert code == 0, output
    log = (run / "train.log").read_text()
    # lr 2e-3 x the cosine of a 6-step run at step 2 (0.904508), where the 2-step run had reached 0
    assert ("--epochs 1 -> 3: learning-rate schedule re-planned: warm-up unchanged (1 steps), cosine decay to "
            "zero at step 6 instead of 2; the lr at step 2 becomes 0.00181 (was 0)") in log
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # steps 2..5 of a cosine from step 1 to step 6: cos^2 of 0.2, 0.4, 0.6, 0.8 of a half turn
    assert used == pytest.approx([2e-3 * f for f in (0.904508, 0.654508, 0.345492, 0.095492)], abs=1e-9)
    code, output = run_cli(*args(2, "--resume"))
    assert code == 2 and output.strip() == (f"error: --epochs 2 is fewer than the 3 epochs the run in {run} has "
                                            f"already started; pass --epochs 3 or more")


GLOO_PROBE = """import os, sys
from vidcls.cli import app
from vidcls import devices as distributed


def gloo_threads():
    tasks = "/proc/self/task"
    return sorted(name for name in (open(f"{tasks}/{task}/comm").read().strip() for task in os.listdir(tasks))
                  if "gloo" in name)


def checked_teardown(info, finished):
    before = gloo_threads()
    teardown(info, finished)
    sys.stdout.write(f"rank {info.rank} gloo threads: {before} before teardown, {gloo_threads()} after\\n")


teardown, distributed.teardown = distributed.teardown, checked_teardown
sys.exit(app(sys.argv[1:], prog_name="vidcls", standalone_mode=False))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists the process's threads in /proc")
def test_torchrun_two_processes_on_cpu(motion, tmp_path):
    """Two DDP processes train one model; rank 0 alone writes. Each rank's teardown frees the gloo
    group, joining its threads: one still running when Python finalizes can abort the rank (SIGABRT,
    "terminate called without an active exception"), which made this run fail about 1 time in 5."""
    (tmp_path / "probe.py").write_text(GLOO_PROBE)
    listing = subset_list(tmp_path / "train.txt", motion / "train", 6)
    val = subset_list(tmp_path / "val.txt", motion / "val", 3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this checkout's vidcls
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(tmp_path / "probe.py"), *cli_args(motion, tmp_path / "ddp", "--epochs", "2", "--device", "cpu",
                                                    train=listing, val=val)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = sorted(re.findall(r"rank (\d) gloo threads: \[(.*)\] before teardown, \[(.*)\] after", done.stdout))
    assert [(rank, after) for rank, _, after in reports] == [("0", ""), ("1", "")], done.stdout[-3000:]
    assert all("pt_gloo_runloop" in before for _, before, _ in reports)  # the check sees gloo's threads
    model = load_model(str(tmp_path / "ddp"))
    assert model.labels == sorted(DIRECTIONS)
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert log.count("training joint model") == 1  # rank 0 alone writes
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def motion_run(motion: Path, output: Path, model: str, epochs: int, lr: float, shuffle: bool):
    """Two decoding workers: decoding is most of an epoch's time, and the result does not depend on them."""
    return train(quick_config(motion, output, model=model, epochs=epochs, lr=lr, batch_size=8,
                              label_smoothing=0.0, shuffle_frames=shuffle, workers=2))


def curve(result) -> list[float]:
    return [row["val_top1"] for row in result.history]


def check_motion_needs_time(motion: Path, tmp_path: Path, model: str, epochs: int, lr: float) -> None:
    """>= 90% val top-1 on direction of motion; the same run on shuffled frames stays near chance
    of the direction within an axis (50%), then `vidcls predict --model DIR` labels fresh clips."""
    natural = motion_run(motion, tmp_path / "natural", model, epochs, lr, shuffle=False)
    shuffled = motion_run(motion, tmp_path / "shuffled", model, epochs, lr, shuffle=True)
    print(f"{model} val top-1 per epoch: natural {curve(natural)}, shuffled frames {curve(shuffled)}")
    assert natural.best_top1 >= 0.9
    assert shuffled.best_top1 <= 0.75
    code, output = run_cli("predict", str(motion / "fresh"), "--model", str(tmp_path / "natural"), "--json")
    assert code == 0, output
    predictions = json.loads(output[output.index("["):])
    right = [p["top_k"][0]["label"] == Path(p["video"]).parent.name for p in predictions]
    assert len(right) == 8 and sum(right) >= 6


def test_motion_direction_needs_time_joint(motion, tmp_path, one_thread):
    check_motion_needs_time(motion, tmp_path, "joint-tiny", epochs=5, lr=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("model,epochs,lr", [("ff-linear-tiny", 30, 2e-3), ("xvit-tiny", 30, 1e-3)])
def test_motion_direction_needs_time(motion, tmp_path, one_thread, model, epochs, lr):
    """The issue's acceptance run for the linear and the space-time-mixing family (minutes each)."""
    check_motion_needs_time(motion, tmp_path, model, epochs=epochs, lr=lr)


def test_grad_checkpointing_flag_trains_to_the_same_weights(motion, tmp_path, one_thread, monkeypatch):
    """--grad-checkpointing turns on the model's checkpointing and changes memory only, not the result."""
    from vidcls.models.base import VideoClassifier

    asked = []
    original = VideoClassifier.set_grad_checkpointing
    monkeypatch.setattr(VideoClassifier, "set_grad_checkpointing",
                        lambda self, enable=True: (asked.append(enable), original(self, enable))[1])
    listing = subset_list(tmp_path / "train.txt", motion / "train", 4)
    val = subset_list(tmp_path / "val.txt", motion / "val", 1)
    for name in ("plain", "checkpointed"):
        code, output = run_cli(*cli_args(motion, tmp_path / name, "--epochs", "1", train=listing, val=val),
                               *(["--grad-checkpointing"] if name == "checkpointed" else []))
        assert code == 0, output
    assert asked == [False, True]
    plain, checkpointed = (load_file(tmp_path / name / "last" / "model.safetensors")
                           for name in ("plain", "checkpointed"))
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)


# ----------------------------------------------------------------------------- faults (issue 14)


@pytest.fixture(scope="module")
def small_motion(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small_motion")
    write_motion_set(root / "train", 2, seed=1)
    write_motion_set(root / "val", 1, seed=2)
    return root


def error_lines(output: str) -> list[str]:
    """The error lines of a command's output, and any line that is neither an error nor a log line
    (a traceback's or a multi-line message's continuation)."""
    return [line for line in output.splitlines()
            if line.startswith("error:") or (line.strip() and not line.startswith(("--epochs", "resumed")))]


def test_kill_9_during_the_first_checkpoint_leaves_a_run_a_fresh_run_accepts(small_motion, tmp_path):
    """The checkpoint writer stalls inside the temporary folder and the run is killed there (kill -9)."""
    output, marker = tmp_path / "run", tmp_path / "writing"
    stall = (f"import pathlib, sys, time, torch\n"
             f"def stall(obj, path):\n"
             f"    pathlib.Path(path).write_bytes(b'partial')\n"
             f"    pathlib.Path({str(marker)!r}).touch()\n"
             f"    time.sleep(600)\n"
             f"torch.save = stall\n"
             f"from vidcls.cli import main\n"
             f"sys.argv = ['vidcls', *{cli_args(small_motion, output)!r}]\n"
             f"main()\n")
    process = subprocess.Popen([sys.executable, "-c", stall], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for(marker.exists, process)
    process.kill()
    process.wait()
    assert not (output / "last").exists() and list(output.glob(".last.*")) and (output / "metrics.jsonl").is_file()

    code, text = run_cli(*cli_args(small_motion, output, "--resume"))
    assert code == 2 and "nothing to resume" in text and len(error_lines(text)) == 1
    code, text = run_cli(*cli_args(small_motion, output, "--epochs", "1"))
    assert code == 0, text
    assert "starting over" in text and (output / "last" / "trainer_state.pt").is_file()
    assert sorted(p.name for p in output.glob(".*")) == [".train.lock"]  # temporaries cleaned, lock released
    assert len((output / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_crash_between_the_checkpoint_renames_resumes_and_leftovers_are_cleaned(small_motion, tmp_path):
    output = tmp_path / "run"
    assert run_cli(*cli_args(small_motion, output, "--epochs", "1"))[0] == 0
    os.replace(output / "last", output / ".last.old")  # atomic_directory's state between its two renames
    (output / ".last.k2j3h4").mkdir()
    (output / ".last.k2j3h4" / "model.safetensors").write_bytes(b"partial")
    (output / ".model.123.abcdef12.tmp.safetensors").write_bytes(b"partial")
    code, text = run_cli(*cli_args(small_motion, output, "--epochs", "2", "--resume"))
    assert code == 0, text
    assert checkpoint_epoch(output) == 2 and sorted(p.name for p in output.glob(".*")) == [".train.lock"]


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_the_disk(monkeypatch, where: str) -> None:
    """Make the run's next write of `where` fail as it does on a full disk (measured on a 200 KiB tmpfs):
    part of the file written, no space left, then torch.save's RuntimeError without an errno, safetensors'
    own error, or, for the lines of metrics.jsonl and train.log, ENOSPC after a short write."""
    def full(path: Path, data: bytes, error: Exception) -> None:
        path.write_bytes(data)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 1 << 30, 0))
        raise error

    if where == "last/trainer_state.pt":
        monkeypatch.setattr(torch, "save", lambda obj, path: full(Path(path), b"PK partial", RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")))
    elif where == "model.safetensors":  # the best weights or last/'s, whichever the epoch writes first
        monkeypatch.setattr(modeldir, "save_file", lambda tensors, path, metadata=None: full(
            Path(path), b"partial", SafetensorError("Error while serializing: I/O error: No space left on device "
                                                    "(os error 28)")))
    else:
        class Full(io.FileIO):
            def write(self, data):
                if Path(self.name).name != where:
                    return super().write(data)
                if len(data) > 5:
                    return super().write(bytes(data[:5]))  # a short write, as the disk fills
                raise ENOSPC
        monkeypatch.setattr(fileio, "open", lambda path, mode, buffering: Full(path, mode.replace("b", "")),
                            raising=False)


Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize("where", ["last/trainer_state.pt", "model.safetensors", "metrics.jsonl", "train.log"])
def test_a_full_disk_ends_the_run_in_one_line_and_it_resumes(small_motion, finished_run, tmp_path, monkeypatch,
                                                              where):
    """Was `internal error: RuntimeError: [enforce fail at inline_container.cc:672] ...` (torch.save on a full
    disk) or safetensors' error, and a half row in metrics.jsonl that a --resume could not read. Now one line
    naming the run directory, the file and the full disk; last/ (epoch 1) intact, no temporaries left, and
    --resume ends with the weights of a run that never stopped."""
    output = tmp_path / "run"
    shutil.copytree(finished_run, output)
    fill_the_disk(monkeypatch, where)
    code, text = run_cli(*cli_args(small_motion, output, "--epochs", "2", "--resume"))
    monkeypatch.undo()
    assert code == 1 and "Traceback" not in text and "internal error" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: {re.escape(str(output))}: cannot write (last/)?{re.escape(where)}: the disk is full \(No space "
        r"left on device\); the run's last checkpoint \(last/\) is kept: free some space and continue with "
        r"--resume", errors[0]), text
    assert checkpoint_epoch(output) == 1 and sorted(p.name for p in output.glob(".*")) == [".train.lock"]
    assert [json.loads(line)["epoch"] for line in (output / "metrics.jsonl").read_text().splitlines()][0] == 1

    code, text = run_cli(*cli_args(small_motion, output, "--epochs", "2", "--resume"))
    assert code == 0, text
    assert run_cli(*cli_args(small_motion, tmp_path / "straight", "--epochs", "2"))[0] == 0
    for name in ("last/model.safetensors", "model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(output / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("moved", ["run directory", "project with its data"])
def test_a_moved_run_directory_resumes(small_motion, tmp_path, moved):
    """`mv runs/a runs/b` then `--resume --output runs/b` was refused (exit 2, `--output (was .../a, now
    .../b)`): the run directory's own place counted as an option that changes the result. Data that moved
    with it (a project folder moved as a whole: the same path relative to the run) is the same data."""
    project = tmp_path / "project"
    shutil.copytree(small_motion, project / "data")
    code, text = run_cli(*cli_args(project / "data", project / "runs" / "a", "--epochs", "1"))
    assert code == 0, text
    if moved == "run directory":
        os.replace(project / "runs" / "a", project / "runs" / "b")
        data, output = project / "data", project / "runs" / "b"
    else:
        os.replace(project, tmp_path / "moved")
        data, output = tmp_path / "moved" / "data", tmp_path / "moved" / "runs" / "a"
    code, text = run_cli(*cli_args(data, output, "--epochs", "2", "--resume"))
    assert code == 0 and "resumed from" in text, text
    assert checkpoint_epoch(output) == 2 and len((output / "metrics.jsonl").read_text().splitlines()) == 2
    assert torch.load(output / "last" / "trainer_state.pt", weights_only=True)["config"]["output"] == str(output)
    code, text = run_cli(*cli_args(data, output, "--epochs", "3", "--resume", "--seed", "1"))
    assert code == 2 and "--seed (was 0, now 1)" in text  # what changes the result is still refused


def test_a_second_run_on_the_same_output_exits_2_naming_the_first_pid(small_motion, tmp_path):
    from vidcls.train.checkpoint import run_lock

    output = tmp_path / "run"
    with run_lock(output):
        code, text = run_cli(*cli_args(small_motion, output))
    assert code == 2 and f"in use by another `vidcls train` (pid {os.getpid()})" in text
    assert not (output / "metrics.jsonl").exists() and not (output / "train.log").exists()


@pytest.fixture(scope="module")
def finished_run(small_motion, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("finished") / "run"
    assert run_cli(*cli_args(small_motion, output, "--epochs", "1"))[0] == 0
    return output


class Pwned:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("fault, expected", [
    (lambda data: data[: len(data) // 2], "unreadable checkpoint"),
    (lambda data: data[:10], "unreadable checkpoint"),
    (lambda data: b"", "unreadable checkpoint"),
    ("malicious", "holds objects other than tensors and plain data"),
    ("not a state", "not a trainer state vidcls wrote (no step, optimizer, scheduler ...)"),
    ("wrong types", "the checkpoint does not fit this run"),
    ({"epoch": "two"}, "epoch = 'two' is not a count"),                    # was: internal error (TypeError)
    ({"epoch": -3}, "epoch = -3 is not a count"),                          # was: accepted, epochs trained again
    ({"epoch": 7}, "epoch 7 (best 1) is not within the 1 epochs"),
    ({"rng": torch.zeros(5056, dtype=torch.uint8)}, "rng is not a random generator state"),  # was: accepted
    ({"rng": [1, 2, 3]}, "rng is not a random generator state"),
    ({"step": 10**9}, "the checkpoint does not fit this run (ValueError: step 1000000000 of an epoch"),
    ({"best_top1": float("nan")}, "best_top1 = nan is not an accuracy"),
    ({"train_sums": ["x", 1]}, "train_sums is not a pair of finite sums"),
    ({"seconds": -1.0}, "seconds = -1.0 is not a duration"),
])
def test_a_bad_trainer_state_is_refused_in_one_line(small_motion, finished_run, tmp_path, fault, expected):
    output = tmp_path / "run"
    shutil.copytree(finished_run, output)
    state_path = output / "last" / "trainer_state.pt"
    if fault == "malicious":
        torch.save({"epoch": Pwned()}, state_path)
    elif fault == "not a state":
        torch.save({"epoch": 1}, state_path)
    elif fault == "wrong types":
        state = torch.load(state_path, weights_only=True)
        config = {**state["config"], "output": str(output)}  # as if trained here, so only the fault differs
        torch.save({**state, "config": config, "optimizer": {"state": "x"}}, state_path)
    elif isinstance(fault, dict):  # one hostile value in a state vidcls wrote
        state = torch.load(state_path, weights_only=True)
        torch.save({**state, "config": {**state["config"], "output": str(output)}, **fault}, state_path)
    else:
        state_path.write_bytes(fault(state_path.read_bytes()))
    code, text = run_cli(*cli_args(small_motion, output, "--epochs", "2", "--resume"))
    assert code == 1 and len(error_lines(text)) == 1 and expected in text, text
    assert "Traceback" not in text and "internal error" not in text and not (ROOT / "pwned").exists()


def test_list_files_paths_with_spaces_tabs_and_real_csv(tmp_path):
    for name in ("my clip.mp4", "x.mp4", "a, b.mp4", "line\nbreak.mp4"):
        (tmp_path / name).write_bytes(b"")
    spaced = list_samples(_write(tmp_path / "s.txt", "my clip.mp4 left\nx.mp4 air drumming\nmy clip.mp4\tup right\n"))
    assert [(s.path.name, s.label) for s in spaced] == [("my clip.mp4", "left"), ("x.mp4", "air drumming"),
                                                         ("my clip.mp4", "up right")]
    table = list_samples(_write(tmp_path / "t.csv", 'path,label\n"a, b.mp4",left\n"line\nbreak.mp4",up\n'))
    assert [(s.path.name, s.label) for s in table] == [("a, b.mp4", "left"), ("line\nbreak.mp4", "up")]
    with pytest.raises(VidclsError, match=r"huge.csv: not a readable CSV \(field larger than field limit"):
        list_samples(_write(tmp_path / "huge.csv", "path,label\n" + "x" * 200_000 + ",a\n"))


def test_validation_sees_each_video_as_predict_does(tmp_path):
    """Validation's views are predict's, value for value, for a frame far larger than the model's input
    (decoded and fitted frame by frame; the whole-clip path held every frame at full size)."""
    from vidcls.inference.engine import Recipe, decode_views
    from vidcls.video.decode import load_clips
    from vidcls.video.inputs import VideoInput
    from vidcls.video.transforms import eval_views

    clip = tmp_path / "wide.mp4"
    write_video(clip, render_clip(random_spec(random.Random(3), "left", frames=12, height=240, width=320)), fps=10)
    spec = InputSpec(frames=8, size=32, clips=2, crops=3, mean=(0.45,) * 3, std=(0.225,) * 3)
    views = VideoClipDataset([clip], [0], spec, train=False)[0].video
    predicted = decode_views(0, VideoInput(str(clip), str(clip)), Recipe.of(spec)).views
    torch.testing.assert_close(views, predicted, rtol=0, atol=0)
    whole, _ = load_clips(clip, spec.frames, spec.stride, spec.clips, spec.sampling)
    torch.testing.assert_close(views, eval_views(whole, spec.size, spec.crops, spec.mean, spec.std), rtol=0, atol=1e-6)
