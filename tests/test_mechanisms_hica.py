"""Capability tests of HiCA's local (ROI) and cross-category terms (Sec. III-B, Eqs. 4-5): tiny tasks built so that
the mechanism is necessary, each asserting that the mechanism solves its task and that its mutation does not.

- Local: the class is the colour of one 3 × 3 blob at a random place in a large noisy image whose overall colour
  varies per image; a tower that sees the image at 4 × 4 resolution cannot read it globally, but the ROI the
  ``components`` rule finds shows the blob at full size. Only L_local teaches the ROI path the blob colour.
- Cross: two classes whose text descriptors are near-identical sentence embeddings: the hinge fires, reaches both
  projections and widens the gap between an image's own and the confusable class; on well-separated classes it is
  exactly zero.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.models.hica import CAPTION, HiCALossConfig, HiCAModel
from medrepro.models.hica_losses import cosine, cross_loss, hica_loss
from medrepro.models.hica_rois import RoiConfig


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class CoarseTower(nn.Module):
    """A timm-like tower that sees its input at ``cells`` × ``cells`` (area pooling), then a 1 × 1 conv, ReLU and
    the mean over cells: a whole 48-px image is seen coarsely, a 16-px ROI crop almost at full size."""

    def __init__(self, cells: int = 4, width: int = 16) -> None:
        super().__init__()
        self.cells, self.num_features = cells, width
        self.conv = nn.Conv2d(3, width, 1)

    def forward_features(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(F.adaptive_avg_pool2d(x, self.cells)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x.mean((2, 3))


# ---------------------------------------------------------------- local (ROI) alignment, Eq. 4

SIZE, BLOB = 48, 3
COLOURS = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # class 0: red blob, class 1: green blob (same grey)


def blob_images(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """(n, 3, 48, 48) noisy images with a random per-image colour cast and one 3 × 3 blob whose colour is the class."""
    y = torch.arange(n) % 2
    x = 0.3 * torch.randn(n, 3, SIZE, SIZE, generator=gen) + 0.5 * torch.randn(n, 3, 1, 1, generator=gen)
    pos = torch.randint(4, SIZE - 4 - BLOB, (n, 2), generator=gen)
    for i in range(n):
        r, c = pos[i].tolist()
        x[i, :, r:r + BLOB, c:c + BLOB] += COLOURS[y[i]][:, None, None]
    return x, y


def local_model(lambda_local: float, text: Tensor) -> HiCAModel:
    loss = HiCALossConfig(tau=0.1, lambda_local=lambda_local, lambda_cross=0.0)
    rois = RoiConfig(mode="components", k=2, z=2.5, min_area=4, pad=1)
    return HiCAModel({"img": CoarseTower()}, 16, text, 8, loss, rois, roi_size=16)


def train_local(lambda_local: float, seed: int = 0, steps: int = 120) -> tuple[float, float]:
    """Train HiCA (global + λ1 local) on the blob task; test accuracy of (the ROI path, the global path)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(2, 6, generator=gen)  # class descriptors; each caption = its class's + a little noise
    model = local_model(lambda_local, text)
    x, y = blob_images(64, gen)
    captions = text[y] + 0.05 * torch.randn(len(y), 6, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:16]
        loss = model.training_loss({"img": x[idx], CAPTION: captions[idx]}, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = blob_images(200, torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        z_roi, mask = model.roi_embeddings({"img": xt})
        roi = F.normalize((z_roi * mask[..., None]).sum(1), dim=-1)  # the mean of each image's ROI embeddings
        roi_acc = (cosine(roi, model.class_embeddings()).argmax(1) == yt).float().mean().item()
        global_acc = (model({"img": xt}).argmax(1) == yt).float().mean().item()
    return roi_acc, global_acc


def test_the_components_rule_finds_the_blob():
    from medrepro.models.hica_rois import training_boxes

    x, _ = blob_images(20, torch.Generator().manual_seed(0))
    rois = RoiConfig(mode="components", k=2, z=2.5, min_area=4, pad=1)
    hits = 0
    for img in x:
        grey = img.mean(0).numpy()
        peak = np.unravel_index(np.argmax(np.abs(grey - np.median(grey))), grey.shape)
        y0, x0, y1, x1 = training_boxes(grey, rois)[0]
        hits += y0 <= peak[0] < y1 and x0 <= peak[1] < x1
    assert hits >= 19


def test_local_loss_teaches_the_roi_path_evidence_the_global_view_cannot_see():
    roi_acc, global_acc = train_local(lambda_local=1.0)
    roi_off, global_off = train_local(lambda_local=0.0)
    assert roi_acc >= 0.9, f"with L_local the ROI path reads the blob colour: accuracy {roi_acc:.2f}"
    assert roi_off <= 0.7, f"without L_local the ROI path must not: accuracy {roi_off:.2f}"
    # the premise of the task: the global view alone cannot resolve the evidence, with or without L_local
    assert max(global_acc, global_off) <= 0.7, (global_acc, global_off)


# ---------------------------------------------------------------- cross-category separation, Eq. 5

TEXT_DIM, FEAT = 16, 8


def confusable_text(gen: torch.Generator, spread: float) -> Tensor:
    """Three class descriptors: classes 0 and 1 differ by ``spread`` × a random direction (near-identical when small),
    class 2 is unrelated."""
    base = torch.randn(TEXT_DIM, generator=gen)
    near = base + spread * torch.randn(TEXT_DIM, generator=gen)
    return torch.stack([base, near, torch.randn(TEXT_DIM, generator=gen)])


class FeatureTower(nn.Module):
    """A timm-like tower over ready-made (B, 3, 1, FEAT/3…) inputs: flattens them and applies one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = FEAT
        self.lin = nn.Linear(3 * FEAT, FEAT)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.lin(x.flatten(1))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x


def cluster_inputs(n: int, gen: torch.Generator, centres: Tensor, noise: float) -> tuple[Tensor, Tensor]:
    y = torch.arange(n) % len(centres)
    return (centres[y] + noise * torch.randn(n, 3 * FEAT, generator=gen)).view(n, 3, 1, FEAT), y


def cross_model(lambda_cross: float, text: Tensor) -> HiCAModel:
    loss = HiCALossConfig(tau=0.07, lambda_local=0.0, lambda_cross=lambda_cross, margin=0.2)
    return HiCAModel({"img": FeatureTower()}, FEAT, text, 8, loss, RoiConfig(mode="grid", k=1), roi_size=4)


def train_cross(lambda_cross: float, seed: int = 0, steps: int = 100,
                spread: float = 0.05) -> tuple[float, float, float]:
    """Global + λ2 cross on 3 classes, two of them with near-identical descriptors (images separable). On held-out
    images of those two: the share of (image, confusable class) pairs closer than δ, their mean similarity, and
    the gap sim(own) − sim(confusable)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    text = confusable_text(gen, spread)
    centres = torch.randn(3, 3 * FEAT, generator=gen)
    model = cross_model(lambda_cross, text)
    x, y = cluster_inputs(48, gen, centres, 0.3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:16]
        loss = model.training_loss({"img": x[idx]}, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = cluster_inputs(300, torch.Generator().manual_seed(seed + 100), centres, 0.3)
    with torch.no_grad():
        sims = cosine(model.embed_images({"img": xt}), model.class_embeddings())
    pair = yt < 2
    own, other = sims[pair, yt[pair]], sims[pair, 1 - yt[pair]]
    return (other > 0.2).float().mean().item(), other.mean().item(), (own - other).mean().item()


def test_cross_hinge_is_active_on_confusable_descriptors_and_reaches_both_projections():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    text = confusable_text(gen, spread=0.05)
    assert cosine(text[:1], text[1:2]).item() > 0.99  # near-identical descriptors
    model = cross_model(1.0, text)
    x, y = cluster_inputs(12, gen, torch.randn(3, 3 * FEAT, generator=gen), 0.3)
    z_img, z_class = model.embed_images({"img": x}), model.class_embeddings()
    # an image aligned with its own descriptor is as close to the confusable one: the hinge fires
    z_img = F.normalize(z_img + 3 * z_class[y].detach(), dim=-1)
    _, parts = hica_loss(z_img, z_class, y, None, None, None, 0.07, 0.0, 1.0, 0.2)
    assert parts["cross"].item() > 0
    parts["cross"].backward()
    for name in ("img_proj.img.weight", "text_proj.weight", "towers.img.lin.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_cross_hinge_is_exactly_zero_on_well_separated_classes():
    z_class = torch.eye(4, 8, requires_grad=True)  # orthogonal descriptors: every wrong pair has sim 0 < δ
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    z_img = (z_class[labels] + 0.05 * torch.randn(6, 8, generator=torch.Generator().manual_seed(0))).detach()
    z_img.requires_grad_(True)
    loss = cross_loss(z_img, z_class, labels, margin=0.2)
    loss.backward()
    assert loss.item() == 0.0
    assert z_img.grad.abs().sum() == 0 and z_class.grad.abs().sum() == 0


def test_cross_hinge_pushes_confusable_classes_beyond_the_margin():
    """Eq. 5 separates an image from the confusable class by δ: with the hinge almost no (image, confusable class)
    pair stays closer than δ, without it most do. (It lowers the wrong-class similarity; the gap to the image's own
    class barely changes, as its own similarity falls with it.)"""
    above_on, other_on, _ = train_cross(lambda_cross=0.5)
    above_off, other_off, _ = train_cross(lambda_cross=0.0)
    assert above_on <= 0.1 < 0.5 <= above_off, f"pairs above δ: with the hinge {above_on:.2f}, without {above_off:.2f}"
    assert other_on < other_off - 0.1, (other_on, other_off)
