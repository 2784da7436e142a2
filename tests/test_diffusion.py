"""VAP-Diffusion's training, guidance, resume and synthesis plumbing (the U-ViT itself: test_uvit.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT, config

from medrepro.errors import DataError, WeightsError
from medrepro.models.uvit import UViT
from medrepro.vap.conditions import Conditions
from medrepro.vap.generator import Space, uvit_config
from medrepro.vap.sample import guided_eps, sample
from medrepro.vap.synthesize import bank_rows, draw_sources, load_generator
from medrepro.vap.train import GeneratorTraining, balanced_index, train_generator

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(steps: int = 4, every: int = 2):
    dc = config().diffusion
    return dataclasses.replace(
        dc, image_size=8, text=dataclasses.replace(dc.text, pool=1),
        uvit=dataclasses.replace(dc.uvit, patch_size=4, dim=16, depth=2, heads=2, pcm_tokens=4),
        train=dataclasses.replace(dc.train, steps=steps, checkpoint_every=every, batch_size=4, warmup_steps=1),
        sample=dataclasses.replace(dc.sample, steps=2, batch_size=4))


def _net(dc, variant: str, ctx_dim: int | None = 8) -> UViT:
    torch.manual_seed(0)
    return UViT(uvit_config(dc, variant, 2, Space("pixel", 8, 1), ctx_dim))


def _conds(n: int, text: bool) -> Conditions:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    if not text:
        return Conditions(labels=labels, null_class=2)
    ctx, mask = torch.randn(n, 64, 8, generator=g), torch.ones(n, 64, dtype=torch.bool)
    return Conditions(labels=labels, null_class=2, context=ctx, mask=mask, null_context=torch.zeros(1, 64, 8),
                      null_mask=torch.zeros(1, 64, dtype=torch.bool).index_fill(1, torch.tensor([0]), True))


def test_guidance_scale_one_is_the_conditional_prediction():
    dc = _tiny()
    net = _net(dc, "vap").eval()
    conds = _conds(3, text=True)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10, 500, 900])
    cond, uncond = conds.batch(torch.arange(3), None, torch.device("cpu")), conds.null(3, torch.device("cpu"))
    with torch.no_grad():
        plain, _ = net(x, t, *cond)
        null, _ = net(x, t, *uncond)
        assert torch.allclose(guided_eps(net, x, t, cond, uncond, 1.0), plain, atol=1e-5)
        assert torch.allclose(guided_eps(net, x, t, cond, uncond, 0.0), null, atol=1e-5)
        assert not torch.allclose(guided_eps(net, x, t, cond, uncond, 3.0), plain, atol=1e-3)


def test_label_token_param_drops_the_label_token_of_the_pcm_variant_only():
    """diffusion.uvit.label_token: false = upstream's PCM model (class through the prototypes only); the class
    and vap_nopcm variants keep theirs (without one they would have no class at all)."""
    from medrepro.config import load_config

    dc = _tiny()
    assert dc.uvit.label_token is True
    without = dataclasses.replace(dc, uvit=dataclasses.replace(dc.uvit, label_token=False))
    assert [_net(without, v).label_emb is None for v in ("class", "vap_nopcm", "vap")] == [False, False, True]
    assert _net(dc, "vap").label_emb is not None
    net = _net(without, "vap").eval()
    x, t, labels = torch.randn(2, 1, 8, 8), torch.tensor([3, 700]), torch.tensor([0, 1])
    with torch.no_grad():  # the class still conditions: through its prototype
        net.pcm.prototypes.weight.normal_()
        net.pcm.cross_out.weight.normal_()
        assert not torch.allclose(net(x, t, labels)[0], net(x, t, labels.flip(0))[0])
    assert load_config(ROOT / "params.yaml", ROOT / "config" / "paper.yaml").diffusion.uvit.label_token is False


def test_condition_dropout_replaces_label_and_text_together():
    conds = _conds(4, text=True)
    labels, ctx, mask = conds.batch(torch.arange(4), torch.tensor([True, False, True, False]), torch.device("cpu"))
    assert labels.tolist() == [2, 1, 2, 1]
    assert torch.equal(ctx[0], torch.zeros(64, 8)) and torch.equal(ctx[1], conds.context[1])
    assert mask[0].sum() == 1 and mask[1].all()


def test_pooled_context_averages_real_tokens_only():
    from medrepro.vap.conditions import pool_tokens

    ctx = torch.arange(1.0, 7.0).view(1, 6, 1)
    mask = torch.tensor([[True, True, True, False, False, False]])
    pooled, pmask = pool_tokens(ctx, mask, 2)
    assert pooled.view(-1).tolist() == [1.5, 3.0, 0.0] and pmask.tolist() == [[True, True, False]]
    same, same_mask = pool_tokens(ctx, mask, 1)
    assert same is ctx and same_mask is mask


def test_class_balanced_index_repeats_the_small_classes():
    idx = balanced_index(np.array([0, 0, 0, 0, 1, 2, 2]), class_balanced=True)
    assert np.bincount(np.array([0, 0, 0, 0, 1, 2, 2])[idx]).tolist() == [4, 4, 4]
    assert balanced_index(np.array([0, 1, 1]), class_balanced=False).tolist() == [0, 1, 2]


def _train(dc, ckpt: Path | None, variant: str = "vap") -> GeneratorTraining:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    model, _ = train_generator(_net(dc, variant), x0, _conds(6, text=variant != "class"), dc, g,
                               torch.device("cpu"), "fp32", ckpt, "run-a")
    return model


def test_resume_after_a_kill_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    dc = _tiny(steps=6, every=2)
    straight = _train(dc, None).ema.state_dict()
    ckpt = tmp_path / "ckpt.pt"
    calls = {"n": 0}
    real_update = GeneratorTraining.update_ema

    def killed(self, decay):
        calls["n"] += 1
        if calls["n"] == 5:  # during the third checkpoint interval: the checkpoint after step 4 survives
            raise KeyboardInterrupt
        real_update(self, decay)

    monkeypatch.setattr(GeneratorTraining, "update_ema", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(dc, ckpt)
    monkeypatch.setattr(GeneratorTraining, "update_ema", real_update)
    assert torch.load(ckpt, weights_only=False)["state"]["epoch"] == 2
    resumed = _train(dc, ckpt).ema.state_dict()
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_ema_trails_the_trained_weights():
    model = _train(_tiny(steps=4, every=2), None, variant="class")
    net, ema = dict(model.net.named_parameters()), dict(model.ema.named_parameters())
    assert any(not torch.equal(net[k], ema[k]) for k in net)
    assert all(not p.requires_grad for p in model.ema.parameters())


def test_corrupt_checkpoint_and_weights_fail_naming_the_file(tmp_path):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="ckpt.pt"):
        _train(_tiny(), bad)
    weights = tmp_path / "seed0" / "fundus.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="fundus.json"):  # no description beside it
        load_generator(weights, torch.device("cpu"))
    (tmp_path / "seed0" / "fundus.json").write_text('{"uvit": {"img_size": 8, "in_chans": 1, "patch_size": 4, '
                                                    '"dim": 16, "depth": 2, "heads": 2, "num_classes": 2}}')
    with pytest.raises(WeightsError, match="fundus.safetensors"):
        load_generator(weights, torch.device("cpu"))


def test_sampling_is_seeded_and_shaped():
    dc = _tiny()
    net = _net(dc, "class", None)
    conds = _conds(5, text=False)
    a = sample(net, dc.noise, dc.sample, (1, 8, 8), conds, torch.arange(5), torch.Generator().manual_seed(3),
               torch.device("cpu"))
    b = sample(net, dc.noise, dc.sample, (1, 8, 8), conds, torch.arange(5), torch.Generator().manual_seed(3),
               torch.device("cpu"))
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b) and torch.isfinite(a).all()


def _bank(classes: int = 2) -> pd.DataFrame:
    rows = []
    for k in range(classes):
        for i in range(3):
            for m in ("fundus", "oct"):
                rows.append({"bank": "train", "seed": 0, "label": k, "class_name": f"c{k}", "modality": m,
                             "sample_id": f"S{k}{i}", "t_mix": f"{m} caption of S{k}{i}"})
    return pd.DataFrame(rows)


def test_paired_synthesis_uses_one_source_sample_for_every_modality():
    sources = draw_sources(_bank(), [7, 5], ["fundus", "oct"], np.random.default_rng(0))
    assert len(sources) == 12 and sources["label"].value_counts().sort_index().tolist() == [7, 5]
    for _, row in sources.iterrows():
        assert row["fundus"] == f"fundus caption of {row['sample_id']}"
        assert row["oct"] == f"oct caption of {row['sample_id']}"
        assert row["sample_id"].startswith(f"S{row['label']}")


def test_a_bank_missing_a_class_fails_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bank = _bank()
    path = Path("data/captions/toy_bank.parquet")
    path.parent.mkdir(parents=True)
    bank[~((bank["label"] == 1) & (bank["modality"] == "oct"))].to_parquet(path)
    with pytest.raises(DataError, match="no oct caption of class 'c1'"):
        bank_rows("toy", "train", 0, ["c0", "c1"], ["fundus", "oct"])
    bank.to_parquet(path)
    assert len(bank_rows("toy", "train", 0, ["c0", "c1"], ["fundus", "oct"])) == 12


def test_channels_are_fitted_the_same_way_for_every_generator():
    from medrepro.vap.generator import fit_channels, to_uint8

    rgb = torch.tensor([[[[-1.0]], [[0.0]], [[1.0]]]])  # (1, 3, 1, 1)
    assert to_uint8(rgb, 1).tolist() == [[[[128]]]]  # the mean, 0 → 127.5 → 128
    gray = torch.full((1, 1, 1, 1), -1.0)
    assert to_uint8(gray, 3).tolist() == [[[[0, 0, 0]]]]
    hwc = torch.tensor([[[[10, 20, 30]]]], dtype=torch.uint8)  # GAN output (N, H, W, C)
    assert fit_channels(hwc, 1, -1).tolist() == [[[[20.0]]]]
    assert fit_channels(hwc[..., :1], 3, -1).tolist() == [[[[10, 10, 10]]]]
    with pytest.raises(ValueError, match="cannot map 3 image channels to 2"):
        fit_channels(hwc, 2, -1)


class _Oracle(torch.nn.Module):
    """Knows the clean image: returns the exact target of its ``prediction`` for any x_t."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor, prediction: str) -> None:
        super().__init__()
        self.x0, self.ac, self.prediction = x0, alphas_cumprod, prediction

    def forward(self, x, t, labels, ctx=None, mask=None):
        a = self.ac[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - self.ac[t]).sqrt().view(-1, 1, 1, 1)
        x0 = self.x0.repeat(len(x) // len(self.x0), 1, 1, 1)
        eps = (x - a * x0) / s
        out = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[self.prediction]
        return out, None


@pytest.mark.parametrize("sampler", ["dpmsolver++", "ddim"])
def test_every_parameterisation_samples_the_same_image(sampler):
    """With exact model outputs, ε, v and x_0 prediction take the sampler to the same image: the clean one for
    DPM-Solver++ (it ends at σ = 0); DDIM stops at the first training step's noise level, the same for all three."""
    from medrepro.vap.schedulers import training_scheduler

    dc = _tiny()
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    outs = {}
    for prediction in ("epsilon", "v_prediction", "sample"):
        noise = dataclasses.replace(dc.noise, prediction=prediction)
        cfg = dataclasses.replace(dc.sample, sampler=sampler, steps=10, thresholding=False)
        oracle = _Oracle(x0, training_scheduler(noise).alphas_cumprod, prediction)
        outs[prediction] = sample(oracle, noise, cfg, (1, 8, 8), _conds(3, text=False), torch.arange(3),
                                  torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.allclose(outs["v_prediction"], outs["epsilon"], atol=1e-4)
    assert torch.allclose(outs["sample"], outs["epsilon"], atol=1e-4)
    if sampler == "dpmsolver++":
        assert torch.allclose(outs["epsilon"], x0, atol=1e-4)


def test_training_targets_and_min_snr_weights():
    from medrepro.vap.schedulers import training_scheduler
    from medrepro.vap.train import snr_weights, target_of

    dc = _tiny()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    sched = training_scheduler(dataclasses.replace(dc.noise, prediction="v_prediction"))
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(target_of(sched, x0, eps, t), a * eps - (1 - a**2).sqrt() * x0, atol=1e-6)
    assert target_of(training_scheduler(dataclasses.replace(dc.noise, prediction="epsilon")), x0, eps, t) is eps
    assert target_of(training_scheduler(dataclasses.replace(dc.noise, prediction="sample")), x0, eps, t) is x0
    ac = sched.alphas_cumprod
    snr = ac / (1 - ac)
    assert snr_weights(ac, None, "epsilon") is None
    w = snr_weights(ac, 5.0, "epsilon")
    assert torch.allclose(w[snr <= 5], torch.ones(int((snr <= 5).sum()))) and (w[snr > 5] < 1).all()
    assert torch.allclose(snr_weights(ac, 5.0, "sample"), snr.clamp(max=5.0))
    assert torch.allclose(snr_weights(ac, 5.0, "v_prediction"), snr.clamp(max=5.0) / (snr + 1))
