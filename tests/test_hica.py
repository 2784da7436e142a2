"""HiCA: the three losses against values computed by hand, and the ROI extractor's modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medrepro.errors import ParamsError
from medrepro.hica.losses import cross_loss, global_loss, hica_loss, local_loss
from medrepro.hica.rois import RoiConfig, crops, roi_boxes

# two images, three class descriptors; unit vectors, so the similarities are plain dot products
Z_IMG = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
Z_CLASS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
LABELS = torch.tensor([0, 1])
TAU = 0.5


def test_global_loss_by_hand():
    # image 0: sims (1, 0, -1), target 0; image 1: sims (0.6, 0.8, -0.6), target 1
    l0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    l1 = -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6) + math.exp(-1.2)))
    assert global_loss(Z_IMG, Z_CLASS, LABELS, TAU).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_global_loss_ignores_the_norm_of_embeddings():
    assert global_loss(3 * Z_IMG, 0.5 * Z_CLASS, LABELS, TAU).item() == pytest.approx(
        global_loss(Z_IMG, Z_CLASS, LABELS, TAU).item(), rel=1e-6)


@pytest.mark.parametrize(("margin", "expected"), [
    # mismatched pairs: image 0 × classes 1, 2 (sims 0, -1); image 1 × classes 0, 2 (sims 0.6, -0.6)
    (0.5, (0 + 0 + 0.1 + 0) / 4),  # only (1, 0) is above the margin: active
    (0.7, 0.0),  # every mismatched pair below the margin: inactive
    (-0.2, (0.2 + 0 + 0.8 + 0) / 4),
])
def test_cross_loss_by_hand(margin, expected):
    assert cross_loss(Z_IMG, Z_CLASS, LABELS, margin).item() == pytest.approx(expected, abs=1e-6)


def test_local_loss_by_hand_and_padding_ignored():
    caps = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rois = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [5.0, 5.0]]])  # image 1's second ROI is padding
    mask = torch.tensor([[True, True], [True, False]])

    def ce(sims, target):
        e = [math.exp(s / TAU) for s in sims]
        return -math.log(e[target] / sum(e))

    image0 = (ce([1, 0], 0) + ce([0, 1], 0)) / 2
    image1 = ce([0, 1], 1)
    assert local_loss(rois, mask, caps, TAU).item() == pytest.approx((image0 + image1) / 2, rel=1e-6)
    rois2 = rois.clone()
    rois2[1, 1] = torch.tensor([-3.0, 7.0])
    assert local_loss(rois2, mask, caps, TAU).item() == pytest.approx(local_loss(rois, mask, caps, TAU).item())


def test_hica_loss_sums_the_weighted_terms_and_drops_switched_off_ones():
    caps = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rois = Z_IMG[:, None, :]
    mask = torch.ones(2, 1, dtype=torch.bool)
    total, parts = hica_loss(Z_IMG, Z_CLASS, LABELS, rois, mask, caps, TAU, 0.5, 2.0, 0.5)
    assert set(parts) == {"global", "local", "cross"}
    expected = (global_loss(Z_IMG, Z_CLASS, LABELS, TAU) + 0.5 * local_loss(rois, mask, caps, TAU)
                + 2.0 * cross_loss(Z_IMG, Z_CLASS, LABELS, 0.5))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    _, parts = hica_loss(Z_IMG, Z_CLASS, LABELS, rois, mask, caps, TAU, 0.0, 2.0, 0.5, use_global=False)
    assert set(parts) == {"cross"}
    with pytest.raises(ValueError, match="every term"):
        hica_loss(Z_IMG, Z_CLASS, LABELS, None, None, None, TAU, 0.0, 0.0, 0.5, use_global=False)


# ---------------------------------------------------------------- ROIs


def _image_with_blobs() -> np.ndarray:
    img = np.full((32, 32, 3), 100, np.uint8)
    img[4:8, 4:10] = 250  # large bright blob (24 px)
    img[20:23, 24:27] = 10  # smaller dark blob (9 px)
    img[30, 0] = 255  # a single pixel: below min_area
    return img


def test_components_mode_finds_the_blobs_largest_first():
    boxes, mode = roi_boxes(_image_with_blobs(), RoiConfig(mode="components", k=4, pad=0))
    assert mode == "components" and boxes == [(4, 4, 8, 10), (20, 24, 23, 27)]
    padded, _ = roi_boxes(_image_with_blobs(), RoiConfig(mode="components", k=1, pad=1))
    assert padded == [(3, 3, 9, 11)]


def test_mask_mode_uses_the_mask_not_the_image():
    mask = np.zeros((32, 32), np.uint8)
    mask[10:20, 12:14] = 255
    boxes, mode = roi_boxes(_image_with_blobs(), RoiConfig(mode="mask", pad=0), mask)
    assert mode == "mask" and boxes == [(10, 12, 20, 14)]
    with pytest.raises(ParamsError, match="no mask"):
        roi_boxes(_image_with_blobs(), RoiConfig(mode="mask"))


def test_grid_mode_and_auto_fallbacks():
    flat = np.full((32, 32), 7, np.uint8)
    boxes, mode = roi_boxes(flat, RoiConfig(mode="grid", k=4))
    assert mode == "grid" and boxes == [(0, 0, 16, 16), (0, 16, 16, 32), (16, 0, 32, 16), (16, 16, 32, 32)]
    assert roi_boxes(flat, RoiConfig(mode="auto", k=4))[1] == "grid"  # nothing deviates: no component
    assert roi_boxes(_image_with_blobs(), RoiConfig(mode="auto"))[1] == "components"
    assert roi_boxes(_image_with_blobs(), RoiConfig(mode="auto"), np.ones((32, 32)))[1] == "mask"
    with pytest.raises(ParamsError, match="square number"):
        RoiConfig(mode="grid", k=3)


def test_crops_resize_each_box_and_mark_padding():
    img = torch.arange(16.0).view(1, 4, 4)
    out, valid = crops(img, [(0, 0, 2, 2)], k=2, size=2)
    assert valid.tolist() == [True, False]
    assert out[0, 0].tolist() == [[0.0, 1.0], [4.0, 5.0]] and (out[1] == 0).all()
