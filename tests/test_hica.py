"""HiCA: the three losses against values computed by hand, and the ROI extractor's modes."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from medrepro.errors import ParamsError
from medrepro.models.hica_losses import cross_loss, global_loss, hica_loss, local_loss
from medrepro.models.hica_rois import RoiConfig, crops, roi_boxes

# two images, three class descriptors; unit vectors, so the similarities are plain dot products
Z_IMG = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
Z_CLASS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
LABELS = torch.tensor([0, 1])
TAU = 0.5


def test_global_loss_by_hand():
    # image 0: sims (1, 0, -1), target 0; image 1: sims (0.6, 0.8, -0.6), target 1
    l0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    l1 = -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6) + math.exp(-1.2)))
    assert global_loss(Z_IMG, Z_CLASS, LABELS, TAU).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_global_loss_ignores_the_norm_of_embeddings():
    assert global_loss(3 * Z_IMG, 0.5 * Z_CLASS, LABELS, TAU).item() == pytest.approx(
        global_loss(Z_IMG, Z_CLASS, LABELS, TAU).item(), rel=1e-6)


@pytest.mark.parametrize(("margin", "expected"), [
    # mismatched pairs: image 0 × classes 1, 2 (sims 0, -1); image 1 × classes 0, 2 (sims 0.6, -0.6)
    (0.5, (0 + 0 + 0.1 + 0) / 4),  # only (1, 0) is above the margin: active
    (0.7, 0.0),  # every mismatched pair below the margin: inactive
    (-0.2, (0.2 + 0 + 0.8 + 0) / 4),
])
def test_cross_loss_by_hand(margin, expected):
    assert cross_loss(Z_IMG, Z_CLASS, LABELS, margin).item() == pytest.approx(expected, abs=1e-6)


def test_local_loss_by_hand_and_padding_ignored():
    caps = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rois = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [5.0, 5.0]]])  # image 1's second ROI is padding
    mask = torch.tensor([[True, True], [True, False]])

    def ce(sims, target):
        e = [math.exp(s / TAU) for s in sims]
        return -math.log(e[target] / sum(e))

    image0 = (ce([1, 0], 0) + ce([0, 1], 0)) / 2
    image1 = ce([0, 1], 1)
    assert local_loss(rois, mask, caps, TAU).item() == pytest.approx((image0 + image1) / 2, rel=1e-6)
    rois2 = rois.clone()
    rois2[1, 1] = torch.tensor([-3.0, 7.0])
    assert local_loss(rois2, mask, caps, TAU).item() == pytest.approx(local_loss(rois, mask, caps, TAU).item())


def test_hica_loss_sums_the_weighted_terms_and_drops_switched_off_ones():
    caps = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rois = Z_IMG[:, None, :]
    mask = torch.ones(2, 1, dtype=torch.bool)
    total, parts = hica_loss(Z_IMG, Z_CLASS, LABELS, rois, mask, caps, TAU, 0.5, 2.0, 0.5)
    assert set(parts) == {"global", "local", "cross"}
    expected = (global_loss(Z_IMG, Z_CLASS, LABELS, TAU) + 0.5 * local_loss(rois, mask, caps, TAU)
                + 2.0 * cross_loss(Z_IMG, Z_CLASS, LABELS, 0.5))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    _, parts = hica_loss(Z_IMG, Z_CLASS, LABELS, rois, mask, caps, TAU, 0.0, 2.0, 0.5, use_global=False)
    assert set(parts) == {"cross"}
    with pytest.raises(ValueError, match="every term"):
        hica_loss(Z_IMG, Z_CLASS, LABELS, None, None, None, TAU, 0.0, 0.0, 0.5, use_global=False)


# ---------------------------------------------------------------- ROIs


def _image_with_blobs() -> np.ndarray:
    img = np.full((32, 32, 3), 100, np.uint8)
    img[4:8, 4:10] = 250  # large bright blob (24 px)
    img[20:23, 24:27] = 10  # smaller dark blob (9 px)
    img[30, 0] = 255  # a single pixel: below min_area
    return img


def test_components_mode_finds_the_blobs_largest_first():
    boxes, mode = roi_boxes(_image_with_blobs(), RoiConfig(mode="components", k=4, pad=0))
    assert mode == "components" and boxes == [(4, 4, 8, 10), (20, 24, 23, 27)]
    padded, _ = roi_boxes(_image_with_blobs(), RoiConfig(mode="components", k=1, pad=1))
    assert padded == [(3, 3, 9, 11)]


def test_mask_mode_uses_the_mask_not_the_image():
    mask = np.zeros((32, 32), np.uint8)
    mask[10:20, 12:14] = 255
    boxes, mode = roi_boxes(_image_with_blobs(), RoiConfig(mode="mask", pad=0), mask)
    assert mode == "mask" and boxes == [(10, 12, 20, 14)]
    with pytest.raises(ParamsError, match="no mask"):
        roi_boxes(_image_with_blobs(), RoiConfig(mode="mask"))


def test_grid_mode_and_auto_fallbacks():
    flat = np.full((32, 32), 7, np.uint8)
    boxes, mode = roi_boxes(flat, RoiConfig(mode="grid", k=4))
    assert mode == "grid" and boxes == [(0, 0, 16, 16), (0, 16, 16, 32), (16, 0, 32, 16), (16, 16, 32, 32)]
    assert roi_boxes(flat, RoiConfig(mode="auto", k=4))[1] == "grid"  # nothing deviates: no component
    assert roi_boxes(_image_with_blobs(), RoiConfig(mode="auto"))[1] == "components"
    assert roi_boxes(_image_with_blobs(), RoiConfig(mode="auto"), np.ones((32, 32)))[1] == "mask"
    with pytest.raises(ParamsError, match="square number"):
        RoiConfig(mode="grid", k=3)


def test_crops_resize_each_box_and_mark_padding():
    img = torch.arange(16.0).view(1, 4, 4)
    out, valid = crops(img, [(0, 0, 2, 2)], k=2, size=2)
    assert valid.tolist() == [True, False]
    assert out[0, 0].tolist() == [[0.0, 1.0], [4.0, 5.0]] and (out[1] == 0).all()


# ---------------------------------------------------------------- model and data

TOWER = {"arch": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
         "pretrained": False, "weights": None, "normalize": "clip"}


def _desc() -> dict:
    return {"builder": "hica", "modalities": ["fundus", "oct"], "image_size": 32, "num_classes": 3,
            "tower": TOWER, "text_dim": 6, "embed_dim": 8,
            "loss": {"tau": 0.1, "lambda_local": 0.5, "lambda_cross": 0.5, "margin": 0.2, "use_global": True},
            "rois": {"mode": "auto", "k": 4, "z": 2.5, "min_area": 2, "pad": 1}, "roi_size": 16}


def _model(seed: int = 0):
    from medrepro.hica.runs import build_hica

    torch.manual_seed(seed)
    return build_hica(_desc(), torch.randn(3, 6), pretrained=False)


def _batch(n: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"fundus": torch.randn(n, 3, 32, 32, generator=g), "oct": torch.randn(n, 3, 32, 32, generator=g)}


def test_classification_is_the_cosine_argmax_over_class_descriptors():
    model = _model().eval()
    batch = _batch()
    with torch.no_grad():
        logits = model(batch).numpy()
        img = np.stack([torch.nn.functional.normalize(model.tower_embed(m, batch[m]), dim=-1).numpy()
                        for m in ("fundus", "oct")]).mean(0)
        txt = model.text_proj(model.class_text).numpy()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    direct = img @ txt.T
    assert np.allclose(logits, direct / 0.1, atol=1e-5)
    assert (logits.argmax(1) == direct.argmax(1)).all()


def test_training_loss_reaches_towers_projections_and_uses_rois():
    from medrepro.models.hica import CAPTION

    model = _model().train()
    batch = {**_batch(4), CAPTION: torch.randn(4, 6)}
    z, mask = model.roi_embeddings(batch)
    assert z.shape == (4, 8, 8) and mask.shape == (4, 8) and mask.any(1).all()
    loss = model.training_loss(batch, torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("towers.fundus.patch_embed.proj.weight", "img_proj.oct.weight", "text_proj.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_a_saved_run_rebuilds_to_the_same_scores(tmp_path):
    from safetensors.torch import save_file

    from medrepro.hica.runs import load_hica
    from medrepro.io import write_json

    model = _model(3).eval()
    weights = tmp_path / "seed0.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    write_json(weights.with_suffix(".json"), _desc())
    loaded, _ = load_hica(weights)
    batch = _batch(3, seed=1)
    with torch.no_grad():
        assert torch.allclose(loaded(batch), model(batch))


def test_class_descriptors_come_from_the_subset_labels_only():
    from medrepro.hica.data import class_descriptors

    texts, groups, rows = class_descriptors(["normal", "drusen_fluid"], np.array([1, 1, 0]),
                                            [["a1", "a2"], ["b1", "b2"], ["c1", "c2"]])
    assert texts == ["An image showing normal.", "An image showing drusen and fluid.", "a1", "a2", "b1", "b2",
                     "c1", "c2"]
    assert groups == [[0, 6, 7], [1, 2, 3, 4, 5]] and rows == [[2, 3], [4, 5], [6, 7]]


def test_missing_captions_name_the_file_and_sample(tmp_path, monkeypatch):
    import pandas as pd

    from medrepro import layout
    from medrepro.errors import DataError
    from medrepro.hica.data import sample_captions

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=re.escape(str(layout.captions("synth_mm")))):
        sample_captions("synth_mm", np.array(["S1"]), ["fundus"])
    layout.captions("synth_mm").parent.mkdir(parents=True)
    pd.DataFrame({"sample_id": ["S1", "S1"], "modality": ["fundus", "oct"], "t_mix": ["f1", "o1"]}).to_parquet(
        layout.captions("synth_mm"))
    assert sample_captions("synth_mm", np.array(["S1"]), ["fundus", "oct"]) == [["f1", "o1"]]
    with pytest.raises(DataError, match="'S2'"):
        sample_captions("synth_mm", np.array(["S1", "S2"]), ["fundus"])


# ---------------------------------------------------------------- stage 1


def test_kmeans_pseudo_labels_are_seeded_and_find_separated_groups():
    from medrepro.hica.pretrain import kmeans_labels

    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 0.1, (20, 3)), rng.normal(5, 0.1, (20, 3))])
    a, b = kmeans_labels(feats, 2, seed=1), kmeans_labels(feats, 2, seed=1)
    assert (a == b).all() and len(set(a[:20])) == 1 and len(set(a[20:])) == 1 and a[0] != a[-1]
    with pytest.raises(ValueError, match="at least 50"):
        kmeans_labels(feats, 50, seed=0)


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel, AutoTokenizer

    from medrepro.models.text import bundled_minilm

    src = bundled_minilm()
    return src, AutoTokenizer.from_pretrained(src, local_files_only=True), \
        AutoModel.from_pretrained(src, local_files_only=True).eval()


def test_cached_lower_layers_plus_top_layer_equal_the_full_encoder(minilm):
    from medrepro.hica.pretrain import _frozen_states, _top_layers

    _, tok, model = minilm
    texts = ["a small yellow lesion", "two brown spots near the centre on a dim, smooth background"]
    states, mask = _frozen_states(model, tok, texts, 5, 64, torch.device("cpu"))
    with torch.no_grad():
        full = model(**tok(texts, padding="longest", return_tensors="pt")).last_hidden_state
        top = _top_layers(model.encoder.layer[-1:], states, mask)
    assert torch.allclose((full * mask[..., None]), (top * mask[..., None]), atol=1e-5)


def test_simcse_trains_only_the_top_layers(minilm):
    from medrepro.hica.pretrain import PretrainConfig, simcse_finetune

    src, _, reference = minilm
    texts = [f"{n} {c} round lesions near the {w}" for n in ("two", "three") for c in ("yellow", "brown")
             for w in ("centre", "edge")]
    model, _, record = simcse_finetune(src, texts, PretrainConfig(text_epochs=1, batch_size=4, text_layers=1), 0,
                                       torch.device("cpu"))
    assert len(record["loss_history"]) == 1 and np.isfinite(record["loss_history"][0])
    before, after = reference.state_dict(), model.state_dict()
    changed = {k.split(".")[2] for k in after if k.startswith("encoder.layer.")
               and not torch.equal(after[k], before[k])}
    assert changed == {"5"}  # the last of the six layers only
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("embeddings."))


def test_held_out_classes_never_reach_training_or_validation():
    from medrepro.errors import ParamsError as PE
    from medrepro.hica.runs import hold_out, unseen_classes
    from medrepro.train.task import TaskData

    labels = np.array([0, 1, 2, 3] * 5)
    data = TaskData(images=None, labels=labels, multilabel=False, train_idx=np.arange(12), val_idx=np.arange(12, 16),
                    test_idx=np.arange(16, 20))
    kept = hold_out(data, [3])
    assert 3 not in labels[kept.train_idx] and 3 not in labels[kept.val_idx]
    assert set(labels[kept.train_idx]) == {0, 1, 2} and kept.n_real == len(kept.train_idx) == 9
    assert (kept.test_idx == data.test_idx).all()  # the test split keeps every class

    class Cfg:
        class hica:
            unseen = {"classes": ("drusen_fluid",), "subset": "shot_10"}

    names = ["normal", "drusen", "fluid", "drusen_fluid"]
    assert unseen_classes(Cfg, names) == [3]
    Cfg.hica.unseen = {"classes": ("cataract",), "subset": "shot_10"}
    with pytest.raises(PE, match="'cataract', which is not a class"):
        unseen_classes(Cfg, names)


def test_noisy_descriptors_corrupt_the_stated_share_and_only_that():
    from medrepro.hica.noise import IRRELEVANT, corrupt

    caps = [f"caption {i}" for i in range(20)]
    noisy = corrupt(caps, "irrelevant", 0.3, seed=0, terms=2)
    changed = [i for i, (a, b) in enumerate(zip(caps, noisy, strict=True)) if a != b]
    assert len(changed) == 6
    for i in changed:
        words = noisy[i].split()
        extra = [w for w in words if w in IRRELEVANT]
        assert len(words) == len(caps[i].split()) + 2 and len(extra) == 2
        assert [w for w in words if w not in IRRELEVANT] == caps[i].split()  # the caption's own words, in order
    assert corrupt(caps, "irrelevant", 0.3, seed=0, terms=2) == noisy  # seeded
    replaced = corrupt(caps, "replace", 0.5, seed=1)
    assert set(replaced) <= set(caps) and sum(a != b for a, b in zip(caps, replaced, strict=True)) <= 10
    assert corrupt(caps, "replace", 0.0, seed=1) == caps
    with pytest.raises(ValueError, match="noise kind"):
        corrupt(caps, "typos", 0.1, seed=0)


def test_components_touching_the_border_are_not_rois():
    img = np.full((32, 32), 120, np.uint8)
    img[:6, :6] = 0  # a dark corner, as a fundus image's black border
    img[14:18, 14:18] = 250
    boxes, mode = roi_boxes(img, RoiConfig(mode="components", k=4, pad=0))
    assert mode == "components" and boxes == [(14, 14, 18, 18)]


def test_irrelevant_words_change_every_corrupted_caption_embedding():
    from medrepro.hica.noise import corrupt
    from medrepro.hica.text import sentence_embeddings
    from medrepro.models.text import TextTowerConfig, build_text_tower

    tower = build_text_tower(TextTowerConfig(max_tokens=64))
    caption = "Three medium yellow round lesions near the centre on a dim, smooth brown retinal background."
    noisy = corrupt([caption] * 8, "irrelevant", 1.0, seed=0, terms=3)
    emb = sentence_embeddings(tower, [caption, *noisy])
    assert all(not torch.allclose(emb[0], e, atol=1e-6) for e in emb[1:])


def test_training_boxes_follow_the_roi_rule():
    from medrepro.errors import ParamsError
    from medrepro.models.hica_rois import training_boxes

    blobs = _image_with_blobs()
    mask = np.zeros((32, 32))
    mask[20:24, 2:5] = 1
    for mode in ("mask", "auto"):  # the mask's boxes, not the image's components
        assert training_boxes(blobs, RoiConfig(mode=mode, k=4, pad=0), mask) == [(20, 2, 24, 5)]
    assert training_boxes(blobs, RoiConfig(mode="mask", k=4), np.zeros((32, 32))) == []  # an empty mask: no ROI
    assert training_boxes(blobs, RoiConfig(mode="auto", k=4, pad=0), np.zeros((32, 32))) == roi_boxes(
        blobs, RoiConfig(mode="components", k=4, pad=0))[0]
    assert training_boxes(blobs, RoiConfig(mode="components", k=4, pad=0), mask) == roi_boxes(
        blobs, RoiConfig(mode="components", k=4, pad=0))[0]  # the mask is ignored
    with pytest.raises(ParamsError, match="mode mask"):
        training_boxes(blobs, RoiConfig(mode="mask", k=4))
    flat = np.zeros((32, 32))
    assert training_boxes(flat, RoiConfig(mode="components", k=4)) == roi_boxes(flat, RoiConfig(mode="grid", k=4))[0]
    assert len(training_boxes(flat, RoiConfig(mode="auto", k=3))) == 3  # a 2 × 2 grid, the first 3 cells


def test_texts_cut_by_the_sentence_encoders_token_limit_are_counted(caplog):
    from medrepro.hica.text import sentence_embeddings
    from medrepro.models.text import TextTowerConfig, build_text_tower

    tower = build_text_tower(TextTowerConfig(kind="minilm", max_tokens=8))
    with caplog.at_level("WARNING", logger="medrepro"):
        sentence_embeddings(tower, ["a dark round lesion near the centre of the image", "a lesion"])
    assert "1 of 2 texts fill its 8 tokens (hica.text.max_tokens)" in caplog.text
