"""Downstream classifiers load weights through the same `weights:` path users set; failures are loud.

``create_timm_model`` shares the loader with the ViT towers (``medrepro.models.weights``), tested here on DenseNet.
"""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from medrepro.errors import ParamsError, WeightsError
from medrepro.models.timm_factory import create_timm_model

TINY = {"arch": "densenet121", "kwargs": {"growth_rate": 4, "block_config": [1, 1]}}


def _saved(tmp_path, num_classes=5, **kw):
    ref = timm.create_model("densenet121", num_classes=num_classes, **dict(TINY["kwargs"], **kw))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return ref, path


def test_local_weights_load_including_head(tmp_path):
    ref, path = _saved(tmp_path)
    model = create_timm_model(dict(TINY, pretrained=True, weights=str(path)), num_classes=5)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_local_weights_with_a_new_head(tmp_path):
    ref, path = _saved(tmp_path)
    model = create_timm_model(dict(TINY, pretrained=True, weights=str(path)), num_classes=3)
    assert model.get_classifier().out_features == 3
    assert torch.equal(model.features.conv0.weight, ref.features.conv0.weight)


def test_missing_or_mismatched_weights_are_errors(tmp_path):
    with pytest.raises(WeightsError, match="nothere.safetensors"):
        create_timm_model(dict(TINY, pretrained=True, weights=str(tmp_path / "nothere.safetensors")), 3)
    _, path = _saved(tmp_path, growth_rate=8)
    with pytest.raises(WeightsError, match="w.safetensors"):
        create_timm_model(dict(TINY, pretrained=True, weights=str(path)), 5)
    with pytest.raises(ParamsError, match="pretrained"):
        create_timm_model(dict(TINY, pretrained=False, weights=str(path)), 5)


def test_headless_file_gets_a_new_head(tmp_path):
    ref, _ = _saved(tmp_path)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items() if not k.startswith("classifier.")}, str(path))
    model = create_timm_model(dict(TINY, pretrained=True, weights=str(path)), num_classes=5)
    assert model.get_classifier().out_features == 5
    assert torch.equal(model.features.norm5.weight, ref.features.norm5.weight)


def test_tensor_missing_from_file_is_named(tmp_path):
    """With a new head timm loads non-strictly: a backbone tensor absent from the file must not stay random."""
    ref, _ = _saved(tmp_path)
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in ref.state_dict().items() if k != "features.norm5.weight"}, path)
    with pytest.raises(WeightsError, match=r"partial\.pth.*1 model tensors missing from the file \[features\.norm5"):
        create_timm_model(dict(TINY, pretrained=True, weights=str(path)), num_classes=3)


def test_hub_weights_are_checked_against_the_hub_cache(tmp_path, monkeypatch):
    import timm.models._builder as builder

    from medrepro.models import weights

    ref = timm.create_model("densenet121", **TINY["kwargs"])
    hub_file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(hub_file))
    monkeypatch.setattr(builder, "load_state_dict_from_hf", lambda *a, **kw: dict(ref.state_dict()))
    monkeypatch.setattr(weights, "_hub_cached_file", lambda hub_id, filename: str(hub_file))
    model = create_timm_model(dict(TINY, pretrained=True, weights="hub"), num_classes=3)
    assert torch.equal(model.features.conv0.weight, ref.features.conv0.weight)
    other = {k: v + 1 if k == "features.conv0.weight" else v for k, v in ref.state_dict().items()}
    save_file({k: v.contiguous() for k, v in other.items()}, str(hub_file))
    with pytest.raises(WeightsError, match=r"hf-hub:timm/densenet121.*1 different \[features\.conv0\.weight\]"):
        create_timm_model(dict(TINY, pretrained=True), num_classes=3)


def test_hub_failure_names_hub_id(monkeypatch):
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    with pytest.raises(WeightsError, match="timm/densenet121"):
        create_timm_model(dict(TINY, pretrained=True, weights=None), num_classes=3)


def test_embedded_maxvit_is_registered():
    model = create_timm_model({"arch": "maxvit_embedded", "kwargs": {}}, num_classes=4, image_size=32)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_multitower_fusions() -> None:
    """mean_logits averages full classifiers; mlp concatenates headless towers' features into a 2-layer MLP."""
    from medrepro.models.classifier import build_classifier

    cfg = {"arch": "densenet121", "kwargs": {"growth_rate": 4, "block_config": [1, 1]}, "pretrained": False}
    batch = {"a": torch.randn(2, 3, 16, 16), "b": torch.randn(2, 2, 3, 16, 16)}  # an image and a 2-slice volume
    torch.manual_seed(0)
    mean = build_classifier(cfg, ["a", "b"], 3, 16).eval()
    per = [mean.towers["a"](batch["a"]), mean.towers["b"](batch["b"].flatten(0, 1)).view(2, 2, -1).mean(1)]
    assert torch.allclose(mean(batch), (per[0] + per[1]) / 2)
    mlp = build_classifier(cfg, ["a", "b"], 3, 16, fusion="mlp", hidden=7).eval()
    assert mlp(batch).shape == (2, 3) and mlp.head[0].in_features == 2 * mlp.towers["a"].num_features
    assert mlp.head[0].out_features == 7 and mlp.towers["a"].num_classes == 0
    single = build_classifier(cfg, ["a"], 3, 16, fusion="mlp")  # one modality: the timm classifier itself
    assert single.head is None and single.towers["a"].num_classes == 3
    with pytest.raises(ValueError, match="downstream.fusion"):
        build_classifier(cfg, ["a", "b"], 3, 16, fusion="sum")
