"""The mutations the `mechanisms` experiment compares against: captions shuffled within class (vap_shuffled), the
class-mean "generator" and LoRA adapters zeroed at test time."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medrepro.errors import DataError
from medrepro.models.adapters import AdapterStateError, apply_adapters, lora_zeroed
from medrepro.models.backbones import build_vit
from medrepro.train.artifacts import finish_run
from medrepro.vap.class_mean import class_means, generate_class_mean
from medrepro.vap.generator import VARIANTS, shuffle_within_class

VIT = {"arch": "vit_tiny_patch16_224", "pretrained": False, "weights": None,
       "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}


def test_shuffled_captions_keep_their_class_and_leave_their_image() -> None:
    labels = np.repeat([0, 1, 2], 40)
    captions = [f"class {k} image {i}" for i, k in enumerate(labels)]
    out = shuffle_within_class(captions, labels, seed=3)
    assert all(c.startswith(f"class {k} ") for c, k in zip(out, labels, strict=True))
    for k in range(3):  # the same captions per class, each once
        assert sorted(np.array(out)[labels == k]) == sorted(np.array(captions)[labels == k])
    assert np.mean([a != b for a, b in zip(out, captions, strict=True)]) > 0.9
    assert out == shuffle_within_class(captions, labels, seed=3) != shuffle_within_class(captions, labels, seed=4)
    assert VARIANTS["vap_shuffled"] == VARIANTS["vap"]  # the same model: only its captions differ


def test_class_mean_generator_draws_each_class_mean(tmp_path) -> None:
    frames = np.zeros((6, 4, 4, 3), np.uint8)
    frames[3:] = 200
    frames[0] = 30
    labels = np.array([0, 0, 0, 1, 1, 1])
    means = class_means(frames, labels, ["a", "b"], "x")
    assert means[0, 0, 0, 0] == 10 and means[1, 0, 0, 0] == 200
    weights = tmp_path / "seed0" / "fundus.safetensors"
    finish_run(weights, {"means": torch.from_numpy(means)}, {"builder": "class_mean", "classes": ["a", "b"]}, None)
    images = generate_class_mean(weights, np.array([1, 0, 1]), size=8, channels=1)
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8
    assert (images[0] == 200).all() and (images[1] == 10).all()
    with pytest.raises(DataError, match="no training image of class 'c'"):
        class_means(frames, labels, ["a", "b", "c"], "x")


@pytest.mark.parametrize("method", ["mor", "lora", "loramoe"])
def test_zeroed_loras_give_the_frozen_tower_and_are_restored(method: str) -> None:
    torch.manual_seed(0)
    frozen = build_vit({**VIT, "num_classes": 3, "img_size": 32})
    adapted = apply_adapters(copy.deepcopy(frozen), method)  # the same base weights and head
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if name.endswith("lora_B"):
                p.normal_()
    x = torch.randn(2, 3, 32, 32)
    frozen.eval(), adapted.eval()
    trained = adapted(x)
    assert not torch.allclose(trained, frozen(x), atol=1e-4)
    with lora_zeroed(adapted) as n:
        assert n > 0
        assert torch.allclose(adapted(x), frozen(x), atol=1e-5)
    assert torch.equal(adapted(x), trained)
    with pytest.raises(AdapterStateError, match="no LoRA branches"), lora_zeroed(frozen):
        pass
