"""Tests for medrepro.models.adapters (EI paper Sec. 3.4 / Eq. 4, Table 7)."""

import copy
import re

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medrepro.models.adapters import (
    METHODS,
    PEFT_METHODS,
    AdapterStateError,
    LoRALinear,
    MoRLinear,
    PromptedBlocks,
    adapter_state_dict,
    apply_adapters,
    count_trainable,
    load_adapter_state_dict,
)

torch.set_num_threads(2)


def tiny_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=3
    )
    return model.eval()


def images(seed: int = 1, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def randomize(model: nn.Module, pattern: str, seed: int = 2) -> None:
    """Fill parameters whose name matches ``pattern`` with N(0, 0.1) noise (e.g. LoRA B, zero at init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(pattern, name):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


# --- 1. LoRA equals peft -------------------------------------------------------------------------------


def test_lora_linear_matches_peft() -> None:
    from peft import LoraConfig, get_peft_model

    base = tiny_vit()
    ours = apply_adapters(copy.deepcopy(base), "lora", r=4, alpha=8)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "fc2"]))
    theirs_sd = theirs.state_dict()
    n_copied = 0
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, LoRALinear):
                prefix = f"base_model.model.{name}"
                b = theirs_sd[f"{prefix}.lora_B.default.weight"]
                b.copy_(0.1 * torch.randn_like(b))  # peft also starts with B = 0
                module.lora.lora_A.copy_(theirs_sd[f"{prefix}.lora_A.default.weight"])
                module.lora.lora_B.copy_(b)
                n_copied += 1
    assert n_copied == 4  # fc1 + fc2 in 2 blocks
    x = images()
    out_ours, out_theirs, out_base = ours(x), theirs(x), base(x)
    assert not torch.allclose(out_theirs, out_base, atol=1e-3)  # the adaptation is really active
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-6)


# --- 2. MoR (Eq. 4) ------------------------------------------------------------------------------------


def test_mor_is_identity_at_init() -> None:
    base = tiny_vit()
    adapted = apply_adapters(copy.deepcopy(base), "mor")
    x = images()
    assert torch.equal(adapted(x), base(x))


def test_mor_layer_matches_hand_computed_eq4() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(16, 24)
    layer = MoRLinear(copy.deepcopy(lin))
    randomize(layer, r"lora_B|router")
    x = torch.randn(2, 5, 16)  # (batch, tokens, d): routing is per token
    p = torch.softmax(x @ layer.router.weight.T + layer.router.bias, dim=-1)
    expected = x @ lin.weight.T + lin.bias
    for k, (r, expert) in enumerate(zip((2, 4, 8), layer.experts, strict=True), start=1):
        assert expert.lora_A.shape == (r, 16) and expert.scale == 2.0
        expected = expected + p[..., k : k + 1] * 2.0 * (x @ expert.lora_A.T @ expert.lora_B.T)
    torch.testing.assert_close(layer(x), expected)
    assert not torch.allclose(expected, lin(x), atol=1e-3)


def test_mor_bypass_switches_adaptation_off() -> None:
    base = tiny_vit()
    adapted = apply_adapters(copy.deepcopy(base), "mor")
    randomize(adapted, r"lora_B")
    x = images()
    assert not torch.allclose(adapted(x), base(x), atol=1e-3)
    with torch.no_grad():
        for module in adapted.modules():
            if isinstance(module, MoRLinear):
                module.router.weight.zero_()
                module.router.bias.copy_(torch.tensor([60.0, 0.0, 0.0, 0.0]))  # w0 -> 1
    torch.testing.assert_close(adapted(x), base(x), rtol=0, atol=1e-6)


def test_routing_weights_sum() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 7, 16)
    no_bypass = MoRLinear(nn.Linear(16, 8), bypass=False)
    with_bypass = MoRLinear(nn.Linear(16, 8))
    assert no_bypass.router.out_features == 3 and with_bypass.router.out_features == 4
    w = no_bypass.routing_weights(x)
    assert w.shape == (3, 7, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 7))
    assert (with_bypass.routing_weights(x).sum(-1) < 1).all()  # relaxed: 1 - w0, not renormalised


# --- 3. Table 7 parameter counts -----------------------------------------------------------------------

# Table 7 "Params.(K)", reproduced with a 4-class head (MMC-AMD) counted in; LP = 3K is the head alone.
TABLE7_K = {
    "linear_probe": 3,
    "vpt": 49,
    "latelora": 77,
    "lora": 372,
    "bitfit": 106,
    "rlrr": 292,
    "loramoe": 1247,
    "mor": 1478,
    "mor_nobypass": 1432,
}
# The same counts without the head (exact), i.e. what the adapters themselves add / unfreeze.
NO_HEAD = {"lora": 368_640, "loramoe": 1_244_232, "mor": 1_474_656, "mor_nobypass": 1_428_552}


def vit_b(method: str) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=4)
        return apply_adapters(model, method)


@pytest.mark.parametrize("method", sorted(TABLE7_K))
def test_table7_param_counts(method: str) -> None:
    model = vit_b(method)
    assert round(count_trainable(model, exclude=()) / 1000) == TABLE7_K[method]
    if method in NO_HEAD:
        assert count_trainable(model) == NO_HEAD[method]


def test_full_finetuning_counts_everything() -> None:
    model = vit_b("full")
    assert count_trainable(model, exclude=()) == sum(p.numel() for p in model.parameters()) == 85_801_732


# --- 4. Freezing ---------------------------------------------------------------------------------------


def test_mor_freezing_and_gradients() -> None:
    model = apply_adapters(tiny_vit(), "mor").train()
    randomize(model, r"lora_B")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    pattern = r"\.experts\.\d+\.lora_[AB]$|\.router\.|^head\."
    assert trainable == {n for n, _ in model.named_parameters() if re.search(pattern, n)}
    assert any(n.startswith("head.") for n in trainable) and len(trainable) == 2 * 2 * (3 * 2 + 2) + 2
    model(images()).sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trainable), name
    nonzero = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert {n for n in trainable if n.endswith(("lora_B", "router.bias"))} <= set(nonzero)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_exactly_its_parameters(method: str) -> None:
    model = apply_adapters(tiny_vit(), method).train()
    out = model(images())
    assert out.shape == (2, 3)
    assert all(p.requires_grad for p in model.head.parameters())
    assert model.patch_embed.proj.weight.requires_grad == (method == "full")
    out.sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_vpt_prompts_shallow_and_deep() -> None:
    base = tiny_vit()
    x = images()
    for deep, n_sets in ((True, 2), (False, 1)):
        model = apply_adapters(copy.deepcopy(base), "vpt", n_tokens=3, deep=deep)
        assert isinstance(model.blocks, PromptedBlocks)
        assert model.blocks.prompts.shape == (n_sets, 3, 64)
        assert count_trainable(model) == n_sets * 3 * 64
        assert "blocks.0.attn.qkv.weight" in model.state_dict()  # base keys unchanged
        assert not torch.allclose(model(x), base(x), atol=1e-4)  # prompts are attended to
        assert model.forward_features(x).shape == base.forward_features(x).shape  # removed again


def test_attention_targets_are_supported() -> None:
    model = apply_adapters(tiny_vit(), "mor", targets=("attn.qkv", "attn.proj"))
    assert isinstance(model.blocks[0].attn.qkv, MoRLinear)
    assert isinstance(model.blocks[1].attn.proj, MoRLinear)
    assert type(model.blocks[0].mlp.fc1) is nn.Linear and not model.blocks[0].mlp.fc1.weight.requires_grad
    assert model(images()).shape == (2, 3)


def test_registry_order_and_bad_arguments() -> None:
    assert METHODS == ("linear_probe", "full", "bitfit", "vpt", "lora", "loramoe", "mor", "mor_nobypass", "rlrr",
                       "latelora")  # params and tables list methods in this order
    assert tuple(PEFT_METHODS) == METHODS
    with pytest.raises(ValueError, match="unknown PEFT method 'lora\\+\\+'; choose one of bitfit, full, latelora"):
        apply_adapters(tiny_vit(), "lora++")
    with pytest.raises(ValueError, match="matches targets"):
        apply_adapters(tiny_vit(), "lora", targets=("mlp.fc3",))
    with pytest.raises(ValueError, match="does not take targets"):
        apply_adapters(tiny_vit(), "bitfit", targets=("mlp.fc1",))


# --- 5. Saving / loading -------------------------------------------------------------------------------


def test_adapter_state_dict_roundtrip(tmp_path) -> None:
    base = tiny_vit()
    trained = apply_adapters(copy.deepcopy(base), "mor")
    randomize(trained, r"lora_B|router|^head\.")
    state = adapter_state_dict(trained)
    assert all(re.search(r"\.experts\.|\.router\.|^head\.", k) for k in state)
    path = tmp_path / "mor.safetensors"
    save_file(state, str(path))

    fresh = apply_adapters(copy.deepcopy(base), "mor")
    x = images()
    assert not torch.allclose(fresh(x), trained(x), atol=1e-3)
    load_adapter_state_dict(fresh, load_file(str(path)))
    assert torch.equal(fresh(x), trained(x))


def test_load_adapter_state_dict_names_bad_keys() -> None:
    model = apply_adapters(tiny_vit(), "mor")
    state = adapter_state_dict(model)
    key = "blocks.1.mlp.fc2.router.weight"
    state["blocks.1.mlp.fc2.ruoter.weight"] = state.pop(key)
    with pytest.raises(AdapterStateError) as err:
        load_adapter_state_dict(model, state)
    assert key in str(err.value) and "ruoter" in str(err.value)

    state = adapter_state_dict(model)
    state[key] = state[key][:2]
    with pytest.raises(AdapterStateError, match=re.escape(key)):
        load_adapter_state_dict(model, state)
