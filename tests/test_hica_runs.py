"""HiCA's runs on a tiny prepared BUSI (benign / malignant, lesion masks) with CLIP towers from a local weights file
(``tests/tiny_clip.py``): the zero-shot baseline is CLIP as shipped, the ROI modes reach training with masks carried
through augmentation, and K-shot runs read no validation label (HiCA, supervised CNN, transfer alike)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes_single import build_busi
from helpers import config
from safetensors.torch import load_file, save_file
from tiny_clip import register

from medrepro import layout
from medrepro.errors import DataError, ParamsError

pytestmark = pytest.mark.usefixtures("one_thread")

CLIP = "medrepro-tiny-clip"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder with data/prepared/busi (binary, 32 px), its subsets and attribute-like captions, and the tiny
    CLIP's weights file."""
    from medrepro.data.prepare import fetch, prepare
    from medrepro.data.registry import get_adapter
    from medrepro.data.splits import make_subsets

    root = tmp_path_factory.mktemp("hica_runs")
    weights = register(CLIP, root)
    build_busi(root / "raw")
    adapter = get_adapter("busi", {"image_size": 32, "binary": True, "val_fraction": 0.25, "test_fraction": 0.25,
                                   "split_seed": 0})
    fetch(adapter, root / "raw")
    prepared = root / layout.prepared("busi")
    prepare(adapter, root / "raw", prepared, workers=1)
    manifest = pd.read_parquet(prepared / "manifest.parquet")
    subsets = root / layout.subsets("busi")
    subsets.parent.mkdir(parents=True)
    make_subsets(manifest, [1.0], [1], [0]).to_parquet(subsets)
    captions = root / layout.captions("busi")
    captions.parent.mkdir(parents=True)
    pd.DataFrame({"sample_id": manifest["sample_id"], "modality": "image",
                  "t_mix": [f"an ultrasound image, sample {s}" for s in manifest["sample_id"]]}).to_parquet(captions)
    (root / "clip.txt").write_text(str(weights))
    return root


def _cfg(project: Path, rois: str = "auto", stage1: bool = False, roi_source: str = "cache"):
    weights = (project / "clip.txt").read_text()
    return config({"seeds": [0], "datasets": ["synth_mm", "busi"],
                   "data": {"busi": {"image_size": 32, "binary": True}},
                   "hica": {"datasets": ["busi"], "subsets": ["shot_1"], "clip": {"model": CLIP, "weights": weights},
                            "roi_size": 32, "rois": {"mode": rois}, "pretrain": {"enabled": stage1},
                            "roi_source": roi_source, "roi_image_size": 64,
                            "unseen": {"datasets": [], "subset": "shot_1"}, "noise": {"subset": "shot_1"},
                            "ablation_subsets": ["shot_1"], "explain": {"subset": "shot_1"},
                            "train": {"max_epochs": 2, "patience": 1, "batch_size": 2, "min_steps_per_epoch": 1}},
                   "downstream": {"train": {"max_epochs": 2, "patience": 1, "batch_size": 2,
                                            "min_steps_per_epoch": 1}}})


def test_the_zero_shot_model_is_clip_as_shipped_whatever_stage_1_made(project, monkeypatch):
    """HiCA Sec. IV-A: "CLIP (Zero-shot): a baseline vision-language model without any task-specific fine-tuning"."""
    from medrepro.hica.baselines import zeroshot_seed
    from medrepro.models.clip_towers import load_clip
    from medrepro.train.runner import RunEnv

    monkeypatch.chdir(project)
    cfg = _cfg(project, stage1=True)
    clip = load_clip(CLIP, cfg.hica.clip["weights"])
    stage1 = layout.hica_pretrain("busi").weights(0, "image")  # a stage-1 tower unlike CLIP's
    stage1.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"visual.{k}": v + 1.0 for k, v in clip.visual.state_dict().items()}, str(stage1))
    zeroshot_seed(cfg, "busi", 0, RunEnv.from_config(cfg))
    state = load_file(str(layout.hica("busi", "zeroshot", "unlabelled").weights(0)))
    tower = {k.removeprefix("towers.image.visual."): v for k, v in state.items() if k.startswith("towers.image.")}
    shipped = clip.visual.state_dict()
    assert tower.keys() == shipped.keys()
    assert all(torch.equal(tower[k], shipped[k]) for k in shipped)  # CLIP's weights and projection untouched
    eye = torch.eye(state["img_proj.image.weight"].shape[0])
    assert torch.equal(state["img_proj.image.weight"], eye) and torch.equal(state["text_proj.weight"], eye)


