"""vidcls distill: the weight transfer, the attention-transfer stage, exact resume, the refusal that names it.

Tiny throughout: the teachers are random joint / divided models of width 32 (the transfer tests)
or the shipped demo-motion (3 layers, width 64, 8 x 32 px clips); the runs distill on 12 clips.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from test_train import checkpoint_epoch, fill_the_disk, start_cli, wait_for
from vidcls.choices import DIRECTIONS
from vidcls.cli import app
from vidcls.errors import UsageError, VidclsError
from vidcls.inference.predict import predict
from vidcls.models import build_model
from vidcls.train import DistillConfig, distill
from vidcls.train.distill import DISTILLATION, DistillTrainer, held_out_split
from vidcls.train.transfer import attention_parameters, student_arch, transfer
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip
from vidcls.zoo.resolve import load_model

MOTION = dict(frames=8, height=32, width=32, size=(10.0, 10.0), speed=2.5, background=(0, 0, 0),
              color=(255, 255, 255), distractors=(), noise=0.0)
TINY = {"num_classes": 3, "num_frames": 4, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2,
        "num_heads": 2}


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> Path:
    """12 unlabelled motion clips in one folder (no class sub-folders)."""
    root = tmp_path_factory.mktemp("distill-clips")
    rng = random.Random(5)
    for i in range(12):
        write_video(root / f"{i:02d}.mp4", render_clip(random_spec(rng, DIRECTIONS[i % 4], **MOTION)))
    return root


def quick(clips: Path, output: Path, **overrides) -> DistillConfig:
    options = dict(teacher="demo-motion", model="ff-linear", train=clips, val=clips, output=output,
                   attention_epochs=1, epochs=2, batch_size=3, lr=2e-3, workers=0, progress=False, holdout=0.25,
                   seed=7, warmup_epochs=0.5, report_frames=(8,))
    return DistillConfig(**{**options, **overrides})


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every tensor drawn at random (zero-initialised ones too, e.g. TimeSformer's temporal_fc)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.copy_(torch.randn_like(tensor) * 0.2)
    return model.eval()


# ----------------------------------------------------------------------------- weight transfer


def expected(how: str, teacher: dict[str, torch.Tensor], sources: str, shape: torch.Size) -> torch.Tensor:
    """What a student tensor should hold, from the teacher's state dict, by the rule `how` names."""
    names = sources.split("+")
    if how == "folded":  # temporal_fc after the temporal projection
        proj, fc = teacher[names[0]], teacher[names[1]]
        fc_weight = teacher[names[1].rsplit(".", 1)[0] + ".weight"]
        return fc_weight @ proj if names[0].endswith("weight") else fc_weight @ proj + fc
    if how == "qv-bias":
        q, v = teacher[names[0]], teacher[names[1]]
        return torch.cat([q, torch.zeros_like(q), v])
    value = teacher[names[0].split(" ")[0]]
    if how == "halved":
        return value * 0.5
    if how == "squeezed":
        return value[:, :, 0]
    if how == "table":
        return value.reshape(shape) if value.numel() == shape.numel() else value[:, 1:].reshape(shape)
    return value


@pytest.mark.parametrize("family, arch", [
    ("joint", {**TINY, "tubelet_size": 2}),  # ViViT-like: class token, learned table, tubelets
    ("joint", {**TINY, "qkv_bias": "qv", "pos_embed": "sinusoidal", "pool": "mean", "cls_token": False}),  # VideoMAE
    ("divided", TINY),  # TimeSformer
])
@pytest.mark.parametrize("variant", [{"fixation": True, "neighbourhood": True}, {"fixation": False}])
def test_transfer_copies_every_tensor_it_claims(family, arch, variant):
    teacher = randomised(build_model(family, arch))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_model("ff-linear", student_arch(family, arch, variant))
    done = transfer(teacher, student)
    source = {**before, **({"pos_table": teacher.pos_table} if hasattr(teacher, "pos_table") else {})}
    state = student.state_dict()
    assert sorted(d.student for d in done) == sorted(name for name, _ in student.named_parameters())
    for item in done:
        if item.how == "set":
            continue
        want = expected(item.how, source, item.teacher, state[item.student].shape)
        assert torch.equal(state[item.student], want.to(state[item.student].dtype)), item
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the teacher is only read
    for item in (d for d in done if d.how == "set"):
        value = state[item.student]
        if ".fixation." in item.student or item.student == "time_embed":
            assert not value.any(), item.student  # gates at sigmoid(0) = 0.5 everywhere; no second time table
        elif item.student.endswith("dwconv.weight"):
            assert value[:, 0, 1, 1].eq(1).all() and value.sum() == value.shape[0]  # the identity conv


