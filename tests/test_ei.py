"""EI network (Sec. 3, Algorithm 1): shapes, [INT] path, slices, losses (Eq. 5–8), gradients, adapter-state loading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from medrepro.models.adapters import (
    AdapterStateError,
    adapter_state_dict,
    apply_adapters,
    count_trainable,
    load_adapter_state_dict,
)
from medrepro.models.backbones import ViTTower, build_vit
from medrepro.models.ei import EINetwork, build_ei, classification_loss

TOWER: dict[str, Any] = {
    "arch": "vit_tiny_patch16_224",
    "pretrained": False,
    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
}
C, B = 3, 2
MODS = ["a", "b", "c"]
BASE_FROZEN = re.compile(r"(patch_embed\.proj|pos_embed|cls_token|attn\.qkv|\.base\.)")


def make_batch(mods: list[str], seed: int = 0, slices: int | None = None) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (B, 3, 32, 32) if slices is None else (B, slices, 3, 32, 32)
    return {m: torch.randn(shape, generator=g) for m in mods}


def random_state(seed: int = 0) -> dict[str, Tensor]:
    """MoR adapter state with every trainable tensor random (so MoR is not the identity)."""
    torch.manual_seed(seed)
    vit = apply_adapters(build_vit(dict(TOWER, num_classes=C)), "mor")
    with torch.no_grad():
        for p in vit.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    return adapter_state_dict(vit)


def ei(mods: list[str], seed: int = 0, state: bool = True, **options: Any) -> EINetwork:
    torch.manual_seed(seed)
    adapter_state = {m: random_state(i) for i, m in enumerate(mods)} if state else None
    options.setdefault("modality_prior", [0.5] * (len(mods) - 1) + [0.9])
    return build_ei(TOWER, mods, C, adapter_state=adapter_state, **options)


@pytest.fixture(scope="module")
def weights_cfg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(7)
    path: Path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_file(build_vit(TOWER).state_dict(), str(path))
    return dict(TOWER, pretrained=True, weights=str(path))


# --- shapes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3])
def test_forward_shapes(m: int) -> None:
    mods = MODS[:m]
    model = ei(mods, state=False).eval()
    x = make_batch(mods)
    out = model.forward_all(x)
    assert out.fused.shape == (B, C) and out.gate.shape == (B, m)
    assert set(out.primary) == set(out.auxiliary) == set(mods)
    assert all(v.shape == (B, C) for v in [*out.primary.values(), *out.auxiliary.values()])
    assert torch.allclose(out.gate.sum(1), torch.ones(B))
    fused = sum(out.gate[:, i : i + 1] * out.primary[t] for i, t in enumerate(mods))  # Eq. 3
    assert torch.allclose(out.fused, fused, atol=1e-6)
    assert torch.allclose(model(x), out.fused)
    assert sum(len(d) for d in model.int_adapters.values()) == m * (m - 1)  # one adapter per ordered pair
    assert model.gate.in_features == 64 * m


@pytest.mark.parametrize("aux_pool", ["mean", "max"])
def test_volume_inputs_pool_slices(aux_pool: str) -> None:
    model = ei(MODS, multilabel=True, aux_slice_pool=aux_pool).eval()
    x = make_batch(MODS, slices=3)
    out = model.forward_all(x)
    assert out.fused.shape == (B, C) and out.gate.shape == (B, 3)
    with torch.no_grad():  # auxiliary: aux_pool over slice features; primary: [INT] repeated per slice, mean
        per_slice = {m: model.auxiliary[m].features(x[m].flatten(0, 1)).view(B, 3, -1) for m in MODS}
        aux_feat = {m: f.mean(1) if aux_pool == "mean" else f.amax(1) for m, f in per_slice.items()}
        for m in MODS:
            assert torch.allclose(out.auxiliary[m], model.auxiliary[m].vit.head(aux_feat[m]), atol=1e-5)
        ints = torch.stack([model.int_adapters["a"][r](aux_feat[r]) for r in ("b", "c")], 1)
        tower = model.primary["a"]
        feat = tower.features(x["a"].flatten(0, 1), ints.repeat_interleave(3, 0)).view(B, 3, -1).mean(1)
        assert torch.allclose(out.primary["a"], tower.vit.head(feat), atol=1e-5)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.isfinite(model.training_loss(x, y))


@pytest.mark.parametrize(("insert_layer", "int_layer"), [(0, None), (1, None), (0, 1), (1, 1)])
def test_insert_and_int_layers(insert_layer: int, int_layer: int | None) -> None:
    model = ei(MODS[:2], insert_layer=insert_layer, int_layer=int_layer).eval()
    x = make_batch(MODS[:2])
    out = model(x)
    assert out.shape == (B, C) and torch.isfinite(out).all()
    model.insert_layer = 1 - insert_layer  # Table 4 (right): the layer where [INT] enters matters
    assert not torch.allclose(model(x), out)
    model.insert_layer, model.int_layer = insert_layer, 3 - model.int_layer  # Table 4 (left): acquisition layer
    assert not torch.allclose(model(x), out)


def test_bad_layers_and_inputs() -> None:
    for kw in ({"insert_layer": 2}, {"int_layer": 0}, {"int_layer": 3}, {"gate_prior": "x"}, {"aux_slice_pool": "x"}):
        with pytest.raises(ValueError):
            ei(MODS[:2], state=False, **kw)
    with pytest.raises(ValueError, match="one per modality"):
        ei(MODS[:2], state=False, modality_prior=[1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=">= 2 modalities"):
        build_ei(TOWER, ["a"], C)
    model = ei(MODS[:2], state=False)
    with pytest.raises(KeyError, match="lacks modalities"):
        model({"a": torch.zeros(B, 3, 32, 32)})
    with pytest.raises(ValueError, match="separate copies"):
        EINetwork(dict(model.auxiliary), dict(model.auxiliary), C)


# --- the [INT] path ------------------------------------------------------------------------------------------


def test_reference_image_steers_target_through_int() -> None:
    model = ei(MODS[:2]).eval()
    x = make_batch(MODS[:2])
    x2 = dict(x, b=torch.randn(B, 3, 32, 32))  # only the reference modality changes
    with torch.no_grad():
        o1, o2 = model.forward_all(x), model.forward_all(x2)
        assert torch.equal(o1.auxiliary["a"], o2.auxiliary["a"])
        assert not torch.allclose(o1.primary["a"], o2.primary["a"])  # Eq. 2: [INT] from b changes a's features
        model.use_int = False
        assert torch.equal(model.forward_all(x).primary["a"], model.forward_all(x2).primary["a"])
        model.use_int = True
        last = model.int_adapters["a"]["b"][-1]  # zero adapter output: [INT] no longer depends on b
        last.weight.zero_()
        last.bias.zero_()
        assert torch.allclose(model.forward_all(x).primary["a"], model.forward_all(x2).primary["a"], atol=1e-6)


# --- losses ----------------------------------------------------------------------------------------------------


def test_loss_is_eq8_and_gating_loss_uses_prior() -> None:
    mods = MODS[:2]
    model = ei(mods, modality_prior=[1.0, 0.0]).eval()
    x, y = make_batch(mods), torch.tensor([0, 2])
    total = model.training_loss(x, y)
    p1 = model.last_loss_parts
    out = model.forward_all(x)
    assert torch.allclose(p1["fused"], F.cross_entropy(out.fused, y))  # Eq. 5
    assert torch.allclose(p1["primary"], sum(F.cross_entropy(out.primary[m], y) for m in mods))
    assert torch.allclose(p1["aux"], sum(F.cross_entropy(out.auxiliary[m], y) for m in mods))  # Eq. 6
    assert torch.allclose(p1["gate"], -out.gate[:, 0].log().mean())  # Eq. 7, π = one-hot on modality a
    assert torch.allclose(total, p1["fused"] + p1["primary"] + 0.3 * p1["aux"] + 0.1 * p1["gate"])  # Eq. 8

    model.set_prior({"a": 0.2, "b": 0.7})  # best modality is now b
    model.training_loss(x, y)
    p2 = model.last_loss_parts
    assert torch.allclose(p2["gate"], -out.gate[:, 1].log().mean())
    assert not torch.allclose(p2["gate"], p1["gate"]) and not torch.allclose(p2["total"], p1["total"])
    assert all(torch.equal(p1[k], p2[k]) for k in ("fused", "primary", "aux"))

    model.prior_onehot = False  # soft prior: normalised scores
    model.set_prior([1.0, 3.0])
    model.training_loss(x, y)
    soft = -(0.25 * out.gate[:, 0].log() + 0.75 * out.gate[:, 1].log()).mean()
    assert torch.allclose(model.last_loss_parts["gate"], soft)

    model.lambda_ag, model.prior = 0.0, None  # λ2 = 0 removes L_ag (and π is not needed)
    total0 = model.training_loss(x, y)
    assert torch.allclose(total0, p1["fused"] + p1["primary"] + 0.3 * p1["aux"])
    model.lambda_ag = 0.1
    with pytest.raises(ValueError, match="prior"):
        model.training_loss(x, y)


def test_authors_gate_variants() -> None:
    mods = MODS[:2]
    x, y = make_batch(mods), torch.tensor([1, 0])
    model = ei(mods, gate_prior="authors", modality_prior=None).eval()
    model.training_loss(x, y)
    out = model.forward_all(x)
    last = torch.full((B,), 1, dtype=torch.long)  # prior_gaps [1, 1e-3]: the last modality wins
    assert torch.allclose(model.last_loss_parts["gate"], F.nll_loss(out.gate.log(), last))
    model.gate_double_softmax = True  # commit 29c021f: CE on already-softmaxed gates
    model.training_loss(x, y)
    assert torch.allclose(model.last_loss_parts["gate"], F.cross_entropy(out.gate, last))


def test_multilabel_uses_bce() -> None:
    logits, y = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    assert torch.allclose(classification_loss(logits, y, True), F.binary_cross_entropy_with_logits(logits, y))
    assert classification_loss(logits, y, True, reduction="none").shape == (4,)
    onehot = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    assert torch.allclose(classification_loss(logits, onehot, False), F.cross_entropy(logits, onehot.argmax(1)))


# --- gradients -----------------------------------------------------------------------------------------------


def test_gradients_reach_adapters_int_heads_gate_not_base() -> None:
    model = ei(MODS[:2]).train()
    model.training_loss(make_batch(MODS[:2]), torch.tensor([0, 1])).backward()
    named = dict(model.named_parameters())
    for name, p in named.items():
        assert (p.grad is not None) == p.requires_grad, name
        if BASE_FROZEN.search(name):
            assert not p.requires_grad, name
    want = r"(lora_[AB]|router\.weight|int_adapters\..*|vit\.head\.weight|^gate\.weight)$"
    trained = [n for n in named if re.search(want, n)]
    assert any(n.startswith("auxiliary.") for n in trained) and any(n.startswith("primary.") for n in trained)
    assert any(n.startswith("int_adapters.") for n in trained)
    for name in trained:
        assert named[name].grad.abs().sum() > 0, name


def test_detach_options() -> None:
    x, y = make_batch(MODS[:2]), torch.tensor([0, 1])
    aux_param = "auxiliary.b.vit.blocks.0.mlp.fc1.experts.0.lora_B"
    for detach in (False, True):
        model = ei(MODS[:2], detach_fusion=detach, detach_int=detach)
        out = model.forward_all(x)
        F.cross_entropy(out.fused, y).backward(retain_graph=True)  # the fused loss alone
        named = dict(model.named_parameters())
        assert named["gate.weight"].grad is not None
        assert (named["primary.a.vit.head.weight"].grad is None) == detach  # authors: trains only the gate
        model.zero_grad(set_to_none=True)
        F.cross_entropy(out.primary["a"], y).backward()  # primary loss of target a
        assert (named[aux_param].grad is None) == detach  # detach_int cuts the reference [CLS]


# --- adapter state ------------------------------------------------------------------------------------------


def test_adapter_state_loaded_into_both_copies(weights_cfg: dict[str, Any]) -> None:
    state = random_state(3)
    model = build_ei(weights_cfg, MODS[:2], C, adapter_state={"a": state, "b": state}, modality_prior=[1, 0]).eval()
    ref = apply_adapters(build_vit(dict(weights_cfg, num_classes=C)), "mor")
    load_adapter_state_dict(ref, state)
    ref_tower = ViTTower(ref).eval()
    x = make_batch(["a"])["a"]
    with torch.no_grad():
        for m in MODS[:2]:
            assert torch.allclose(model.auxiliary[m](x), ref_tower(x), atol=1e-6)  # incl. the unimodal head
            assert torch.allclose(model.primary[m].features(x), ref_tower.features(x), atol=1e-6)
            assert not torch.equal(model.primary[m].vit.head.weight, state["head.weight"])  # re-initialised
    assert (
        model.auxiliary["a"].vit.blocks[0].mlp.fc1.router.weight
        is not model.primary["a"].vit.blocks[0].mlp.fc1.router.weight
    )
    tower_state = {f"vit.{k}": v for k, v in state.items()}  # saved from a ViTTower: prefix accepted
    build_ei(weights_cfg, MODS[:2], C, adapter_state={"a": tower_state, "b": state})
    with pytest.raises(AdapterStateError, match="no entry"):
        build_ei(weights_cfg, MODS[:2], C, adapter_state={"a": state})


@pytest.mark.parametrize(("mods", "classes", "millions"), [(["cfp", "oct"], 4, 7.1), (["ax", "cor", "sag"], 3, 12.4)])
def test_vit_b_param_count_matches_table5(mods: list[str], classes: int, millions: float) -> None:
    # Table 5 Params (M): EI with MoR on ViT-B/16 = 7.1 (MMC-AMD, Derm7pt; M = 2) and 12.4 (MRNet; M = 3)
    with torch.device("meta"):
        model = build_ei({"arch": "vit_base_patch16_clip_224", "pretrained": False}, mods, classes)
    assert round(count_trainable(model, exclude=()) / 1e6, 1) == millions


def test_ei_with_vpt_towers_uses_prompts_and_int() -> None:
    """VPT inside EI (Table 8): prompts and [INT] tokens coexist; ViTTower matches the prompted timm forward."""
    from medrepro.models.adapters import apply_adapters
    from medrepro.models.backbones import ViTTower, build_vit

    vit = apply_adapters(build_vit({**TOWER_VPT_CFG, "num_classes": 3}), "vpt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(ViTTower(vit)(x), vit(x), atol=1e-6)
    model = build_ei(TOWER_VPT_CFG, ["a", "b"], 3, "vpt", modality_prior=[0.4, 0.6])
    batch = {"a": torch.randn(2, 3, 32, 32), "b": torch.randn(2, 3, 32, 32)}
    model.training_loss(batch, torch.tensor([0, 2])).backward()
    prompts = [p for n, p in model.named_parameters() if n.endswith("prompts")]
    assert prompts and all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompts)
    out = model(batch)
    batch["b"] = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(model.forward_all(batch).primary["a"], model.forward_all(
        {"a": batch["a"], "b": torch.randn(2, 3, 32, 32)}).primary["a"])
    assert out.shape == (2, 3)


TOWER_VPT_CFG = {"arch": "vit_tiny_patch16_224", "pretrained": False, "img_size": 32,
                 "kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}}


def test_ablation_settings_parse_and_override() -> None:
    from helpers import config

    from medrepro.config import parse_ablation
    from medrepro.errors import ParamsError

    assert parse_ablation("int_layer-2") == ("int_layer", 2)
    assert parse_ablation("lambda_ag-0.5") == ("lambda_ag", 0.5)
    cfg = config()
    changed = cfg.with_ablation("insert_layer-3")
    assert changed.ei.insert_layer == 3 and changed.ei.lambda_aa == cfg.ei.lambda_aa
    assert cfg.ei.insert_layer == 0 and cfg.with_ablation(None) is cfg
    for bad in ("depth-2", "insert_layer-x", "lambda_aa"):
        with pytest.raises(ParamsError, match=bad):
            parse_ablation(bad)


def test_slice_pool_param_reaches_pre_adaptation_ei_and_the_baselines() -> None:
    from helpers import ROOT

    from medrepro.config import load_config
    from medrepro.ei.multimodal import build_model
    from medrepro.models.classifier import MultiTowerClassifier

    knobs = {**load_config(ROOT / "params.yaml").ei.knobs(), "slice_pool": "max"}  # ei.slice_pool: max
    net = build_model({"fusion": "ei", "adapter": "mor"}, TOWER, MODS[:2], C, False, knobs, None, [0.5, 0.9])
    assert net.aux_slice_pool == "max" and net.primary_slice_pool == "mean"
    base = build_model({"fusion": "concat", "adapter": "mor"}, TOWER, MODS[:2], C, False, knobs, None, None)
    assert base.slice_pool == "max"
    lin = torch.nn.Linear(4, C)  # pre-adaptation's classifier: per-slice logits pooled the same way
    x = torch.randn(2, 3, 4, 1, 1)  # (B, S, C, H, W): a volume batch
    tower = torch.nn.Sequential(torch.nn.Flatten(), lin)
    for pool, reduce in (("mean", lambda t: t.mean(1)), ("max", lambda t: t.amax(1))):
        out = MultiTowerClassifier({"a": tower}, slice_pool=pool)({"a": x})
        assert torch.allclose(out, reduce(tower(x.flatten(0, 1)).view(2, 3, C)))
    with pytest.raises(ValueError, match="slice pooling"):
        MultiTowerClassifier({"a": tower}, slice_pool="median")


@pytest.mark.slow
def test_compile_compiles_the_training_loss_and_keeps_loss_and_gradients(monkeypatch):
    # params `compile: true` → prepare_model: the loop calls training_loss (Eq. 8), so that is what must be compiled.
    # aot_eager: dynamo's graph capture and AOT autograd as inductor gets them, without its C++ build time here.
    import copy
    import functools

    from medrepro.devices import prepare_model

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    net = ei(MODS[:2])
    eager = copy.deepcopy(net)
    x, y = make_batch(MODS[:2]), torch.tensor([0, 2])
    compiled = prepare_model(net, torch.device("cpu"), compile_model=True)
    loss = compiled.training_loss(x, y)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the loss ran through dynamo
    ref = eager.training_loss(x, y)
    loss.backward()
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-6)
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        assert p.grad is None or torch.allclose(p.grad, q.grad, atol=1e-5), name
    assert set(compiled.state_dict()) == set(eager.state_dict())  # compiled in place: the same keys


def test_int_scale_match_gives_int_the_norm_of_the_tokens_it_joins() -> None:
    tower = ViTTower(build_vit(TOWER)).eval()
    tokens = tower.tokens(make_batch(["a"])["a"])
    extra = 0.01 * torch.randn(B, 1, tokens.shape[-1], generator=torch.Generator().manual_seed(1))
    seen = {}
    hook = tower.vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.update(x=a[0].detach()))
    with torch.no_grad():
        a, _ = tower.forward_blocks(tokens, extra, 0, extra_scale="match")
        x = seen["x"]
        assert torch.allclose(x[:, -1].norm(dim=-1), x[:, :-1].norm(dim=-1).mean(1), rtol=1e-5)  # [INT] at the mean
        b, _ = tower.forward_blocks(tokens, 7 * extra, 0, extra_scale="match")
        assert torch.allclose(a, b, atol=1e-5)  # only the direction of [INT] counts
        c, _ = tower.forward_blocks(tokens, extra, 0)
        # "none" (paper Eq. 2): the small [INT] is mostly overwritten by block 0's update before block 1 reads it
        assert not torch.allclose(a, c, atol=1e-3)
    hook.remove()
    with pytest.raises(ValueError, match="int_scale must be one of"):
        ei(MODS[:2], int_scale="bigger")
    assert ei(MODS[:2], int_scale="match").int_scale == "match"
