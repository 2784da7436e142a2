"""The attributes backend on synth_mm: agreement with the generator's attr_*, distinct captions, no label leak."""

from __future__ import annotations

import pytest
from captions_fixtures import prepared_synth

from medrepro.captions.agreement import distinct_per_class, synth_mm_agreement, text_vs_attribute_accuracy
from medrepro.captions.backends.attributes import AttributesBackend
from medrepro.captions.bank import dataset_items
from medrepro.captions.cache import CaptionCache
from medrepro.captions.vaps import caption_items

#: floors a little under the values measured on this sample (docs/captions.md, "VAPS captions")
FLOORS = {"lesions_present_vs_drusen": 0.85, "size": 0.75, "colour": 0.78, "count_within_1": 0.55, "shape": 0.6,
          "texture": 0.95, "illumination": 0.9, "pocket_present_vs_fluid": 0.9, "tilt_direction": 0.95,
          "pocket_width_corr": 0.5}


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    root = tmp_path_factory.mktemp("capt")
    folder, manifest, classes = prepared_synth(root, 240, 60)
    items = dataset_items("synth_mm", manifest, classes, folder, ("train", "val"))
    captions, stats = caption_items(items, AttributesBackend(), CaptionCache(root / "cache"), 32)
    labels = manifest[["sample_id", "label", *[c for c in manifest.columns if c.startswith("attr_")]]]
    return captions, labels, stats


def test_captions_agree_with_the_generators_attributes(captioned):
    captions, labels, _ = captioned
    agreement = synth_mm_agreement(captions, labels)
    low = {k: round(agreement[k], 3) for k, floor in FLOORS.items() if not agreement[k] >= floor}
    assert not low, f"below the floor: {low} (all: {agreement})"


def test_captions_say_more_than_the_label(captioned):
    captions, labels, _ = captioned
    distinct = distinct_per_class(captions, labels)
    assert (distinct["ratio"] >= 0.5).all(), distinct


def test_text_classifier_does_not_beat_what_the_images_show(captioned):
    captions, labels, _ = captioned
    acc = text_vs_attribute_accuracy(captions, labels).set_index("captions")
    # a caption can carry the finding its modality shows, not more: at most a small margin over the reference
    assert (acc["text_accuracy"] <= acc["attribute_reference"] + 0.08).all(), acc
    # and it does carry it: both captions together resolve most of the 4 classes, one alone about half
    assert acc.loc["both", "text_accuracy"] >= 0.8, acc
    assert (acc.loc[["fundus", "oct"], "text_accuracy"] <= 0.65).all(), acc


def test_captions_never_empty_and_carry_provenance(captioned):
    captions, _, stats = captioned
    assert captions[["t1", "t2", "t_mix"]].map(lambda t: isinstance(t, str) and len(t) > 20).all().all()
    assert set(captions["backend"]) == {"attributes"} and set(captions["prompt_version"]) == {"vaps-1"}
    assert captions["image_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert stats.requests == 2 * len(captions) + 2  # steps 1 and 3 per image, step 2 once per modality
