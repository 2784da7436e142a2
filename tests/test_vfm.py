"""The vfm stage: synthetic pretraining learns and loads through `weights:`; given weights fail loudly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import config

from medrepro.errors import WeightsError
from medrepro.layout import RunPaths
from medrepro.models.backbones import build_vit
from medrepro.train.scenes import TARGETS, render_pool
from medrepro.train.vfm import make_vfm

TINY_VFM = {"arch": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
            "pretrained": False, "weights": None, "normalize": "clip"}


def _cfg(**ei):
    return config({"device": "cpu", "ei": {"vfm": TINY_VFM, "ablations": [], **ei}})


def _paths(tmp_path):
    return RunPaths(tmp_path / "vfm", tmp_path / "vfm.json", tmp_path / "p.parquet", tmp_path / "ckpt")


@pytest.mark.parametrize("domain", ["scenes", "synth_mm"])
def test_synthetic_pretraining_learns_and_loads(tmp_path, domain):
    torch.set_num_threads(1)
    cfg = _cfg(vfm_pretrain={"domain": domain, "pool_size": 48, "epochs": 6, "image_size": 16, "gen_size": 32,
                             "batch_size": 16, "lr": 3e-3})
    metrics = make_vfm(cfg, _paths(tmp_path))
    assert metrics["domain"] == domain
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


def test_scenes_carry_generic_labels_and_no_finding():
    images, labels = render_pool(seed=3, n=200, size=24)
    assert images.shape == (200, 24, 24, 3) and images.dtype == np.uint8
    assert set(labels) == set(TARGETS) and "finding" not in labels
    for key, classes in TARGETS.items():  # every label in range, and every class drawn
        assert set(np.unique(labels[key])) == set(range(classes)), key
    grey = labels["grey"] == 1
    spread = np.ptp(images.astype(int), axis=-1).max(axis=(1, 2))  # channel spread per image
    assert (spread[grey] <= 1).all() and (spread[~grey] > 10).all()
    again, _ = render_pool(seed=3, n=200, size=24)
    assert np.array_equal(images, again)
