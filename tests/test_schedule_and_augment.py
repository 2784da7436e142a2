"""EI Sec. 4.1's optimiser and CyclicLR, and the two augmentation pipelines (embedded stand-in, authors')."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import train_config

from medrepro.config import AugmentConfig
from medrepro.train.augment import augment, color_jitter, rotate_and_crop, warp
from medrepro.train.schedule import build_optimizer, build_scheduler


def _run(cfg, steps_per_epoch: int, steps: int) -> tuple[list[float], list[float]]:
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    lrs, moms = [], []
    for _ in range(steps):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        moms.append(group["momentum"])
        opt.step()
        sched.step()
    return lrs, moms


def test_cyclic_lr_shape_min_max_ramp_and_decay_per_cycle():
    cfg = train_config(optimizer="sgd", momentum=0.95, schedule="cyclic", lr_min=1e-5, lr_max=1e-3, warmup_epochs=4,
                       cycle_decay=0.8, cycle_momentum=False)
    spe = 5
    ramp = 4 * spe  # step_size_up = warmup_epochs epochs: the first ramp is the warm-up
    lrs, moms = _run(cfg, spe, 4 * ramp + 1)
    assert lrs[0] == pytest.approx(1e-5)
    assert max(lrs[: 2 * ramp]) == pytest.approx(1e-3) and lrs.index(max(lrs[: 2 * ramp])) == ramp
    assert lrs[ramp // 2] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)  # linear ramp
    assert lrs[2 * ramp] == pytest.approx(1e-5)  # back at lr_min after one cycle
    amp1, amp2 = lrs[ramp] - 1e-5, lrs[3 * ramp] - 1e-5
    assert amp2 / amp1 == pytest.approx(0.8)  # amplitude × cycle_decay per cycle
    assert set(moms) == {0.95}  # momentum stays at the paper's 0.95


def test_momentum_cycles_only_with_cycle_momentum():
    cfg = train_config(optimizer="sgd", momentum=0.95, schedule="cyclic", lr_min=1e-5, lr_max=1e-3, warmup_epochs=1,
                       cycle_decay=0.8, cycle_momentum=True)
    _, moms = _run(cfg, 4, 9)  # torch's default (the authors' code): momentum 0.9 → 0.8 → 0.9 against the lr
    assert moms[0] == pytest.approx(0.9) and min(moms) == pytest.approx(0.8) and moms[4] == pytest.approx(0.8)


def _images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


NORM = (torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))


def test_warp_rotates_and_crops_exactly():
    x = _images()
    none = torch.zeros(4, 4)
    assert torch.allclose(warp(x, torch.zeros(4), none), x, atol=1e-6)  # no rotation, no crop: the same pixels
    quarter = warp(x, torch.full((4,), math.pi / 2), none)
    assert torch.allclose(quarter, torch.rot90(x, 1, (2, 3)), atol=1e-5)  # a quarter turn moves pixels, no blur
    cuts = torch.tensor([[0.25, 0.25, 0.25, 0.25]]).expand(4, 4)  # the central half, resized back to 16 px
    zoom = warp(x, torch.zeros(4), cuts)
    ref = torch.nn.functional.interpolate(x[:, :, 4:12, 4:12], size=16, mode="bilinear", align_corners=False)
    assert torch.allclose(zoom[:, :, 2:-2, 2:-2], ref[:, :, 2:-2, 2:-2], atol=1e-5)


def test_rotation_keeps_the_centre_and_blackens_corners():
    x = torch.ones(64, 3, 17, 17)
    out = rotate_and_crop(x, 180.0, 0.0, 0.1, torch.Generator().manual_seed(1))
    assert torch.allclose(out[:, :, 8, 8], torch.ones(64, 3))  # the centre pixel never moves
    assert (out[:, :, 0, 0] < 0.5).float().mean() > 0.3  # most rotations push a corner outside: black
    assert out.min() >= 0 and out.max() <= 1 + 1e-6


def test_random_crop_zooms_in_with_its_probability():
    x = torch.linspace(0, 1, 32).expand(400, 3, 32, 32).contiguous()  # a horizontal ramp
    out = rotate_and_crop(x, 0.0, 0.5, 0.1, torch.Generator().manual_seed(2))
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert 0.4 < changed.float().mean() < 0.6  # crop_p = 0.5
    assert (out[changed][:, :, :, 0] >= x[0, 0, 0, 0] - 1e-6).all()  # a crop of the left side starts further right


def test_color_jitter_matches_torchvision_formulas():
    x = _images(2)
    g = torch.Generator().manual_seed(3)
    factors = 1 + (torch.rand(3, 2, 1, 1, 1, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.3
    out = color_jitter(x, 0.3, g)
    b = (x * factors[0]).clamp(0, 1)
    gray = (0.299 * b[:, 0] + 0.587 * b[:, 1] + 0.114 * b[:, 2]).unsqueeze(1)
    m = gray.mean(dim=(1, 2, 3), keepdim=True)
    c = ((b - m) * factors[1] + m).clamp(0, 1)
    gray = (0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]).unsqueeze(1)
    assert torch.allclose(out, ((c - gray) * factors[2] + gray).clamp(0, 1), atol=1e-6)
    assert all(0.7 <= float(f) <= 1.3 for f in factors.flatten())


def test_authors_pipeline_is_seeded_and_needs_the_normalisation():
    cfg = AugmentConfig(hflip=True, crop_pad=0, color_jitter=0.0, rotate=180, crop_p=0.5, crop_max=0.1, jitter=0.3)
    x = (_images() - NORM[0]) / NORM[1]
    a = augment(x, cfg, torch.Generator().manual_seed(5), NORM)
    b = augment(x, cfg, torch.Generator().manual_seed(5), NORM)
    assert torch.equal(a, b) and not torch.allclose(a, x)
    pixels = a * NORM[1] + NORM[0]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # clamped in pixel space, corners black (0)
    with pytest.raises(ValueError, match="normalisation"):
        augment(x, cfg, torch.Generator())


def test_embedded_stand_in_is_unchanged_by_the_new_keys():
    x = _images()
    cfg = AugmentConfig(hflip=True, crop_pad=2, color_jitter=0.1)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(augment(x, cfg, g1), augment(x, cfg, g2, NORM))  # the stand-in never uses the norm
    assert math.isclose(cfg.rotate + cfg.crop_p + cfg.jitter, 0.0)
