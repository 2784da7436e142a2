"""The embedded ``attributes`` backend: measures each image and writes the three VAPS answers in words.

Offline and deterministic; it never reads a label. Step 1 lists what was measured, step 2 states which attributes
the modality varies in (no image, as Sec. 2.2's Question² asks), step 3 is the concise t_mix. Word boundaries
(size, brightness, texture) were set on synth_mm renderings, whose ground-truth ``attr_*`` columns they are tested
against (tests/test_captions_attributes.py); on real images the numbers in the captions stay exact, the words are
approximate.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from medrepro.captions.backends.base import Answer, Request
from medrepro.captions.measure import Blob, Measurements, colour_name, measure_cross_section, measure_enface
from medrepro.captions.prompts import Modality
from medrepro.data.images import read_image
from medrepro.errors import DataError

MEASURE_VERSION = "measure-1"  # the "model" in cache keys: bump it when measurements or wording change
NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SIZE_WORDS = ((0.092, "small"), (0.128, "medium"), (math.inf, "large"))  # median lesion length / image width
BRIGHTNESS_WORDS = ((0.32, "dim"), (0.44, "normally lit"), (math.inf, "bright"))
TEXTURE_WORDS = ((0.0245, "smooth"), (0.06, "grainy"), (math.inf, "coarsely speckled"))  # median |residual|
SHAPE_WORDS = ((0.55, "round"), (0.8, "oval"), (math.inf, "elongated"))  # eccentricity


def _bin(value: float, table: tuple[tuple[float, str], ...]) -> str:
    return next(word for bound, word in table if value < bound)


def _count(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def _pct(fraction: float) -> str:
    """A proportion of the image in words with two significant digits ("about 1.3 %")."""
    pct = 100 * fraction
    return f"about {pct:.2g} %" if pct < 10 else f"about {pct:.0f} %"


def _side(x: float) -> str:
    return "left of centre" if x < -0.2 else "right of centre" if x > 0.2 else "near the centre"


def _lesion_words(blobs: list[Blob]) -> dict[str, str]:
    rgb = tuple(float(v) for v in np.median([b.rgb for b in blobs], axis=0))
    major = float(np.median([b.major for b in blobs]))
    ecc = float(np.median([b.eccentricity for b in blobs]))
    irregular = float(np.median([b.irregularity for b in blobs])) > 0.35
    return {"size": _bin(major, SIZE_WORDS), "colour": colour_name(rgb),
            "shape": _bin(ecc, SHAPE_WORDS) + (" irregular" if irregular else ""),
            "area": _pct(sum(b.area for b in blobs)), "where": _side(float(np.mean([b.x for b in blobs])))}


def _plural(n: int, word: str) -> str:
    if n == 1 or word.endswith("s"):
        return word
    return word[:-1] + "ies" if word.endswith("y") else word + "es" if word.endswith(("ss", "x", "sh")) else word + "s"


def describe_enface(m: Measurements, mod: Modality) -> tuple[str, str]:
    """(t1, t_mix) of an en-face image from its measurements."""
    bg = f"{_bin(m.brightness, BRIGHTNESS_WORDS)}, {_bin(m.grain, TEXTURE_WORDS)} {colour_name(m.background_rgb)}"
    lesion = mod.lesion.rstrip("s")
    n = len(m.lesions)
    if n:
        w = _lesion_words(m.lesions)
        found = (f"{_count(n)} {w['size']} {w['colour']} {w['shape']} {_plural(n, lesion)}, together {w['area']} of "
                 f"the image, mostly {w['where']}")
    else:
        found = f"no distinct {lesion}"
    extra = []
    if m.dark_spots:
        k = len(m.dark_spots)
        spot = colour_name(tuple(float(v) for v in np.median([b.rgb for b in m.dark_spots], axis=0)))
        extra.append(f"{_count(k)} {spot} {_plural(k, 'spot')} ({_pct(sum(b.area for b in m.dark_spots))})")
    if m.landmark is not None:
        d = m.landmark
        extra.append(f"the optic disc {'to the right' if d.x > 0 else 'to the left'}, {colour_name(d.rgb)}, "
                     f"{_pct(d.area)} of the image")
    t_mix = f"{found.capitalize()} on a {bg} {mod.background} background" + (f"; {'; '.join(extra)}." if extra
                                                                              else ".")
    t1 = (f"The image shows {mod.subject.removeprefix('a ').removeprefix('an ')} of {m.width} × {m.height} pixels. "
          f"The {mod.background} background is {bg} (mean brightness {m.brightness:.2f}, fine-scale variation "
          f"{m.grain:.3f}). I see {found}." + (f" Also: {'; '.join(extra)}." if extra else ""))
    if n:
        t1 += (" Lesion outlines: circularity " + ", ".join(f"{b.circularity:.2f}" for b in m.lesions[:8])
               + "; elongation " + ", ".join(f"{b.eccentricity:.2f}" for b in m.lesions[:8]) + ".")
    return t1, t_mix


def describe_cross_section(m: Measurements, mod: Modality) -> tuple[str, str]:
    """(t1, t_mix) of a layered cross-section (OCT) from its measurements."""
    b = m.bands or {}
    deg = math.degrees(math.atan(b.get("tilt", 0.0)))
    slope = ("level" if abs(deg) < 1.5 else f"{'gently ' if abs(deg) < 5 else ''}sloping "
             f"{'down' if deg > 0 else 'up'} to the right (about {abs(deg):.1f}°)")
    texture = _bin(m.grain, TEXTURE_WORDS)
    light = _bin(m.brightness, BRIGHTNESS_WORDS)
    layers = f"layered bright and dark bands, {slope}, about {100 * b.get('thickness', 0.0):.0f} % of the height thick"
    if b.get("pocket_width", 0.0) > 0:
        pocket = (f"a dark dome-shaped pocket {_pct(b['pocket_width'])} of the width wide lifts the upper bands "
                  f"{_side(b['pocket_x'])}")
    else:
        pocket = "no dark pocket beneath the bands"
    t_mix = f"{light.capitalize()}, {texture} cross-section with {layers}; {pocket}."
    t1 = (f"The image is a grey {mod.subject.removeprefix('an ').removeprefix('a ')} of {m.width} × {m.height} "
          f"pixels. It shows {layers}. I see {pocket}. The texture is {texture} (fine-scale variation {m.grain:.3f}) "
          f"and the image is {light} (mean brightness {m.brightness:.2f}).")
    return t1, t_mix


def knowledge(mod: Modality) -> str:
    """Step 2 without the image: the attributes this backend measures for the modality, in words."""
    if mod.kind == "cross_section":
        return (f"In {mod.subject.removeprefix('an ').removeprefix('a ')} the bands may be level or slope up or down, "
                "be thicker or thinner; dark dome-shaped pockets may lift the upper bands, with a width given as a "
                "proportion of the image; the texture ranges from smooth to coarsely speckled; the image may be dim, "
                "normally lit or bright.")
    return (f"In {mod.subject.removeprefix('an ').removeprefix('a ')}, each {mod.lesion.rstrip('s')} has a shape "
            "(round, oval or elongated, regular or irregular border), a colour, a size (small, medium or large, and "
            f"the proportion of the image all of them cover) and a count; the {mod.background} background has a "
            "colour, a brightness (dim, normally lit, bright) and a texture (smooth, grainy, coarsely speckled).")


class AttributesBackend:
    """Measured visual attributes in words (offline, deterministic)."""

    name = "attributes"
    model = MEASURE_VERSION

    def __init__(self) -> None:
        self._measure = lru_cache(maxsize=8192)(self._measure_uncached)

    @staticmethod
    def _measure_uncached(path: Path, mod: Modality) -> Measurements:
        if mod.kind == "cross_section":
            return measure_cross_section(read_image(path, 1), mod.threshold, mod.min_px)
        return measure_enface(read_image(path, 3), mod.polarity, mod.threshold, mod.min_px, mod.landmark, mod.window)

    def describe(self, path: Path, mod: Modality) -> tuple[str, str]:
        m = self._measure(path, mod)
        return describe_cross_section(m, mod) if mod.kind == "cross_section" else describe_enface(m, mod)

    def answer(self, requests: list[Request]) -> list[Answer]:
        out = []
        for req in requests:
            if req.step == 2:
                out.append(Answer(text=knowledge(req.modality)))
                continue
            if req.image is None:
                raise DataError(f"VAPS step {req.step} needs an image (request {req.key})")
            t1, t_mix = self.describe(req.image, req.modality)
            out.append(Answer(text=t1 if req.step == 1 else t_mix))
        return out

    def close(self) -> None:
        self._measure.cache_clear()
