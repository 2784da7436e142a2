"""HiCA's full-resolution ROI crops (``hica.roi_source: full``): the ROI image cache, crops cut from it at boxes
found on the classifier's image and scaled, both copies augmented with the same draws, and the params checked."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medrepro.config import AugmentConfig, check_params, read_yaml
from medrepro.data.loaders import CachedImages
from medrepro.errors import DataError, ParamsError
from medrepro.hica.data import CaptionedTaskData
from medrepro.hica.roi_images import build_roi_images, open_roi_images
from medrepro.models.hica import HiCALossConfig, HiCAModel, roi_image_key, roi_source, scale_boxes
from medrepro.models.hica_rois import RoiConfig, crops, training_boxes


class CoarseTower(torch.nn.Module):
    """A timm-like tower (``forward_features`` / ``forward_head``): 1 × 1 conv, mean over pixels."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean((2, 3))


def _prepared(root, images: list[np.ndarray], cache_size: int):
    """A one-modality prepared dataset of ``images`` whose classifier cache is at ``cache_size`` px."""
    from medrepro.data.cache import build_cache
    from medrepro.data.images import read_image

    (root / "files").mkdir(parents=True)
    (root / "cache").mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / "files" / f"{i}.png")
    n = len(images)
    pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": [0] * n, "split": ["train"] * n,
                  "path_fundus": [f"files/{i}.png" for i in range(n)]}).to_parquet(root / "manifest.parquet")
    (root / "classes.json").write_text(json.dumps({"name": "toy", "classes": ["a"], "modalities": ["fundus"],
                                                   "channels": [3], "task": "multiclass",
                                                   "image_size": cache_size}))
    build_cache([root / "files" / f"{i}.png" for i in range(n)], lambda p: read_image(p, 3), cache_size, 3,
                root / "cache" / "fundus", workers=1)
    return root


