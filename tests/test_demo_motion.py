"""The shipped demo-motion model on clips drawn with settings it was not trained on.

Training (scripts/train_demo_motion.py) renders shapes in memory at 32-128 px and
8-48 frames; here every clip is encoded to H.264 and decoded back, at sizes, aspect ratios,
lengths and frame rates outside that range, with other noise levels.
"""

import random

import pytest

import vidcls
from vidcls.choices import DIRECTIONS
from vidcls.video.encode import write_video
from vidcls.video.synthetic import random_spec, render_clip

SETTINGS = [  # (height, width, frames, fps, noise)
    (144, 96, 60, 30, 0.0),  # portrait, taller than any training clip, long clip
    (40, 160, 20, 12, 25.0),  # very wide, noisy
    (72, 72, 10, 25, 10.0),
    (36, 48, 96, 50, 5.0),  # longer than any training clip
]


@pytest.fixture(scope="module")
def fresh_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh")
    rng = random.Random(1234)
    clips = []
    for i, (height, width, frames, fps, noise) in enumerate(SETTINGS):
        for direction in DIRECTIONS:
            for repeat in range(3):
                spec = random_spec(rng, direction=direction, height=height, width=width, frames=frames,
                                   noise=noise)
                path = root / f"{i}-{direction}-{repeat}.mp4"
                write_video(path, render_clip(spec), fps=fps)
                clips.append((path, direction))
    return clips


def test_demo_motion_predicts_direction_of_unseen_clips(fresh_clips):
    model = vidcls.load_model("demo-motion")
    results = vidcls.predict([path for path, _ in fresh_clips], model, top_k=1)
    correct = {d: 0 for d in DIRECTIONS}
    for result, (_, direction) in zip(results, fresh_clips, strict=True):
        assert result.error is None
        correct[direction] += result.top_k[0]["label"] == direction
    per_direction = {d: correct[d] / (len(fresh_clips) // 4) for d in DIRECTIONS}
    accuracy = sum(correct.values()) / len(fresh_clips)
    print(f"demo-motion accuracy on {len(fresh_clips)} unseen clips: {accuracy:.3f} {per_direction}")
    assert accuracy >= 0.9
    assert min(per_direction.values()) >= 0.75
