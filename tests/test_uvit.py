"""U-ViT denoiser and VAP-Diffusion's PCM (Sec. 2.4): shapes, long skips, zero-init injection, masks, L_recon."""

from __future__ import annotations

import pytest
import torch

from medrepro.errors import ParamsError
from medrepro.models.uvit import UViT, UViTConfig

PIXEL = dict(img_size=32, in_chans=3, patch_size=4, dim=96, depth=5, heads=4)
LATENT = dict(img_size=8, in_chans=4, patch_size=2, dim=32, depth=4, heads=2)
TEXT = dict(context_dim=12, context_len=6)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, **kw) -> UViT:
    torch.manual_seed(seed)
    return UViT(UViTConfig(**kw)).eval()


def _inputs(cfg: UViTConfig, b: int = 3, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = dict(x=torch.randn(b, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g),
               timesteps=torch.randint(0, 1000, (b,), generator=g))
    if cfg.num_classes:
        out["labels"] = torch.arange(b) % (cfg.num_classes + 1)  # the last row is the null class
    if cfg.context_dim:
        out["context"] = torch.randn(b, cfg.context_len, cfg.context_dim, generator=g)
        out["context_mask"] = torch.arange(cfg.context_len)[None] < torch.tensor([[2], [6], [0]])[:b]
    return out


@pytest.mark.parametrize("base", [PIXEL, LATENT], ids=["pixel3x32", "latent4x8"])
@pytest.mark.parametrize("cond", [{}, dict(num_classes=3), dict(num_classes=3, **TEXT), TEXT], ids=str)
def test_output_shapes(base: dict, cond: dict) -> None:
    model = _model(**base, **cond)
    inp = _inputs(model.cfg)
    with torch.no_grad():
        eps, recon = model(**inp)
    assert eps.shape == inp["x"].shape and recon is None
    assert torch.isfinite(eps).all()
    assert model.pos_embed.shape[1] == 1 + int("num_classes" in cond) + model.cfg.context_len + model.cfg.num_patches


def test_blocks_follow_uvit_depth_convention() -> None:
    for depth, n in ((5, 2), (4, 2), (13, 6), (16, 8)):
        model = UViT(UViTConfig(**dict(LATENT, depth=depth, dim=8)))
        assert len(model.in_blocks) == len(model.out_blocks) == n
        assert all(b.skip_linear is None for b in [*model.in_blocks, model.mid_block])
        assert all(b.skip_linear.in_features == 16 and b.skip_linear.out_features == 8 for b in model.out_blocks)


def test_each_out_block_fuses_its_matching_in_block() -> None:
    """Out-block i gets cat[h, in-block (n-1-i)'s output] into its skip Linear (U-ViT's long skips)."""
    model = _model(**PIXEL, num_classes=2, **TEXT)
    outs: list[torch.Tensor] = []
    fused: list[tuple[torch.Tensor, torch.Tensor]] = []
    for blk in model.in_blocks:
        blk.register_forward_hook(lambda m, a, out: outs.append(out))
    for blk in model.out_blocks:
        blk.register_forward_pre_hook(lambda m, a, kw: fused.append((a[0], a[1])), with_kwargs=True)
        blk.skip_linear.register_forward_pre_hook(lambda m, a: fused.append(a[0]))
    with torch.no_grad():
        model(**_inputs(model.cfg))
    n = len(model.in_blocks)
    assert len(outs) == n and len(fused) == 2 * n
    for i in range(n):
        (h, skip), cat = fused[2 * i], fused[2 * i + 1]
        assert skip is outs[n - 1 - i]
        assert torch.equal(cat, torch.cat([h, outs[n - 1 - i]], dim=-1))


def test_context_mask_hides_padding() -> None:
    model = _model(**PIXEL, num_classes=2, pcm=True, **TEXT)
    for p in model.pcm.parameters():  # make the injection live so PCM's path is covered too
        torch.nn.init.normal_(p, std=0.05)
    inp = _inputs(model.cfg)
    other = dict(inp, context=inp["context"].clone())
    other["context"][~inp["context_mask"]] = 7.0
    with torch.no_grad():
        eps, recon = model(**inp)
        eps2, recon2 = model(**other)
        eps3, _ = model(**dict(inp, context_mask=None))
    torch.testing.assert_close(eps2, eps, rtol=0, atol=1e-5)
    torch.testing.assert_close(recon2, recon, rtol=0, atol=1e-6)
    assert not torch.allclose(eps3, eps, atol=1e-3)  # the mask matters: padding seen when unmasked


def test_pcm_is_exactly_inert_at_init() -> None:
    cfg = dict(PIXEL, num_classes=3, **TEXT)
    pcm = _model(seed=5, **cfg, pcm=True, pcm_self_attn=True)
    plain = UViT(UViTConfig(**cfg)).eval()
    missing, unexpected = plain.load_state_dict(pcm.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("pcm.") for k in unexpected)
    inp = _inputs(pcm.cfg)
    with torch.no_grad():
        eps_pcm, recon = pcm(**inp)
        eps_plain, _ = plain(**inp)
    assert torch.equal(eps_pcm, eps_plain)
    assert recon is not None and recon.ndim == 0


@pytest.mark.parametrize("target", ["query", "features"])
def test_pcm_recon_loss_trains_prototypes_and_null_rows(target: str) -> None:
    model = _model(**LATENT, num_classes=2, pcm=True, pcm_target=target, pcm_tokens=5).train()
    assert model.pcm.prototypes.weight.shape == (3, 5 * 32)  # K + 1 rows: the null class has its own prototype
    inp = _inputs(model.cfg, b=3)
    inp["labels"] = torch.tensor([0, model.null_class, model.null_class])
    eps, recon = model(**inp)
    assert torch.isfinite(eps).all() and torch.isfinite(recon) and recon > 0
    (eps.square().mean() + recon).backward()
    grad = model.pcm.prototypes.weight.grad
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0  # class 0 and the null class were used
    assert grad[1].abs().sum() == 0  # class 1 was not
    assert model.pcm.cross_out.weight.grad.abs().sum() > 0  # the zero-initialised injection starts learning
    with torch.no_grad():  # labels=None means the null class
        eps_none, _ = model(**dict(inp, labels=None))
        eps_null, _ = model(**dict(inp, labels=torch.full((3,), model.null_class)))
    torch.testing.assert_close(eps_none, eps_null)


def test_upstream_pcm_variant_without_label_token() -> None:
    model = _model(**LATENT, num_classes=2, label_token=False, pcm=True, **TEXT)
    assert model.label_emb is None and model.extras == 1 + TEXT["context_len"]
    eps, recon = model(**_inputs(model.cfg))
    assert eps.shape == (3, 4, 8, 8) and recon is not None


def test_config_and_input_errors() -> None:
    with pytest.raises(ParamsError, match="patch_size"):
        UViTConfig(**dict(PIXEL, patch_size=5))
    with pytest.raises(ParamsError, match="pcm"):
        UViTConfig(**PIXEL, pcm=True)
    with pytest.raises(ParamsError, match="context_len"):
        UViTConfig(**PIXEL, context_dim=8)
    cfg = UViTConfig(**LATENT, num_classes=2)
    assert cfg.as_dict()["num_classes"] == 2 and UViTConfig(**cfg.as_dict()) == cfg
    model = UViT(cfg)
    with pytest.raises(ValueError, match="labels"):
        model(torch.zeros(1, 4, 8, 8), torch.zeros(1), labels=torch.tensor([3]))
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 4, 8, 8), torch.zeros(1), context=torch.zeros(1, 2, 3))