def _speckled(size: int, seed: int) -> np.ndarray:
    """Fine detail the classifier's cache blurs away: random pixels (8-px squares would survive any resize)."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_roi_image_cache_holds_the_full_resolution_and_names_its_stage(tmp_path):
    prepared = _prepared(tmp_path / "prep", [_speckled(64, 0), _speckled(64, 1)], 16)
    record = build_roi_images(prepared, tmp_path / "roi", "full", 64, workers=1)
    assert record["image_size"] == 64 and record["cache_size"] == 16
    like = CachedImages(prepared, ["fundus"])
    big = open_roi_images(tmp_path / "roi", 64, like)
    x, xb = like.batch(np.array([1]))["fundus"], big.batch(np.array([1]))["fundus"]
    assert x.shape == (1, 3, 16, 16) and xb.shape == (1, 3, 64, 64)
    pixels = (xb * big.std + big.mean).round()[0].permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, _speckled(64, 1))  # the file's own pixels, normalised as the cache's
    with pytest.raises(DataError, match=r"hica\.roi_image_size; rerun the hica_roi_images stage"):
        open_roi_images(tmp_path / "roi", 32, like)
    with pytest.raises(DataError, match="run the hica_roi_images stage"):
        open_roi_images(tmp_path / "missing", 64, like)
    cache_only = build_roi_images(prepared, tmp_path / "roi_cache", "cache", 64, workers=1)
    assert cache_only == {"dataset": "toy", "source": "cache"} and not (tmp_path / "roi_cache" / "cache").exists()
    with pytest.raises(DataError, match="source 'cache'"):
        open_roi_images(tmp_path / "roi_cache", 64, like)
    build_roi_images(prepared, tmp_path / "roi40", "full", 40, workers=1)
    with pytest.raises(DataError, match="whole multiple"):
        open_roi_images(tmp_path / "roi40", 40, like)


def _model(roi_size: int = 8) -> HiCAModel:
    rois = RoiConfig(mode="components", k=2, z=2.5, min_area=2, pad=1)
    return HiCAModel({"fundus": CoarseTower()}, 16, torch.randn(2, 6), 8, HiCALossConfig(), rois, roi_size)


def test_roi_crops_come_from_the_larger_copy_at_the_scaled_boxes():
    torch.manual_seed(0)
    x = 0.1 * torch.randn(2, 3, 16, 16)
    x[:, :, 5:8, 9:12] += 3.0  # one bright blob: the components rule's ROI
    big = torch.randn(2, 3, 64, 64)  # the larger copy: other pixels than the cache's upsampled
    model = _model()
    seen = []
    model.tower_embed = lambda m, p: (seen.append(p), torch.zeros(len(p), 8))[1]  # record the crops
    model.roi_embeddings({"fundus": x, roi_image_key("fundus"): big})
    boxes = training_boxes(x[0].mean(0).numpy(), model.rois)
    assert boxes and boxes[0][:2] == (4, 8)  # the blob grown by pad 1
    want, _ = crops(big[0], scale_boxes(boxes, 4), 2, 8)
    got = seen[0].view(2, 2, 3, 8, 8)[0]
    assert torch.equal(got, want)
    cut_from_cache, _ = crops(x[0], boxes, 2, 8)
    assert not torch.allclose(got, cut_from_cache)
    seen.clear()  # without the copy: the crops of the image itself, as before
    model.roi_embeddings({"fundus": x})
    assert torch.equal(seen[0].view(2, 2, 3, 8, 8)[0], cut_from_cache)


def test_roi_copy_must_be_a_whole_multiple_of_the_images():
    x = torch.zeros(2, 3, 16, 16)
    assert roi_source(x, None) == (x, 1)
    assert roi_source(x, torch.zeros(2, 3, 32, 32))[1] == 2
    for bad in (torch.zeros(2, 3, 24, 24), torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 32, 48)):
        with pytest.raises(ValueError, match="whole multiple"):
            roi_source(x, bad)
    assert scale_boxes([(1, 2, 3, 4)], 3) == [(3, 6, 9, 12)]


def _task(tmp_path, aug_seed: int = 0) -> CaptionedTaskData:
    """Training data whose ROI copy is the cache's frames upsampled ×2 (nearest): the augmented copies must then
    agree pixel for pixel away from the reflect-padded border."""
    rng = np.random.default_rng(aug_seed)
    small = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    for root, frames in ((tmp_path / "a", small), (tmp_path / "b", small.repeat(2, 1).repeat(2, 2))):
        (root / "cache").mkdir(parents=True)
        np.save(root / "cache" / "fundus.npy", frames)
        np.save(root / "cache" / "fundus.offsets.npy", np.arange(7))
    images = CachedImages(tmp_path / "a", ["fundus"])
    big = CachedImages(tmp_path / "b", ["fundus"])
    return CaptionedTaskData(images=images, labels=np.zeros(6, np.int64), multilabel=False,
                             train_idx=np.arange(6), val_idx=np.zeros(0, np.int64), test_idx=np.zeros(0, np.int64),
                             captions=torch.zeros(6, 4), roi_images=big)


@pytest.mark.parametrize("aug", [AugmentConfig(hflip=True, crop_pad=2, color_jitter=0.1),
                                 AugmentConfig(hflip=True, crop_pad=0, color_jitter=0.0, rotate=30, crop_p=1.0,
                                               jitter=0.3)])
def test_both_copies_are_augmented_with_the_same_draws(tmp_path, aug):
    data = _task(tmp_path)
    idx = np.arange(6)
    gen = torch.Generator().manual_seed(3)
    out = data.inputs(idx, torch.device("cpu"), True, gen, aug)
    x, big = out["fundus"], out[roi_image_key("fundus")]
    assert big.shape == (6, 3, 32, 32)
    # the image itself is exactly what the classifier path makes with the same generator (no draw taken)
    plain = data.images.batch(idx, train=True)
    from medrepro.train.augment import augment
    assert torch.equal(x, augment(plain["fundus"], aug, torch.Generator().manual_seed(3), data.images.norm))
    down = F.avg_pool2d(big, 2)
    m = 2 if aug.crop_pad else 3  # away from the border (reflect padding; resampling at black corners)
    err = (down - x)[..., m:-m, m:-m].abs()
    tol = 0.02 if not aug.rotate else 0.35  # bilinear resampling of a 2× copy differs only by interpolation
    assert err.mean() < tol, err.mean()
    # a copy augmented with other draws disagrees
    other = data.inputs(idx, torch.device("cpu"), True, torch.Generator().manual_seed(4), aug)
    assert (F.avg_pool2d(other[roi_image_key("fundus")], 2) - x)[..., m:-m, m:-m].abs().mean() > 3 * err.mean()


def test_roi_source_and_size_are_checked(tmp_path):
    params = copy.deepcopy(read_yaml(Path("params.yaml")))
    check_params(params)
    assert params["hica"]["roi_source"] in ("cache", "full")
    bad = copy.deepcopy(params)
    bad["hica"]["roi_source"] = "native"
    with pytest.raises(ParamsError, match="roi_source"):
        check_params(bad)
    size = params["data"][params["hica"]["datasets"][0]]["image_size"]
    for image_size, ok in ((2 * size, True), (size, False), (3 * size // 2, False)):
        p = copy.deepcopy(params)
        p["hica"].update(roi_source="full", roi_image_size=image_size)
        if ok:
            check_params(p)
        else:
            with pytest.raises(ParamsError, match=r"hica\.roi_image_size .* whole multiple"):
                check_params(p)
    missing = copy.deepcopy(params)
    del missing["hica"]["roi_image_size"]
    with pytest.raises(ParamsError, match="roi_image_size"):
        check_params(missing)
