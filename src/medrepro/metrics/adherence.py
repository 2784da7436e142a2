"""Prompt adherence: do a generator's images show the attributes stated by the caption that conditioned them?

Each generated image is measured by the ``attributes`` captioner's own code (``medrepro.captions.measure`` and its
wording, ``captions.backends.attributes``), and the measured t_mix is compared, attribute by attribute, with the
conditioning t_mix (VAP-Diffusion Sec. 2.2-2.3: the caption is meant to steer shape, colour, size and texture).
Both texts go through the same parser, so words and rounding match. Attributes per modality kind:

- en-face (fundus): lesion count, lesion area (% of the image), lesion size / colour words, background
  brightness / texture / colour words;
- cross-section (OCT): band tilt (signed degrees), thickness (% of the height), pocket present, pocket width
  (% of the width), pocket side, brightness / texture words.

Agreement: a word attribute scores the fraction of images whose measured word equals the stated one (over the
images whose caption states it, e.g. lesion colour only where the caption names lesions; NaN where every caption
states the same word, e.g. every OCT "dim"); a number scores the
Pearson correlation of stated and measured values after subtracting each class's mean — the part of the attribute
the class label does not fix. A class-only generator, scored against the caption its row would have used, is the
reference; real images measured at the same size are the ceiling. Non-synth_mm wordings parse the same way (any
modality of ``captions.prompts``); a caption the parser does not recognise is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from medrepro.captions.backends.attributes import describe_cross_section, describe_enface
from medrepro.captions.measure import measure_cross_section, measure_enface
from medrepro.captions.prompts import Modality

#: attribute → "word" (fraction equal) or "number" (within-class correlation), per modality kind
ATTRIBUTES: dict[str, dict[str, str]] = {
    "enface": {"lesion_count": "number", "lesion_area": "number", "lesion_size": "word", "lesion_colour": "word",
               "brightness": "word", "texture": "word", "background_colour": "word"},
    "cross_section": {"tilt": "number", "thickness": "number", "pocket": "word", "pocket_width": "number",
                      "pocket_side": "word", "brightness": "word", "texture": "word"},
}
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_LIGHT = r"(?P<brightness>dim|normally lit|bright)"
_TEXTURE = r"(?P<texture>smooth|grainy|coarsely speckled)"
_PCT = r"about (?P<{}>[0-9.e+-]+) %"


def _enface_pattern(mod: Modality) -> re.Pattern[str]:
    found = (r"(?:no distinct \w+|(?P<count>\w+) (?P<size>small|medium|large) (?P<colour>.+?) "
             r"(?:round|oval|elongated)(?: irregular)? \S+, together " + _PCT.format("area")
             + r" of the image, mostly .+?)")
    return re.compile(rf"^{found} on a {_LIGHT}, {_TEXTURE} (?P<bg>.+?) {re.escape(mod.background)} background",
                      re.IGNORECASE)


_CROSS = re.compile(
    rf"^{_LIGHT}, {_TEXTURE} cross-section with layered bright and dark bands, (?:level|(?:gently )?sloping "
    r"(?P<dir>up|down) to the right \(about (?P<deg>[0-9.]+)°\)), " + _PCT.format("thick")
    + r" of the height thick; (?:no dark pocket beneath the bands|a dark dome-shaped pocket " + _PCT.format("width")
    + r" of the width wide lifts the upper bands (?P<side>.+?))\.?$", re.IGNORECASE)


def parse_caption(t_mix: str, mod: Modality) -> dict[str, Any]:
    """The attributes a t_mix of the ``attributes`` backend states (None: not stated, e.g. colour of no lesion)."""
    if mod.kind == "cross_section":
        m = _CROSS.match(t_mix.strip())
        if m is None:
            raise ValueError(f"not an {mod.name} t_mix of the attributes captioner: {t_mix!r}")
        deg = float(m["deg"]) * (1 if m["dir"] == "down" else -1) if m["deg"] else 0.0
        pocket = m["width"] is not None
        return {"tilt": deg, "thickness": float(m["thick"]), "pocket": pocket,
                "pocket_width": float(m["width"]) if pocket else 0.0, "pocket_side": m["side"] if pocket else None,
                "brightness": m["brightness"].lower(), "texture": m["texture"]}
    m = _enface_pattern(mod).match(t_mix.strip())
    if m is None:
        raise ValueError(f"not a {mod.name} t_mix of the attributes captioner: {t_mix!r}")
    count = m["count"]
    n = 0 if count is None else _NUMBERS.index(count.lower()) if count.lower() in _NUMBERS else int(count)
    return {"lesion_count": float(n), "lesion_area": float(m["area"]) if n else 0.0,
            "lesion_size": m["size"] if n else None, "lesion_colour": m["colour"] if n else None,
            "brightness": m["brightness"].lower(), "texture": m["texture"], "background_colour": m["bg"]}


def measured_caption(image: np.ndarray, mod: Modality) -> str:
    """The t_mix the ``attributes`` captioner writes for a uint8 (H, W, C) image."""
    if mod.kind == "cross_section":
        return describe_cross_section(measure_cross_section(image, mod.threshold, mod.min_px), mod)[1]
    return describe_enface(measure_enface(image, mod.polarity, mod.threshold, mod.min_px, mod.landmark, mod.window),
                           mod)[1]


def measure_images(images: np.ndarray, mod: Modality) -> list[dict[str, Any]]:
    """Parsed measured attributes of each uint8 (N, H, W, C) image."""
    return [parse_caption(measured_caption(np.asarray(img), mod), mod) for img in images]


class Adherence:
    """Per-attribute agreement of measured with stated attributes, for several image sets paired to one caption list.

    ``stated``: parsed conditioning captions (N rows); ``labels``: the class each row was generated for; each set in
    ``measured`` holds N parsed measurements in the same row order. ``value(i)`` is set i's agreement per attribute
    on the given row ``weights`` (bootstrap counts; all ones: the full set).
    """

    def __init__(self, stated: Sequence[dict[str, Any]], labels: np.ndarray, measured: Sequence[Sequence[dict]],
                 kind: str) -> None:
        self.kinds = ATTRIBUTES[kind]
        self.labels = np.asarray(labels, np.int64)
        n = len(stated)
        if len(self.labels) != n or any(len(s) != n for s in measured):
            raise ValueError(f"adherence: {n} captions, {len(self.labels)} labels, set sizes "
                             f"{[len(s) for s in measured]} must all be equal")
        self.stated, self.hits, self.values = {}, [], []
        for attr, how in self.kinds.items():
            col = [s[attr] for s in stated]
            if how == "word":  # a word every caption states alike measures nothing caption-specific: NaN
                varies = len({c for c in col if c is not None}) > 1
                self.stated[attr] = np.array([c is not None and varies for c in col])
            else:
                self.stated[attr] = np.array(col, np.float64)
        for rows in measured:
            hit, val = {}, {}
            for attr, how in self.kinds.items():
                if how == "word":
                    hit[attr] = np.array([r[attr] == s[attr] for r, s in zip(rows, stated, strict=True)])
                else:
                    val[attr] = np.array([r[attr] for r in rows], np.float64)
            self.hits.append(hit)
            self.values.append(val)

    @property
    def attributes(self) -> list[str]:
        return list(self.kinds)

    def value(self, i: int, weights: np.ndarray | None = None) -> dict[str, float]:
        w = np.ones(len(self.labels)) if weights is None else np.asarray(weights, np.float64)
        out = {}
        for attr, how in self.kinds.items():
            if how == "word":
                ws = w * self.stated[attr]
                out[attr] = float(ws @ self.hits[i][attr] / ws.sum()) if ws.sum() > 0 else float("nan")
            else:
                out[attr] = _within_class_corr(self.stated[attr], self.values[i][attr], self.labels, w)
        return out

    def draws(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(full-set values (G, A), replicates (R, G, A)) for bootstrap row ``counts`` (R, N) shared by every set
        (paired: the sets share their captions; ``metrics.resampled.resample_counts`` draws them)."""
        # Efron & Tibshirani 1993: rows resampled with replacement, the statistic recomputed on the counts
        g = len(self.hits)
        values = np.array([[self.value(i)[a] for a in self.kinds] for i in range(g)])
        reps = np.array([[[v[a] for a in self.kinds] for v in (self.value(i, c) for i in range(g))]
                         for c in counts]).reshape(len(counts), g, len(self.kinds))
        return values, reps


def _within_class_corr(x: np.ndarray, y: np.ndarray, labels: np.ndarray, w: np.ndarray) -> float:
    """Weighted Pearson correlation of stated x and measured y after subtracting each class's weighted mean; NaN if
    x has no spread (nothing stated to follow), 0 if only y has none (the images ignore it, e.g. no lesion drawn)."""
    k = labels.max() + 1 if len(labels) else 0
    tot = np.bincount(labels, w, minlength=k)
    safe = np.where(tot > 0, tot, 1.0)
    xc = x - (np.bincount(labels, w * x, minlength=k) / safe)[labels]
    yc = y - (np.bincount(labels, w * y, minlength=k) / safe)[labels]
    sxy, sxx, syy = (w * xc * yc).sum(), (w * xc * xc).sum(), (w * yc * yc).sum()
    if sxx <= 1e-12:
        return float("nan")
    if syy <= 1e-12:
        return 0.0
    return float(sxy / np.sqrt(sxx * syy))
