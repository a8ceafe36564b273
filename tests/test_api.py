"""The public API in the `vidcls` namespace: what a Python user calls, the same functions the CLI calls."""

import inspect

import pytest

import vidcls
from vidcls.errors import UsageError
from vidcls.video.synthetic import make_sample_clip

COMMAND_FUNCTIONS = ["predict", "predict_run", "list_models", "benchmark", "download", "train_model",
                     "convert_checkpoint", "load_model", "save_model_dir", "predict_video", "evaluate_run"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [make_sample_clip(root / "left.mp4", direction="left", seed=1),
            make_sample_clip(root / "up.mp4", direction="up", seed=2)]


@pytest.mark.parametrize("name", vidcls.__all__)
def test_every_public_name_is_importable_and_documented(name):
    value = getattr(vidcls, name)
    if name != "__version__":
        assert inspect.getdoc(value), f"vidcls.{name} has no docstring"
    assert name in dir(vidcls)


def test_command_functions_are_public_and_the_ones_the_library_defines():
    assert set(COMMAND_FUNCTIONS) <= set(vidcls.__all__)
    from vidcls import api, train
    from vidcls.inference import predict as inference
    from vidcls.zoo import convert
    from vidcls.zoo import fetch as zoo

    assert vidcls.train_model is train.train and vidcls.convert_checkpoint is convert.convert_checkpoint
    assert vidcls.download is zoo.download and vidcls.predict is inference.predict
    assert vidcls.benchmark is api.benchmark and vidcls.list_models is api.list_models
    with pytest.raises(AttributeError, match="no_such_name"):
        vidcls.no_such_name  # noqa: B018


def test_predict_takes_a_ref_or_a_loaded_model(clips):
    by_ref = vidcls.predict(clips, "demo-motion", top_k=2, device="cpu")
    by_model = vidcls.predict(clips, vidcls.load_model("demo-motion"), top_k=2)
    assert [p.top_k for p in by_ref] == [p.top_k for p in by_model]
    assert [p.top_k[0]["label"] for p in by_ref] == ["left", "up"]
    with pytest.raises(UsageError, match="without trained weights"):  # a random head is refused
        vidcls.predict(clips, "joint-tiny")


def test_processing_s_and_its_deprecated_alias(clips):
    prediction = vidcls.predict_video(clips[0], vidcls.load_model("demo-motion"))
    assert prediction.processing_s > 0
    with pytest.warns(DeprecationWarning, match="processing_s"):
        assert prediction.seconds == prediction.processing_s
    row = prediction.to_json()
    assert row["seconds"] == row["processing_s"] == prediction.processing_s


def test_predict_run_reports_progress_and_cost(clips, tmp_path):
    seen = []
    run = vidcls.predict_run([clips[0].parent], "demo-motion", device="cpu", crops=3,
                             on_start=seen.append, on_result=lambda p: seen.append(p.top_k[0]["label"]))
    assert seen == [2, "left", "up"]
    assert run.cost.views == 3 and run.cost.gmacs > 0
    rows = run.to_json()
    assert [r["video"] for r in rows] == [str(c) for c in clips]
    assert all(r["views"] == 3 and r["gmacs"] == run.cost.gmacs and "peak_memory_mib" in r for r in rows)
    (tmp_path / "notes.txt").write_text("no videos here\n")
    with pytest.raises(UsageError, match="no video files"):
        vidcls.predict_run([tmp_path], "demo-motion")


def test_benchmark_takes_refs():
    report = vidcls.benchmark("joint-tiny", frames=[2, 4], isolate=False, device="cpu", warmup=0, repeats=1,
                              threads=1)
    assert [(p.model, p.frames) for p in report.points] == [("joint-tiny", 2), ("joint-tiny", 4)]
    assert report.points[1].gmacs > report.points[0].gmacs > 0


@pytest.mark.parametrize("typo", [{"topk": 1}, {"worker": 0}, {"batchsize": 4}])
def test_misspelt_run_options_are_a_type_error(typo, tmp_path):
    """predict_run and evaluate_run take RunOptions' fields: a misspelt one is refused at the call,
    before any model is loaded, instead of being silently ignored."""
    with pytest.raises(TypeError, match=next(iter(typo))):
        vidcls.predict_run([str(tmp_path)], "demo-motion", **typo)
    with pytest.raises(TypeError, match=next(iter(typo))):
        vidcls.evaluate_run("demo-motion", tmp_path, **typo)


def test_run_options_refuse_bad_values_in_one_place():
    from vidcls.errors import UsageError
    from vidcls.inference.options import RunOptions

    for bad in ({"top_k": 0}, {"workers": -1}, {"crops": 2}, {"sampling": "random"}, {"precision": "fp64"},
                {"batch_size": 0}):
        with pytest.raises(UsageError):
            RunOptions(**bad)


def test_predict_cost_follows_the_clip_length(tmp_path):
    """The cost line counts a view at the run's --frames, not the card's (8/16/32 frames of demo-motion
    once all reported the 8-frame count)."""
    from vidcls.video.synthetic import make_sample_clip

    clip = make_sample_clip(tmp_path / "clip.mp4", "left", frames=32, height=32, width=32)
    gmacs = [vidcls.predict_run([clip], "demo-motion", frames=n, workers=0).cost.gmacs for n in (8, 16, 32)]
    assert gmacs[0] < gmacs[1] < gmacs[2]


def test_benchmark_settings_are_typed_and_checked():
    """benchmark's settings are RunSettings: a misspelt one is a TypeError, a bad value a UsageError,
    both before any model is built or measured."""
    from vidcls.errors import UsageError

    with pytest.raises(TypeError, match="repeat"):
        vidcls.benchmark("joint-tiny", frames=[8], repeat=3)
    for bad in ({"repeats": 0}, {"precision": "fp64"}, {"threads": 0}):
        with pytest.raises(UsageError):
            vidcls.benchmark("joint-tiny", frames=[8], **bad)


def test_a_prediction_reads_back_from_its_json(tmp_path):
    """Prediction.from_json (records of an --output file or a Ray run) gives back the Prediction."""
    from vidcls.inference.predict import Prediction
    from vidcls.video.synthetic import make_sample_clip

    clip = make_sample_clip(tmp_path / "clip.mp4", "left", frames=16, height=32, width=32)
    good, bad = vidcls.predict([clip, tmp_path / "missing.mp4"], "demo-motion", workers=0)
    for prediction in (good, bad):
        assert Prediction.from_json(prediction.to_json()) == prediction
