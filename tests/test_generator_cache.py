"""The generators' own image cache: centre crops at diffusion.image_size, never squashed, never enlarged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medrepro.data.cache import open_cache
from medrepro.data.generator_cache import build_generator_cache, open_generator_cache
from medrepro.data.images import centre_crop_square, resize_square
from medrepro.errors import DataError

RED, BLUE = (200, 0, 0), (0, 0, 200)


def _banded(w: int, h: int) -> np.ndarray:
    """A red centred h × h square between two blue bands (landscape, w > h)."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:] = BLUE
    left = (w - h) // 2
    img[:, left:left + h] = RED
    return img


def _prepared(root, images: list[np.ndarray]):
    (root / "files").mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / "files" / f"{i}.png")
    pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(images))], "label": [0] * len(images),
                  "split": ["train"] * len(images),
                  "path_derm": [f"files/{i}.png" for i in range(len(images))]}).to_parquet(root / "manifest.parquet")
    (root / "classes.json").write_text(json.dumps({"name": "toy", "classes": ["a"], "modalities": ["derm"],
                                                   "channels": [3], "task": "multiclass", "image_size": 16}))
    return root


def test_generator_cache_is_a_centre_crop_not_a_squash(tmp_path):
    raw = _banded(240, 120)
    prepared = _prepared(tmp_path / "prepared", [raw, raw[:, :60]])  # 240 × 120 and 60 × 120 (portrait)
    record = build_generator_cache(prepared, tmp_path / "gen", 16)
    assert record["image_size"] == 16 and record["n_upsampled"] == {"derm": 0}
    frames, offsets = open_generator_cache(tmp_path / "gen", "derm", 16)
    assert frames.shape == (2, 16, 16, 3) and list(offsets) == [0, 1, 2]
    crop = frames[0].astype(int)
    assert np.abs(crop[:, 1:-1] - np.array(RED)).max() <= 2  # the centred square only: no blue band
    assert crop[..., 2].mean() < 3  # (the bicubic kernel's edge reaches a hair of blue)
    squashed = resize_square(raw, 16).astype(int)  # what the classifiers' cache holds: both bands squeezed in
    assert np.abs(squashed[:, 0] - np.array(BLUE)).max() <= 2 and squashed[..., 2].mean() > 80
    portrait = frames[1].astype(int)  # 60 wide: its centred 60 × 60 square spans the blue band and the red
    assert portrait.shape == (16, 16, 3) and np.abs(portrait[0, 0] - np.array(BLUE)).max() <= 2
    with pytest.raises(DataError, match=r"info\.json.*16 px, diffusion\.image_size is 32"):
        open_generator_cache(tmp_path / "gen", "derm", 32)
    with pytest.raises(DataError, match="generator_images stage"):
        open_generator_cache(tmp_path / "missing", "derm", 16)
    assert open_cache(tmp_path / "gen", "derm")[0].shape == frames.shape


def test_nothing_is_enlarged_when_the_raw_image_is_larger(monkeypatch):
    """Every resize on the way from a larger raw image to the crop shrinks it (box halvings, then one bicubic
    step down); only an image smaller than the target is enlarged, and the cache counts it."""
    sizes = []
    resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append((self.size, tuple(size)))
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    for w, h in ((1000, 700), (300, 257), (256, 256), (700, 1000)):
        sizes.clear()
        out = centre_crop_square(np.zeros((h, w, 3), dtype=np.uint8), 256)
        assert out.shape == (256, 256, 3)
        assert all(o[0] <= i[0] and o[1] <= i[1] for i, o in sizes), (w, h, sizes)
    sizes.clear()
    assert centre_crop_square(np.zeros((100, 200, 1), dtype=np.uint8), 256).shape == (256, 256, 1)
    assert sizes and sizes[-1][1] == (512, 256)  # smaller than the target: enlarged (and counted by the cache)


def test_small_images_are_counted(tmp_path):
    prepared = _prepared(tmp_path / "prepared", [_banded(24, 12), _banded(64, 32)])
    assert build_generator_cache(prepared, tmp_path / "gen", 16)["n_upsampled"] == {"derm": 1}
