"""Prompt adherence and the classification accuracy score (medrepro.metrics.adherence, metrics.generation)."""

from __future__ import annotations

import numpy as np
import pytest

from medrepro.captions.prompts import modality_of
from medrepro.data.synth_mm import render_fundus, render_oct, sample_attributes
from medrepro.metrics.adherence import Adherence, measure_images, measured_caption, parse_caption
from medrepro.metrics.generation import accuracy_draws
from medrepro.metrics.resampled import resample_counts


def _within_class_shuffle(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    perm = np.arange(len(labels))
    rng = np.random.default_rng(seed)
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        perm[rows] = rng.permutation(rows)
    return perm


@pytest.mark.parametrize("modality", ["fundus", "oct"])
def test_adherence_is_high_for_the_images_a_caption_describes_and_low_for_shuffled_captions(modality):
    """Captions measured on one synth_mm rendering; 'generated' images rendered anew (other noise, lesion positions)
    with the same attributes agree with them, the same images against captions shuffled within each class do not."""
    render = render_fundus if modality == "fundus" else render_oct
    mod = modality_of("synth_mm", modality)
    rng = np.random.default_rng(0)
    n = 60
    labels = rng.integers(0, 4, n)
    attrs = [sample_attributes(rng) for _ in range(n)]

    def draw(seed: int, i: int) -> np.ndarray:
        return render(np.random.default_rng([seed, i]), 64, bool(labels[i] & 1), bool(labels[i] & 2), attrs[i],
                      0.82, 0.05, 0.15)

    stated = [parse_caption(measured_caption(draw(1, i), mod), mod) for i in range(n)]
    measured = measure_images(np.stack([draw(2, i) for i in range(n)]), mod)
    shuffled = [measured[j] for j in _within_class_shuffle(labels)]
    adh = Adherence(stated, labels, [measured, shuffled], mod.kind)
    match, mismatch = adh.value(0), adh.value(1)
    key = "lesion_area" if modality == "fundus" else "tilt"  # an attribute the class label does not fix
    assert match[key] > 0.85 and mismatch[key] < 0.3
    assert np.nanmean(list(match.values())) > np.nanmean(list(mismatch.values())) + 0.25
    values, reps = adh.draws(resample_counts(n, 50, 0))
    assert values.shape == (2, len(adh.attributes)) and reps.shape == (50, 2, len(adh.attributes))
    k = adh.attributes.index(key)
    assert np.quantile(reps[:, 0, k] - reps[:, 1, k], 0.025) > 0  # the paired interval of the gap excludes 0


def test_parse_caption_reads_every_attribute_and_names_an_unknown_text():
    fundus, oct_ = modality_of("synth_mm", "fundus"), modality_of("synth_mm", "oct")
    got = parse_caption("Three small yellow oval irregular lesions, together about 1.3 % of the image, mostly left of "
                        "centre on a dim, grainy brown retinal background; the optic disc to the right.", fundus)
    assert got == {"lesion_count": 3.0, "lesion_area": 1.3, "lesion_size": "small", "lesion_colour": "yellow",
                   "brightness": "dim", "texture": "grainy", "background_colour": "brown"}
    got = parse_caption("Dim, coarsely speckled cross-section with layered bright and dark bands, gently sloping up to "
                        "the right (about 2.5°), about 27 % of the height thick; a dark dome-shaped pocket about 21 % "
                        "of the width wide lifts the upper bands left of centre.", oct_)
    assert got["tilt"] == -2.5 and got["thickness"] == 27 and got["pocket"] and got["pocket_width"] == 21
    assert got["pocket_side"] == "left of centre"
    with pytest.raises(ValueError, match="not a colour_fundus t_mix"):
        parse_caption("A fundus photograph with several drusen.", fundus)


def test_accuracy_draws_is_the_accuracy_of_the_argmax_and_its_replicates_resample_rows():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])  # right, right, wrong, wrong
    counts = np.array([[1, 1, 1, 1], [2, 2, 0, 0], [0, 0, 2, 2]])
    value, reps = accuracy_draws(probs, labels, counts)
    assert value == 0.5 and reps.tolist() == [0.5, 1.0, 0.0]


def test_a_generator_that_draws_no_lesion_scores_zero_not_nan_on_the_lesion_count():
    """Otherwise it would drop the attribute from its mean and look better than one that draws some."""
    fundus = modality_of("synth_mm", "fundus")
    stated = [parse_caption(t, fundus) for t in (
        "Two small yellow round lesions, together about 0.5 % of the image, mostly near the centre on a dim, grainy "
        "brown retinal background.",
        "Five small yellow round lesions, together about 1.5 % of the image, mostly near the centre on a dim, grainy "
        "brown retinal background.")] * 2
    none = dict(stated[0], lesion_count=0.0, lesion_area=0.0, lesion_size=None, lesion_colour=None)
    adh = Adherence(stated, np.zeros(4, np.int64), [[none] * 4], "enface")
    got = adh.value(0)
    assert got["lesion_count"] == 0.0 and got["lesion_area"] == 0.0 and got["lesion_size"] != got["lesion_size"]
