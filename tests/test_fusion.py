"""Table 3 fusion baselines on EI's towers: shapes, one training run each, freezing, adapter state, registry."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import Tensor

from medrepro.errors import ParamsError
from medrepro.models.adapters import adapter_state_dict, apply_adapters, count_trainable
from medrepro.models.backbones import build_vit
from medrepro.models.fusion import (
    FUSION_METHODS,
    DynMMFusion,
    MMMILFusion,
    UniModel,
    build_fusion,
    register_fusion,
)

TOWER: dict[str, Any] = {
    "arch": "vit_tiny_patch16_224",
    "pretrained": False,
    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
}
C, B = 3, 4
BASE = re.compile(r"vit\.(patch_embed\.proj|pos_embed|cls_token|blocks\.\d+\.attn\.qkv|.*\.base\.)")


def make_batch(mods: list[str], seed: int = 0, slices: int | None = None) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (B, 3, 32, 32) if slices is None else (B, slices, 3, 32, 32)
    return {m: torch.randn(shape, generator=g) for m in mods}


def build(name: str, mods: list[str], method: str = "mor", **kw: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_fusion(name, TOWER, mods, C, method, **kw)


def test_registry() -> None:
    assert set(FUSION_METHODS) == {"concat", "mmmil", "raddiag", "mmrad", "unimodel", "sfusion", "dynmm"}
    assert FUSION_METHODS["mmmil"] is MMMILFusion and FUSION_METHODS["unimodel"] is UniModel
    with pytest.raises(ValueError, match="unknown fusion method 'nope'; choose one of concat, dynmm, mmmil") as err:
        build("nope", ["a", "b"])
    assert isinstance(err.value, ParamsError)  # a stage reports it as one message
    with pytest.raises(ValueError, match="already registered"):
        register_fusion("concat")(MMMILFusion)
    with pytest.raises(TypeError):
        FUSION_METHODS["x"] = MMMILFusion  # type: ignore[index]  # read-only


@pytest.mark.parametrize("name", sorted(FUSION_METHODS))
def test_baseline_trains_with_frozen_base(name: str) -> None:
    mods = ["a", "b"]
    model = build(name, mods).train()
    x, y = make_batch(mods), torch.tensor([0, 1, 2, 1])
    assert model(x).shape == (B, C)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if BASE.search(n)}
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = model.training_loss(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


@pytest.mark.parametrize("name", sorted(FUSION_METHODS))
def test_three_modalities_and_volumes(name: str) -> None:
    mods = ["a", "b", "c"]
    model = build(name, mods, multilabel=True).eval()
    x = make_batch(mods, slices=2)
    assert model(x).shape == (B, C)
    y = torch.randint(0, 2, (B, C)).float()
    assert torch.isfinite(model.training_loss(x, y))


def test_mmmil_mor_is_configuration() -> None:
    mods = ["a", "b"]
    mor, full = build("mmmil", mods, "mor"), build("mmmil", mods, "full")
    assert type(mor) is type(full) is MMMILFusion
    assert count_trainable(mor, exclude=()) < count_trainable(full, exclude=())
    assert all(p.requires_grad for p in full.parameters())
    feats = mor.encode(make_batch(mods))
    assert feats.shape == (B, 2, 64)
    assert torch.allclose(mor.weights(feats).sum(1), torch.ones(B))


def test_vpt_prompts_are_used() -> None:
    model = build("concat", ["a", "b"], "vpt")
    model.training_loss(make_batch(["a", "b"]), torch.tensor([0, 1, 2, 1])).backward()
    prompts = [p for n, p in model.named_parameters() if n.endswith("prompts")]
    assert len(prompts) == 2 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompts)


def test_adapter_state_loads_without_head() -> None:
    torch.manual_seed(1)
    vit = apply_adapters(build_vit(dict(TOWER, num_classes=C)), "mor")
    with torch.no_grad():
        for p in vit.parameters():
            if p.requires_grad:
                p.normal_()
    state = adapter_state_dict(vit)
    model = build("concat", ["a", "b"], adapter_state={"a": state, "b": state})
    got = model.towers["b"].vit.blocks[1].mlp.fc2.experts[2].lora_B
    assert torch.equal(got, state["blocks.1.mlp.fc2.experts.2.lora_B"])
    uni = build("unimodel", ["a", "b"], adapter_state={"unimodel": state})
    assert torch.equal(uni.tower.vit.blocks[0].mlp.fc1.router.weight, state["blocks.0.mlp.fc1.router.weight"])
    with pytest.raises(ValueError, match="one tower"):
        build("unimodel", ["a", "b"], adapter_state={"a": state, "b": state})


def test_unimodel_one_sequence() -> None:
    model = build("unimodel", ["a", "b"]).eval()
    assert isinstance(model, UniModel) and sum(1 for _ in model.modules() if hasattr(_, "tokens")) == 1
    x = make_batch(["a", "b"])
    with torch.no_grad():
        assert not torch.allclose(model(x), model(dict(x, b=torch.randn(B, 3, 32, 32))))  # b's patches are attended
    with pytest.raises(ValueError, match="same number of slices"):
        model({"a": x["a"], "b": x["b"].unsqueeze(1)})


def test_unimodel_mor_param_count_matches_table3() -> None:
    # Table 3 Params (M): UniModel 1.5 (one MoR-adapted ViT-B/16 + head)
    with torch.device("meta"):
        model = build_fusion("unimodel", {"arch": "vit_base_patch16_clip_224"}, ["cfp", "oct"], 4, "mor")
    assert round(count_trainable(model, exclude=()) / 1e6, 1) == 1.5


def test_sfusion_modal_attention_is_a_convex_combination() -> None:
    model = build("sfusion", ["a", "b", "c"]).eval()
    feats = model.encode(make_batch(["a", "b", "c"]))
    z = model.encoder(feats + model.modality_embed)
    w = model.weights(z)
    assert w.shape == z.shape and torch.allclose(w.sum(1), torch.ones_like(w[:, 0]))
    fused = model.head(model.norm((w * z).sum(1)))
    assert torch.allclose(fused, model(make_batch(["a", "b", "c"])), atol=1e-6)


def test_dynmm_selects_one_expert_and_pays_for_fusion() -> None:
    mods = ["a", "b"]
    model = build("dynmm", mods)
    x = make_batch(mods)
    feats = model.encode(x)
    for mode in (model.train, model.eval):
        mode()
        g = model.select(feats)
        assert g.shape == (B, 3) and torch.equal(g.sum(1), torch.ones(B)) and set(g.unique().tolist()) <= {0.0, 1.0}
    model.eval()
    expected = (model.select(feats).unsqueeze(-1) * model._expert_logits(feats)).sum(1)
    assert torch.allclose(model(x), expected)
    model.train()
    torch.manual_seed(1)
    free = DynMMFusion.training_loss(model, x, torch.tensor([0, 1, 2, 1]))
    model.resource_weight = 10.0
    torch.manual_seed(1)
    costly = DynMMFusion.training_loss(model, x, torch.tensor([0, 1, 2, 1]))
    assert costly >= free + 10.0 / 2 - 0.01 - 1e-4  # every expert costs >= 1/M
