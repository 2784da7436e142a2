"""The class-conditional StyleGAN2 baseline: shapes, conditioning, range, resume, corrupt checkpoints, toy training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from medrepro.errors import DataError, ParamsError
from medrepro.models.stylegan import Discriminator, Generator, StyleGANConfig, stylegan_profile
from medrepro.vap import gan
from medrepro.vap.gan import GANTrainConfig, gan_train_profile, sample_gan, train_gan

CPU = torch.device("cpu")
TINY = StyleGANConfig(img_size=8, channels=1, num_classes=2, z_dim=8, w_dim=8, mapping_layers=1, base_channels=8,
                      max_channels=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(n: int = 16, size: int = 8, channels: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 bright, class 1 dark, with pixel noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels == 0, 200, 50)[:, None, None, None]
    return np.clip(base + rng.normal(0, 20, (n, size, size, channels)), 0, 255).astype(np.uint8), labels


@pytest.mark.parametrize("size", [8, 32])
def test_shapes_range_and_conditioning(size: int) -> None:
    cfg = StyleGANConfig(img_size=size, channels=3, num_classes=3, z_dim=16, w_dim=16, base_channels=8,
                         max_channels=16)
    torch.manual_seed(0)
    G, D = Generator(cfg).eval(), Discriminator(cfg)
    z = torch.randn(4, 16).repeat(3, 1)
    y = torch.arange(3).repeat_interleave(4)
    with torch.no_grad():
        x = G(z, y, use_noise=False)
        assert x.shape == (12, 3, size, size)
        assert x.min() >= -1 and x.max() <= 1
        assert not torch.allclose(x[:4], x[4:8]) and not torch.allclose(x[4:8], x[8:])  # same z, other class
        assert D(x, y).shape == (12,)
        x5 = G(z[:5], y[:5])  # a batch size that minibatch-stddev groups of 4 do not divide
        assert D(x5, y[:5]).shape == (5,)


def test_config_rejects_bad_sizes() -> None:
    for bad in (4, 12, 48):
        with pytest.raises(ParamsError, match="img_size"):
            StyleGANConfig(img_size=bad)
    paper = stylegan_profile("paper", num_classes=7)
    assert paper.resolutions[-1] == 256 and paper.channels_at(256) == 64 and paper.channels_at(4) == 512
    assert stylegan_profile("embedded", 2).img_size == 32 and gan_train_profile("paper").r1_gamma > 0
    with pytest.raises(ParamsError, match="profile"):
        stylegan_profile("huge", 2)


def test_sample_gan_uint8_deterministic_and_truncation() -> None:
    torch.manual_seed(0)
    G = Generator(TINY)
    labels = np.array([0, 1, 1, 0, 1])
    a = sample_gan(G, labels, seed=3, device=CPU, batch_size=2)
    assert a.dtype == np.uint8 and a.shape == (5, 8, 8, 1)
    assert np.array_equal(a, sample_gan(G, labels, seed=3, device=CPU, batch_size=2))
    assert not np.array_equal(a, sample_gan(G, labels, seed=4, device=CPU, batch_size=2))
    t0 = sample_gan(G, labels, seed=3, device=CPU, truncation=0.0)  # every sample at its class centre (up to noise)
    assert t0.shape == (5, 8, 8, 1)


def _cfg(**kw) -> GANTrainConfig:
    base = {"steps": 6, "batch_size": 4, "r1_every": 2, "r1_gamma": 0.1, "checkpoint_every": 3, "log_every": 2,
            "ema_half_life_images": 20, "augment_hflip": True}
    return GANTrainConfig(**{**base, **kw})


def test_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _toy()
    G_full, rec_full = train_gan(images, labels, 2, TINY, _cfg(), 7, CPU, tmp_path / "full.pt", "run")

    real_step, calls = gan._step, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # killed after the step-3 checkpoint, in the middle of the next interval
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    ckpt = tmp_path / "resumed.pt"
    monkeypatch.setattr(gan, "_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_gan(images, labels, 2, TINY, _cfg(), 7, CPU, ckpt, "run")
    monkeypatch.setattr(gan, "_step", real_step)
    assert ckpt.exists()
    torch.manual_seed(12345)  # a fresh process would not share the global RNG state: the checkpoint restores it
    G_res, rec_res = train_gan(images, labels, 2, TINY, _cfg(), 7, CPU, ckpt, "run")
    assert rec_res["resumed_from"] == 3 and rec_res["steps"] == 6
    sd_full, sd_res = G_full.state_dict(), G_res.state_dict()
    assert all(torch.equal(sd_full[k], sd_res[k]) for k in sd_full)
    assert rec_res["history"] == rec_full["history"]
    assert [h["step"] for h in rec_full["history"]] == [2, 4, 6]


def test_other_run_id_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images, labels = _toy()
    ckpt = tmp_path / "g.pt"
    train_gan(images, labels, 2, TINY, _cfg(steps=3), 0, CPU, ckpt, "a")
    with caplog.at_level(logging.INFO, logger="medrepro"):
        _, rec = train_gan(images, labels, 2, TINY, _cfg(steps=3), 0, CPU, ckpt, "b")
    assert rec["resumed_from"] is None and "different run" in caplog.text


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    images, labels = _toy()
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="broken.pt"):
        train_gan(images, labels, 2, TINY, _cfg(), 0, CPU, ckpt, "run")
    torch.save({"run_id": "run"}, ckpt)
    with pytest.raises(DataError, match="broken.pt"):
        train_gan(images, labels, 2, TINY, _cfg(), 0, CPU, ckpt, "run")


def test_real_batches_are_class_balanced() -> None:
    images, _ = _toy(n=20)
    labels = np.array([1] + [0] * 19)
    sampler = gan._RealSampler(images, labels, CPU, balanced=True, hflip=True)
    x, y = sampler(2000, torch.Generator().manual_seed(0))
    assert x.shape == (2000, 1, 8, 8) and 0.45 < y.float().mean() < 0.55
    ones, orig = x[y == 1], sampler.x[0]  # the only class-1 image, drawn as is and x-flipped
    assert (ones == orig).all(dim=(1, 2, 3)).any() and (ones == orig.flip(2)).all(dim=(1, 2, 3)).any()


def test_inputs_are_checked() -> None:
    images, labels = _toy()
    with pytest.raises(ParamsError, match="uint8"):
        train_gan(images[:, :4, :4], labels, 2, TINY, _cfg(), 0, CPU, None, "run")
    with pytest.raises(ParamsError, match="labels"):
        train_gan(images, labels + 1, 2, TINY, _cfg(), 0, CPU, None, "run")


def test_short_training_learns_class_brightness() -> None:
    images, labels = _toy(n=32)
    model = StyleGANConfig(img_size=8, channels=1, num_classes=2, z_dim=16, w_dim=16, mapping_layers=1,
                           base_channels=16, max_channels=16)
    cfg = GANTrainConfig(steps=60, batch_size=16, r1_gamma=0.01, r1_every=4, ema_half_life_images=200, log_every=20)
    G, rec = train_gan(images, labels, 2, model, cfg, 0, CPU, None, "toy")
    x = sample_gan(G, np.repeat([0, 1], 64), seed=0, device=CPU).astype(float)
    assert x[:64].mean() > x[64:].mean() + 40, (x[:64].mean(), x[64:].mean())
    assert rec["steps"] == 60 and rec["samples_per_s"] > 0 and len(rec["history"]) == 3