def test_the_gates_start_where_they_change_nothing():
    """Transferred gates (0.5 on every channel) give what the same student without fixation gives."""
    arch = {**TINY, "tubelet_size": 2}
    teacher = randomised(build_model("joint", arch))
    gated = build_model("ff-linear", student_arch("joint", arch, {"fixation": True})).eval()
    plain = build_model("ff-linear", student_arch("joint", arch, {"fixation": False})).eval()
    transfer(teacher, gated), transfer(teacher, plain)
    clip = torch.randn(2, 3, 4, 16, 16)
    torch.testing.assert_close(gated(clip), plain(clip), atol=1e-4, rtol=1e-4)


def test_transfer_refuses_other_families():
    with pytest.raises(UsageError, match="distillation starts from a 'joint' or 'divided' model"):
        transfer(build_model("xvit", TINY), build_model("ff-linear", student_arch("joint", TINY, {})))


def test_held_out_split_is_seeded_and_disjoint():
    train, held = held_out_split(40, 0.1, seed=3)
    assert len(held) == 4 and not set(train) & set(held) and sorted(train + held) == list(range(40))
    assert held_out_split(40, 0.1, seed=3) == (train, held) != held_out_split(40, 0.1, seed=4)


# ----------------------------------------------------------------------------- the stages, resume


def test_attention_transfer_changes_only_the_attention_parameters(clips, tmp_path, monkeypatch):
    """The student as attention transfer leaves it (snapshot when distillation begins) against the
    student the weight transfer made: exactly the linear attentions' parameters moved."""
    seen = {}
    begin = DistillTrainer.begin_stage

    def snapshot(self, stage):
        if stage == DISTILLATION and "after" not in seen:
            seen["after"] = {k: v.clone() for k, v in self.net.state_dict().items()}
        begin(self, stage)

    monkeypatch.setattr(DistillTrainer, "begin_stage", snapshot)
    distill(quick(clips, tmp_path / "run", epochs=1))
    teacher = load_model("demo-motion")
    start = build_model("ff-linear", student_arch("joint", teacher.card.arch, {}))
    transfer(teacher.module, start)
    changed = {k for k, v in start.state_dict().items() if not torch.equal(v, seen["after"][k])}
    assert changed == set(attention_parameters(start)) and changed
    assert all(".temporal_attn." in k or ".spatial_attn." in k for k in changed)


