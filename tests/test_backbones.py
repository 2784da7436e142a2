"""EI image towers: ViTTower = timm forward, [INT] insertion, [CLS] per layer, weight loading, padding."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from medrepro.errors import ParamsError, WeightsError
from medrepro.models.backbones import (
    CLIP_MEAN,
    CLIP_STD,
    ViTTower,
    build_vit,
    input_size_for,
    normalization,
    pad_to_multiple,
)

TINY = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}
VARIANTS: dict[str, dict[str, Any]] = {
    "vit": {},
    "clip_prenorm": {"pre_norm": True, "class_token": True},  # vit_base_patch16_clip_224 class settings
    "dinov2_reg": {"reg_tokens": 4, "no_embed_class": True},  # reg4_dinov2 layout (no layer-scale)
}


def tiny_cfg(variant: str = "vit", **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "arch": "vit_tiny_patch16_224",
        "img_size": 32,
        "pretrained": False,
        "weights": None,
        "kwargs": {**TINY, **VARIANTS[variant]},
        "num_classes": 5,
    }
    cfg.update(over)
    return cfg


def tiny(variant: str = "vit", seed: int = 0, **over: Any) -> VisionTransformer:
    torch.manual_seed(seed)
    return build_vit(tiny_cfg(variant, **over)).eval()


def images(n: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tower_equals_timm_forward(variant: str) -> None:
    # pins timm's forward decomposition: a timm change that breaks it must fail here
    m = tiny(variant)
    tower = ViTTower(m).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(tower(x), m(x))
        assert torch.equal(tower.features(x), m.forward_head(m.forward_features(x), pre_logits=True))
        final, cls = tower.forward_blocks(tower.tokens(x))
        assert torch.equal(m.norm(final), m.forward_features(x))
        assert cls is not None and torch.equal(cls, final[:, 0])
    assert tower.embed_dim == 64 and tower.depth == 2
    assert tower.num_prefix_tokens == (5 if variant == "dinov2_reg" else 1)
    assert tower.tokens(x).shape == (3, 16 + tower.num_prefix_tokens, 64)


@pytest.mark.parametrize("variant", ["vit", "dinov2_reg"])
@pytest.mark.parametrize("insert_at", [0, 1])
def test_extra_tokens_change_cls_and_are_removed(variant: str, insert_at: int) -> None:
    tower = ViTTower(tiny(variant)).eval()
    x = images()
    extra = torch.randn(3, 2, 64)
    with torch.no_grad():
        tok = tower.tokens(x)
        base, base_cls = tower.forward_blocks(tok)
        out, cls = tower.forward_blocks(tok, extra=extra, insert_at=insert_at)
        assert out.shape == base.shape == tok.shape
        assert cls is not None and base_cls is not None
        assert not torch.allclose(cls, base_cls, atol=1e-5)
        assert not torch.allclose(tower.features(x, extra, insert_at), tower.features(x), atol=1e-5)
        # each sample's [INT] only affects that sample
        out1, _ = tower.forward_blocks(tok[:1], extra=extra[:1], insert_at=insert_at)
        assert torch.allclose(out1, out[:1], atol=1e-5)


def test_extra_tokens_enter_after_registers_and_patches() -> None:
    tower = ViTTower(tiny("dinov2_reg")).eval()
    x, extra = images(2), torch.randn(2, 1, 64)
    with torch.no_grad():
        tok = tower.tokens(x)
        manual = torch.cat([tok, extra], dim=1)
        for blk in tower.vit.blocks:
            manual = blk(manual)
        out, _ = tower.forward_blocks(tok, extra=extra, insert_at=0)
    assert torch.equal(out, manual[:, : tok.shape[1]])


def test_cls_at_matches_manual_block_run() -> None:
    tower = ViTTower(tiny("clip_prenorm")).eval()
    x, extra = images(), torch.randn(3, 1, 64)
    with torch.no_grad():
        z = tower.tokens(x)
        z0 = z
        z = tower.vit.blocks[0](torch.cat([z, extra], dim=1))
        cls1 = z[:, 0]
        cls2 = tower.vit.blocks[1](z)[:, 0]
        assert torch.equal(tower.forward_blocks(z0, extra, 0, cls_at=1)[1], cls1)
        assert torch.equal(tower.forward_blocks(z0, extra, 0, cls_at=2)[1], cls2)
        assert torch.equal(tower.forward_blocks(z0, extra, 0, cls_at=None)[1], cls2)
        assert torch.equal(tower.forward_blocks(z0, cls_at=0)[1], z0[:, 0])
    with pytest.raises(ValueError):
        tower.forward_blocks(z0, cls_at=3)
    with pytest.raises(ValueError):
        tower.forward_blocks(z0, extra, insert_at=2)
    with pytest.raises(ValueError, match="extra tokens"):
        tower.forward_blocks(z0, torch.randn(1, 1, 64))


def test_grad_checkpointing_gives_same_output() -> None:
    m = tiny()
    tower = ViTTower(m).eval()
    x, extra = images(), torch.randn(3, 1, 64)
    ref = tower(x, extra)
    m.set_grad_checkpointing(True)
    out = tower(x, extra)
    out.sum().backward()
    assert torch.allclose(out, ref, atol=1e-6) and m.cls_token.grad is not None


def test_slices_as_batch() -> None:
    tower = ViTTower(tiny()).eval()
    b, s = 2, 4
    vol = torch.randn(b, s, 3, 32, 32)
    intv = torch.randn(b, 1, 64)
    with torch.no_grad():
        feats = tower.features(vol.flatten(0, 1), intv.repeat_interleave(s, 0)).view(b, s, -1)
        assert torch.allclose(feats[1, 2], tower.features(vol[1, 2:3], intv[1:2])[0], atol=1e-5)


def _save(model: torch.nn.Module, path: Path) -> Path:
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_load_from_file(tmp_path: Path, suffix: str) -> None:
    src = tiny("dinov2_reg", seed=3)
    path = _save(src, tmp_path / f"w{suffix}")
    loaded = build_vit(tiny_cfg("dinov2_reg", pretrained=True, weights=str(path)))
    for (k, a), (_, b) in zip(src.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k  # head kept: num_classes matches the file
    # a feature extractor (num_classes 0) keeps every weight except the head
    feat = build_vit(tiny_cfg("dinov2_reg", pretrained=True, weights=str(path), num_classes=0))
    assert isinstance(feat.head, torch.nn.Identity)
    assert torch.equal(feat.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    # a different class count gets a fresh head and the backbone from the file
    other = build_vit(tiny_cfg("dinov2_reg", pretrained=True, weights=str(path), num_classes=3))
    assert other.head.weight.shape == (3, 64)
    assert torch.equal(other.reg_token, src.reg_token)


@pytest.mark.parametrize("variant", ["vit", "dinov2_reg"])
def test_weights_pos_embed_resampled(tmp_path: Path, variant: str) -> None:
    src = tiny(variant, seed=4)
    path = _save(src, tmp_path / "w.safetensors")
    big = build_vit(tiny_cfg(variant, pretrained=True, weights=str(path), img_size=48))
    prefix = 0 if variant == "dinov2_reg" else 1
    assert big.pos_embed.shape == (1, 36 + prefix, 64)  # 6x6 grid (+CLS) from a 4x4 grid
    resampled = resample_abs_pos_embed(src.pos_embed.detach(), [6, 6], num_prefix_tokens=prefix)
    assert torch.equal(big.pos_embed.detach(), resampled)  # bicubic from the file, not a random init
    assert torch.equal(big.pos_embed[:, :prefix], src.pos_embed[:, :prefix])
    assert torch.equal(big.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert torch.equal(big.head.weight, src.head.weight)
    with torch.no_grad():
        assert ViTTower(big.eval())(images(size=48)).shape == (3, 5)


def test_weights_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match="nope.safetensors") as err:
        build_vit(tiny_cfg(pretrained=True, weights=str(path)))
    assert "vit_tiny_patch16_224" in str(err.value)


def test_weights_wrong_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    wide = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=5, **{**TINY, "embed_dim": 96})
    path = _save(wide, tmp_path / "wide.safetensors")
    with pytest.raises(WeightsError, match="wide.safetensors"):
        build_vit(tiny_cfg(pretrained=True, weights=str(path)))
    deep = _save(tiny(seed=0, kwargs={**TINY, "depth": 1}), tmp_path / "shallow.pth")
    for num_classes in (5, 0):  # with the head kept (strict) and with a new head (timm loads non-strict)
        with pytest.raises(WeightsError, match="shallow.pth"):
            build_vit(tiny_cfg(pretrained=True, weights=str(deep), num_classes=num_classes))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        build_vit(tiny_cfg(pretrained=True, weights=str(junk)))


def test_weights_hub_failure_names_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models._builder as builder

    def offline(*args: Any, **kwargs: Any) -> None:
        raise OSError("offline")

    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    with pytest.raises(WeightsError, match="timm/vit_tiny_patch16_224"):
        build_vit(tiny_cfg(pretrained=True, weights="hub"))


def test_params_errors() -> None:
    with pytest.raises(ParamsError, match="arch"):
        build_vit({"arch": "no_such_vit"})
    with pytest.raises(ParamsError, match="pretrained"):
        build_vit(tiny_cfg(weights="/x.safetensors"))
    with pytest.raises(ParamsError, match="img_size"):
        build_vit(tiny_cfg(kwargs={**TINY, "img_size": 64}))


def test_pad_to_multiple() -> None:
    x = torch.ones(2, 3, 512, 256)
    y = pad_to_multiple(x, 14)
    assert y.shape == (2, 3, 518, 266)
    assert torch.equal(y[..., :512, :256], x)
    assert y[..., 512:, :].abs().sum() == 0 and y[..., :, 256:].abs().sum() == 0
    assert pad_to_multiple(y, 14) is y
    assert pad_to_multiple(torch.ones(1, 3, 448, 448), 14).shape[-2:] == (448, 448)


def test_input_size_and_padding_in_tower() -> None:
    dino = {"arch": "vit_base_patch14_reg4_dinov2.lvd142m"}
    clip = {"arch": "vit_base_patch16_clip_224.openai"}
    assert [input_size_for({**dino, "img_size": s}) for s in (448, 512, 256)] == [448, 518, 266]
    assert [input_size_for({**clip, "img_size": s}) for s in (448, 512, 256)] == [448, 512, 256]
    assert input_size_for(dino) == 518
    m = tiny(img_size=28)  # patch 8 → built at 32
    assert m.patch_embed.img_size == (32, 32)
    tower = ViTTower(m).eval()
    x = images(size=28)
    with torch.no_grad():
        assert torch.equal(tower(x), m(pad_to_multiple(x, 8)))


def test_normalization_is_clip_for_all() -> None:
    archs = ("vit_base_patch16_clip_224.openai", "vit_base_patch14_dinov2.lvd142m", "vit_tiny_patch16_224")
    for arch in archs:
        assert normalization({"arch": arch}) == (CLIP_MEAN, CLIP_STD)
    mean, _ = normalization({"arch": "vit_base_patch14_dinov2.lvd142m", "normalize": "timm"})
    assert mean == pytest.approx((0.485, 0.456, 0.406))


def test_every_path_of_a_built_vit_pads_to_the_patch() -> None:
    # pre-adaptation and EI Table 7 call timm's own forward: a 28-px image must reach a patch-8 ViT built at 32 px
    m = tiny(img_size=28)
    x = images(size=28)
    with torch.no_grad():
        assert torch.equal(m(x), m(pad_to_multiple(x, 8)))
        assert torch.equal(m.forward_features(x), m.forward_features(pad_to_multiple(x, 8)))
        assert torch.equal(copy.deepcopy(m)(x), m(x))  # EI deep-copies its towers: the padding goes along
    assert len(ViTTower(m).vit.patch_embed._forward_pre_hooks) == 1  # idempotent


def test_dinov2_patch_14_pads_512_px_in_timm_forward() -> None:
    m = build_vit({"arch": "vit_base_patch14_dinov2.lvd142m", "img_size": 40, "num_classes": 2,
                   "kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2}})
    assert m.patch_embed.img_size == (42, 42) and m.patch_embed.patch_size == (14, 14)
    with torch.no_grad():
        assert m(images(2, size=40)).shape == (2, 2)


def test_a_pretrained_patch_is_never_resized(tmp_path: Path) -> None:
    # the hub's weights have the arch's patch: another kwargs.patch_size is a params error naming the key
    with pytest.raises(ParamsError, match=r"kwargs.patch_size=16 differs from the pretrained weights' patch 14"):
        build_vit({"arch": "vit_base_patch14_dinov2.lvd142m", "pretrained": True, "kwargs": {"patch_size": 16}})
    # a file whose patch embedding differs from the model's: an error naming the file, not a resampled kernel
    path = _save(tiny(seed=5), tmp_path / "patch8.safetensors")
    cfg = tiny_cfg(pretrained=True, weights=str(path), kwargs={**TINY, "patch_size": 4})
    with pytest.raises(WeightsError, match=r"patch embedding is 8 px, the model's 4 px.*patch8\.safetensors"):
        build_vit(cfg)
    # kwargs.patch_size null: the arch's own (no error for a tower that is not pretrained, any patch allowed)
    assert build_vit({"arch": "vit_tiny_patch16_224", "img_size": 32,
                      "kwargs": {"patch_size": None, "depth": 1}}).patch_embed.patch_size == (16, 16)
