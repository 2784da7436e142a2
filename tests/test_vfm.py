"""The vfm stage: synthetic pretraining learns and loads through `weights:`; given weights fail loudly."""

from __future__ import annotations

import pytest
import torch
from helpers import config

from medrepro.errors import WeightsError
from medrepro.layout import RunPaths
from medrepro.models.backbones import build_vit
from medrepro.train.vfm import make_vfm

TINY_VFM = {"arch": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
            "pretrained": False, "weights": None, "normalize": "clip"}


def _cfg(**ei):
    return config({"device": "cpu", "ei": {"vfm": TINY_VFM, "ablations": [], **ei}})


def _paths(tmp_path):
    return RunPaths(tmp_path / "vfm", tmp_path / "vfm.json", tmp_path / "p.parquet", tmp_path / "ckpt")


def test_synthetic_pretraining_learns_and_loads(tmp_path):
    torch.set_num_threads(1)
    cfg = _cfg(vfm_pretrain={"pool_size": 48, "epochs": 6, "image_size": 16, "gen_size": 32, "batch_size": 16,
                             "lr": 3e-3})
    metrics = make_vfm(cfg, _paths(tmp_path))
    out = tmp_path / "vfm" / "vfm.safetensors"
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]
    assert metrics["samples_per_s"] > 0 and metrics["peak_mem_mb"] > 0
    assert (tmp_path / "vfm" / "vfm.json").is_file() and (tmp_path / "vfm.json").is_file()
    assert not list((tmp_path / "ckpt").iterdir())  # finished: the resume checkpoint is gone
    tower = build_vit({**cfg.ei.tower(out), "img_size": 16, "num_classes": 4})
    saved = build_vit({**TINY_VFM, "img_size": 16})
    from safetensors.torch import load_file

    state = load_file(str(out))
    assert torch.equal(tower.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert not torch.equal(saved.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_given_weights_that_cannot_be_loaded_are_an_error(tmp_path):
    missing = tmp_path / "clip_vitb16.safetensors"
    cfg = _cfg(vfm_source="given", vfm={**TINY_VFM, "pretrained": True, "weights": str(missing)})
    with pytest.raises(WeightsError, match="clip_vitb16.safetensors"):
        make_vfm(cfg, _paths(tmp_path))
    assert not (tmp_path / "vfm" / "vfm.safetensors").exists()