def test_killed_and_stopped_distillation_resumes_to_the_same_student(clips, tmp_path, monkeypatch):
    """kill -9 after the first checkpoint (the end of attention transfer or later), resume, SIGTERM
    part-way, resume: the student, its best copy and the metrics of one straight run, with the
    teacher-logit cache on. The straight run's outputs are checked on the way."""
    args = ["distill", "--teacher", "demo-motion", "--data", str(clips), "--output", str(tmp_path / "run"),
            "--attention-epochs", "1", "--epochs", "2", "--batch-size", "3", "--lr", "2e-3", "--workers", "0",
            "--holdout", "0.25", "--seed", "7", "--warmup-epochs", "0.5", "--report-frames", "8", "--cache-teacher"]
    killed = start_cli(args)
    killer = threading.Thread(target=lambda: (wait_for(lambda: checkpoint_epoch(tmp_path / "run") >= 1, killed),
                                              killed.send_signal(signal.SIGKILL)))
    killer.start()
    straight = distill(quick(clips, tmp_path / "straight", cache_teacher=True))
    killer.join()
    killed.wait()
    assert 1 <= checkpoint_epoch(tmp_path / "run") < 3

    steps = []
    optimizer_step = DistillTrainer.optimizer_step

    def step_then_terminate(self):
        optimizer_step(self)
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(DistillTrainer, "optimizer_step", step_then_terminate)
    stopped = distill(quick(clips, tmp_path / "run", cache_teacher=True, resume=True))
    monkeypatch.undo()
    assert stopped.interrupted == "SIGTERM"
    assert torch.load(tmp_path / "run" / "last" / "trainer_state.pt", weights_only=True)["step"] == 2
    distill(quick(clips, tmp_path / "run", cache_teacher=True, resume=True))

    for name in ("last/model.safetensors", "model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "run" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    volatile = ("seconds", "clips_per_s", "peak_memory_mib")
    rows = [[{k: v for k, v in json.loads(line).items() if k not in volatile}
             for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()] for out in ("straight", "run")]
    assert rows[0] == rows[1] and [r["stage"] for r in rows[0]] == ["attention transfer"] + ["distillation"] * 2

    report = json.loads((tmp_path / "straight" / "distill.json").read_text())
    assert set(report["stages"]) == {"attention transfer", "distillation"} and report["held_out_videos"] == 3
    assert [row["frames"] for row in report["cost"]] == [8] and report["cost"][0]["student_gmacs"] > 0
    assert straight.best_epoch >= 1 and "agrees with the teacher" in (tmp_path / "straight" / "train.log").read_text()
    prediction = predict([str(next(clips.iterdir()))], str(tmp_path / "straight"), workers=0)[0]  # a model directory
    assert prediction.error is None and prediction.top_k[0]["label"] in DIRECTIONS


def test_a_moved_distillation_run_resumes(clips, tmp_path):
    """distill shares train's resume: a run directory moved (`mv runs/a runs/b`) was refused as a changed --output.
    Resuming a distill run past its --epochs (epochs count both stages: here 2, of --epochs 1) was refused as
    `epoch 2 (best 1) is not within the 1 epochs the run planned` (a run killed in its last epochs too)."""
    distill(quick(clips, tmp_path / "a", epochs=1))
    os.replace(tmp_path / "a", tmp_path / "b")
    distill(quick(clips, tmp_path / "b", epochs=1, resume=True))
    assert "resumed from" in (tmp_path / "b" / "train.log").read_text()


def test_a_full_disk_at_the_first_checkpoint_is_one_line_and_the_run_starts_again(clips, tmp_path, monkeypatch):
    """distill shares train's writers: torch.save on a full disk was an internal error. With no checkpoint yet
    the line says to start again (--resume would find nothing), and the next run starts over cleanly."""
    output = tmp_path / "run"
    fill_the_disk(monkeypatch, "last/trainer_state.pt")
    with pytest.raises(VidclsError) as failed:
        distill(quick(clips, output, epochs=1))
    monkeypatch.undo()
    assert str(failed.value) == (f"{output}: cannot write last/trainer_state.pt: the disk is full (No space left on "
                                 f"device); no checkpoint yet: free some space and start the run again")
    assert not (output / "last").exists() and sorted(p.name for p in output.glob(".*")) == [".train.lock"]
    distill(quick(clips, output, epochs=1))
    assert "starting over" in (output / "train.log").read_text() and checkpoint_epoch(output) == 2


# ----------------------------------------------------------------------------- the refusal


@pytest.mark.parametrize("ref", ["ff-linear", "ff-linear-ssv2", "linear"])
def test_the_linear_models_refusal_names_the_distill_command(ref):
    with pytest.raises(UsageError) as refused:
        load_model(ref)
    assert f"`vidcls distill --teacher timesformer-k400 --student {ref} --data VIDEOS --output DIR`" in \
        str(refused.value)


def test_predict_with_ff_linear_prints_the_command(clips):
    result = CliRunner().invoke(app, ["predict", str(next(clips.iterdir())), "--model", "ff-linear"])
    assert result.exit_code == 2 and "vidcls distill --teacher" in " ".join(result.output.split())


def test_distill_refuses_bad_pairs_and_options(clips, tmp_path):
    with pytest.raises(UsageError, match="the student must be of the 'ff-linear' family"):
        distill(quick(clips, tmp_path / "a", model="joint-tiny"))
    with pytest.raises(UsageError, match="--holdout must be in"):
        quick(clips, tmp_path / "b", holdout=1.0)
    result = CliRunner().invoke(app, ["distill", "--teacher", "ff-linear-tiny", "--data", str(clips),
                                      "--output", str(tmp_path / "c")])
    assert result.exit_code == 2 and "distillation starts from a 'joint' or 'divided' model" in result.output
    result = CliRunner().invoke(app, ["distill", "--teacher", "joint-tiny", "--data", str(clips),
                                      "--output", str(tmp_path / "d")])
    assert result.exit_code == 2 and "without trained weights" in result.output
