"""The vfm stage: synthetic pretraining learns and loads through `weights:`; given weights fail loudly."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import ROOT

from medrepro.errors import WeightsError
from medrepro.models.backbones import build_vit
from medrepro.params import deep_merge
from medrepro.train.vfm import make_vfm, tower_cfg

TINY_VFM = {"arch": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
            "pretrained": False, "weights": None}


def _params(**ei):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return deep_merge(base, {"device": "cpu", "ei": {"vfm": TINY_VFM, **ei}})


def test_synthetic_pretraining_learns_and_loads(tmp_path):
    torch.set_num_threads(1)
    params = _params(vfm_pretrain={"pool_size": 48, "epochs": 6, "image_size": 16, "gen_size": 32, "batch_size": 16,
                                   "lr": 3e-3})
    out = tmp_path / "vfm.safetensors"
    metrics = make_vfm(params, out)
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]
    assert metrics["samples_per_s"] > 0 and metrics["peak_mem_mb"] > 0
    tower = build_vit({**tower_cfg(params, out), "img_size": 16, "num_classes": 4})
    saved = build_vit({**TINY_VFM, "img_size": 16})
    from safetensors.torch import load_file

    state = load_file(str(out))
    assert torch.equal(tower.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert not torch.equal(saved.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_given_weights_that_cannot_be_loaded_are_an_error(tmp_path):
    missing = tmp_path / "clip_vitb16.safetensors"
    params = _params(vfm_source="given", vfm={**TINY_VFM, "pretrained": True, "weights": str(missing)})
    with pytest.raises(WeightsError, match="clip_vitb16.safetensors"):
        make_vfm(params, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