def test_augmented_masks_move_with_their_images():
    from medrepro.config import AugmentConfig
    from medrepro.train.augment import augment, augment_with_masks

    x = torch.full((6, 3, 32, 32), -1.0)
    mask = torch.zeros(6, 1, 32, 32)
    for i in range(6):  # a bright square lesion, somewhere else in every image
        y0, x0 = 4 + 3 * i, 20 - 3 * i
        x[i, :, y0:y0 + 8, x0:x0 + 6], mask[i, :, y0:y0 + 8, x0:x0 + 6] = 1.0, 1.0
    norm = (torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5))
    for cfg in (AugmentConfig(hflip=True, crop_pad=3, color_jitter=0.0),  # the embedded stand-in
                AugmentConfig(hflip=True, crop_pad=0, color_jitter=0.0, rotate=180, crop_p=1.0, crop_max=0.1,
                              jitter=0.0)):  # the authors' rotation, crop and flip
        alone = augment(x, cfg, torch.Generator().manual_seed(3), norm)
        images, masks = augment_with_masks(x, mask, cfg, torch.Generator().manual_seed(3), norm)
        assert torch.equal(images, alone)  # the images exactly as without masks
        lesion = images.mean(1, keepdim=True) > 0  # where the square went
        iou = (lesion & (masks > 0)).sum((1, 2, 3)) / (lesion | (masks > 0)).sum((1, 2, 3))
        assert (iou > 0.8).all(), iou


def test_mask_rois_reach_training_and_an_unservable_mode_names_the_dataset(project, monkeypatch):
    import medrepro.models.hica as hica_model
    from medrepro.hica.runs import hica_run

    monkeypatch.chdir(project)
    seen = []
    real = hica_model.training_boxes
    monkeypatch.setattr(hica_model, "training_boxes", lambda img, cfg, mask=None: seen.append(mask) or real(
        img, cfg, mask))
    for mode in ("mask", "auto"):
        run = hica_run(_cfg(project, mode), "busi", "shot_1", 0, layout.hica("busi", "hica", "shot_1"))
        assert run.description["roi_masks"] == ["image"]
        model = run.build()
        idx = run.data.train_idx
        batch = run.data.inputs(idx, torch.device("cpu"), True, torch.Generator().manual_seed(0),
                                run.train.augment)
        seen.clear()
        model.training_loss(batch, run.data.targets(idx, torch.device("cpu")))
        assert len(seen) == len(idx) and all(m is not None and m.any() for m in seen)  # BUSI's lesion masks
    run = hica_run(_cfg(project, "components"), "busi", "shot_1", 0, layout.hica("busi", "hica", "shot_1"))
    assert run.description["roi_masks"] == [] and not run.data.masks  # components: the masks are not read
    prepared = layout.prepared("busi")
    manifest = pd.read_parquet(prepared / "manifest.parquet")
    manifest.drop(columns="path_mask").to_parquet(prepared / "manifest.parquet")
    try:
        with pytest.raises(ParamsError, match="dataset busi has no lesion masks"):
            hica_run(_cfg(project, "mask"), "busi", "shot_1", 0, layout.hica("busi", "hica", "shot_1"))
        subsets = pd.read_parquet(layout.subsets("busi"))
        shot = subsets.loc[subsets["shot_1"] & (subsets["seed"] == 0), "sample_id"].iloc[0]
        manifest.assign(path_mask=manifest["path_mask"].where(manifest["sample_id"] != shot)).to_parquet(
            prepared / "manifest.parquet")
        with pytest.raises(ParamsError, match=f"training sample {shot!r} of dataset busi has no mask"):
            hica_run(_cfg(project, "mask"), "busi", "shot_1", 0, layout.hica("busi", "hica", "shot_1"))
        run = hica_run(_cfg(project, "auto"), "busi", "shot_1", 0, layout.hica("busi", "hica", "shot_1"))
        row = int(np.flatnonzero(manifest["sample_id"] == shot)[0])
        assert not run.data.has_mask["image"][row] and run.data.has_mask["image"][run.data.train_idx].sum() == 1
    finally:
        manifest.to_parquet(prepared / "manifest.parquet")


