"""The shipped label sets: right size, clean names, and the index order the checkpoints use."""

from importlib import resources

import pytest

from vidcls.errors import UsageError
from vidcls.zoo.catalog import zoo_entries
from vidcls.zoo.labels import label_set, label_sets, parse_labels

COUNTS = {"kinetics-400": 400, "kinetics-600": 600, "something-something-v2": 174}

# Indices read in the sources named in each file's header (see the report for where each came from).
KNOWN = {
    "kinetics-400": {
        # the first names of the transformers checkpoints' id2label, as tests/test_zoo.py records them
        0: "abseiling", 1: "air drumming", 2: "answering questions", 3: "applauding", 4: "applying cream",
        # positions in gluon-cv's Kinetics400Attr.classes (folder spellings mapped back)
        5: "archery", 161: "hurling (sport)", 196: "massaging person's head",
        208: "passing American football (in game)", 209: "passing American football (not in game)",
        308: "skiing (not slalom or crosscountry)", 399: "zumba",
    },
    "kinetics-600": {
        # fcakyon/label-files kinetics600-id2label.json (transformers' TimeSformer K600 labels)
        0: "abseiling", 1: "acting in play", 2: "adjusting glasses", 3: "air drumming",
        17: "backflip (human)", 55: "building lego",
        # the dataset's own inconsistent casing, kept: both sort next to each other
        308: "passing American football (in game)", 309: "passing american football (not in game)",
        599: "zumba",
    },
    "something-something-v2": {
        # labels.json ("name": "index") excerpts and huggingface's id2label (brackets removed)
        0: "Approaching something with your camera", 1: "Attaching something to something",
        2: "Bending something so that it deforms",
        13: "Failing to put something into something because something does not fit",
        21: "Laying something on the table on its side, not upright",
        25: "Lifting a surface with something on it but not enough for it to slide down",
        120: "Putting something, something and something on the table",
        173: "Wiping something off of something",
    },
}


def test_label_sets_lists_the_shipped_files():
    assert label_sets() == sorted(COUNTS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_count_and_clean_unique_names(name):
    names = label_set(name)
    assert len(names) == COUNTS[name]
    assert len(set(names)) == len(names)
    assert all(names) and all(n == n.strip() and "\t" not in n for n in names)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_known_indices(name):
    names = label_set(name)
    assert {i: names[i] for i in KNOWN[name]} == KNOWN[name]


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_order_is_the_sorted_order_the_sources_number_classes_in(name):
    """Kinetics tools number classes in sorted order; labels.json's indices happen to be sorted too.

    A swapped pair of lines keeps every count and name valid; this is what catches it.
    """
    names = label_set(name)
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_every_file_says_where_its_names_and_order_come_from(name):
    text = resources.files("vidcls").joinpath("assets", "labels", f"{name}.txt").read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("# ")
    assert any("commit" in line for line in header) and any("Checkpoints:" in line for line in header)


def test_zoo_entries_with_a_shipped_dataset_match_its_size():
    """A models.yaml entry naming a label set must have a head of that many classes."""
    checked = 0
    for name, entry in zoo_entries().items():
        if entry.get("dataset") in COUNTS:
            assert entry["arch"]["num_classes"] == COUNTS[entry["dataset"]], name
            checked += 1
    assert checked >= 3  # the transformers Kinetics-400 checkpoints at least


def test_returned_list_is_a_copy():
    label_set("kinetics-400").append("extra")
    assert len(label_set("kinetics-400")) == 400


def test_comment_lines_are_skipped_and_blank_lines_kept():
    assert parse_labels("# source\n# order\nfirst\n\nthird\n") == ["first", "", "third"]


def test_unknown_set_is_a_one_line_usage_error_listing_the_known_sets():
    with pytest.raises(UsageError) as raised:
        label_set("kinetics400")
    message = str(raised.value)
    assert "\n" not in message and "'kinetics400'" in message
    assert all(name in message for name in COUNTS)