def test_full_resolution_roi_copies_reach_training_with_the_masks(project, monkeypatch):
    """hica.roi_source full: the hica_roi_images stage's 64-px copy travels with each training batch (BUSI's
    masks still pick the boxes) and the crops are cut from it; without the stage's output the run names it."""
    import medrepro.models.hica as hica_model
    from medrepro.hica.roi_images import build_roi_images
    from medrepro.hica.runs import hica_run

    monkeypatch.chdir(project)
    cfg = _cfg(project, "auto", roi_source="full")
    out = layout.hica_roi_images("busi")
    with pytest.raises(DataError, match="run the hica_roi_images stage"):
        hica_run(cfg, "busi", "shot_1", 0, layout.hica("busi", "hica", "shot_1"))
    build_roi_images(layout.prepared("busi"), out, "full", 64, workers=1)
    try:
        run = hica_run(cfg, "busi", "shot_1", 0, layout.hica("busi", "hica", "shot_1"))
        assert run.description["roi_source"] == "full" and run.description["roi_image_size"] == 64
        idx = run.data.train_idx
        batch = run.data.inputs(idx, torch.device("cpu"), True, torch.Generator().manual_seed(0), run.train.augment)
        big = batch[hica_model.roi_image_key("image")]
        assert big.shape == (len(idx), 3, 64, 64) and batch["image"].shape[-1] == 32
        assert hica_model.mask_key("image") in batch  # the masks still give the boxes
        sources = []
        real = hica_model.roi_source
        monkeypatch.setattr(hica_model, "roi_source", lambda x, b: sources.append(b) or real(x, b))
        loss = run.build().training_loss(batch, run.data.targets(idx, torch.device("cpu")))
        assert torch.isfinite(loss) and sources and sources[0] is big
    finally:
        shutil.rmtree(out)


@pytest.mark.parametrize("method", ["hica", "cnn"])
def test_k_shot_runs_read_no_validation_label(project, monkeypatch, method):
    """K labelled images per class in all: no model selection on the val split; a fixed schedule, last epoch."""
    import medrepro.train.classify as classify
    from medrepro.hica.baselines import _supervised_seed
    from medrepro.hica.runs import hica_run
    from medrepro.train.runner import RunEnv, train_seed

    monkeypatch.chdir(project)
    cfg = _cfg(project)
    scored = []
    real = classify.evaluate
    monkeypatch.setattr(classify, "evaluate", lambda model, data, idx, *a, **k: scored.append(set(idx)) or real(
        model, data, idx, *a, **k))
    for subset in ("shot_1", "ratio_1.0"):
        paths = layout.hica("busi", method, subset)
        if method == "hica":
            run = hica_run(cfg, "busi", subset, 0, paths)
        else:
            model = {**cfg.downstream.models["densenet121"].as_dict(), "pretrained": False, "weights": None}
            run = _supervised_seed(cfg, "busi", "densenet121", subset, paths, model, 0)
        val = set(np.flatnonzero(pd.read_parquet(layout.prepared("busi") / "manifest.parquet")["split"] == "val"))
        scored.clear()
        record, _ = train_seed(run, RunEnv.from_config(cfg))
        if subset == "shot_1":
            assert len(run.data.val_idx) == 0 and not any(s & val for s in scored)  # no val label read
            assert record["val_mAP"] is None and record["epochs_run"] == 2 == run.train.max_epochs
            assert record["selection"] == "fixed_schedule_last_epoch"
        else:  # a ratio run still selects its epoch on the val split
            assert val in scored and record["selection"] == "best_val_mAP"
