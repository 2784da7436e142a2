"""synth_mm is reproducible and needs fusion: each modality alone is clearly worse than both together."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
import torch
from helpers import train_config

from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import get_adapter
from medrepro.data.splits import make_subsets
from medrepro.data.synth_mm import generate_synth_mm
from medrepro.devices import seed_everything
from medrepro.models.classifier import build_classifier
from medrepro.train.classify import train_classifier
from medrepro.train.task import load_task

SYNTH = {"n_train": 200, "n_val": 40, "n_test": 120, "gen_size": 32, "image_size": 32, "difficulty": 0.3,
         "leak": 0.15}


def test_same_seed_same_bytes(tmp_path):
    digests = []
    for name in ("a.zip", "b.zip"):
        generate_synth_mm(tmp_path / name, 7, 8, 4, 4, 32, 0.3, 0.15)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    generate_synth_mm(tmp_path / "c.zip", 8, 8, 4, 4, 32, 0.3, 0.15)
    assert hashlib.sha256((tmp_path / "c.zip").read_bytes()).hexdigest() != digests[0]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    adapter = get_adapter("synth_mm", SYNTH)
    fetch(adapter, root / "raw" / "synth_mm")
    prepare(adapter, root / "raw" / "synth_mm", root / "prepared" / "synth_mm")
    manifest = pd.read_parquet(root / "prepared" / "synth_mm" / "manifest.parquet")
    (root / "splits" / "synth_mm").mkdir(parents=True)
    make_subsets(manifest, [1.0], [], [0]).to_parquet(root / "splits" / "synth_mm" / "subsets.parquet")
    return root, manifest


def test_nuisance_attributes_vary_within_every_class(synth_root):
    _, manifest = synth_root
    for _, grp in manifest.groupby("label"):
        for col in ("attr_lesion_size", "attr_lesion_shade", "attr_illumination", "attr_texture"):
            assert grp[col].nunique() > 1, col


def _test_mauc(root, modalities):
    torch.set_num_threads(1)
    data, classes = load_task("synth_mm", "ratio_1.0", 0, modalities, 4, data_root=root)
    gen = seed_everything(0)
    model = build_classifier({"arch": "densenet121", "kwargs": {"growth_rate": 8, "block_config": [2, 2]}},
                             modalities, 4, 32)
    cfg = train_config(optimizer="adamw", weight_decay=0.05, schedule="cosine", lr_min=1e-5, lr_max=3e-3,
                       warmup_epochs=1, batch_size=32, max_epochs=12, patience=12, min_steps_per_epoch=1,
                       augment={"hflip": True, "crop_pad": 2})
    _, rec, _ = train_classifier(model, data, cfg, gen, torch.device("cpu"), "fp32")
    return rec["test"]["mAUC"]


@pytest.mark.slow
def test_fusion_is_needed(synth_root):
    root, _ = synth_root
    fundus, oct_, both = (_test_mauc(root, m) for m in (["fundus"], ["oct"], ["fundus", "oct"]))
    assert both > max(fundus, oct_) + 0.05, (fundus, oct_, both)


def test_colocated_finding_needs_both_images(tmp_path):
    """coupling=colocated: each side alone is independent of the fluid bit; their match defines it (XNOR)."""
    import io
    import zipfile

    generate_synth_mm(tmp_path / "c.zip", 3, 400, 4, 4, 16, 0.3, 0.15, "colocated")
    with zipfile.ZipFile(tmp_path / "c.zip") as zf:
        df = pd.read_csv(io.BytesIO(zf.read("synth_mm/labels.csv")))
    fluid = df["label"] // 2
    match = (df["attr_membrane_side"] == df["attr_pocket_side"]).astype(int)
    assert (fluid == match).all()
    for col in ("attr_membrane_side", "attr_pocket_side"):  # neither side alone predicts the finding
        rates = fluid.groupby(df[col]).mean()
        assert set(rates.index) == {"temporal", "nasal"} and (rates - fluid.mean()).abs().max() < 0.1, rates
    with pytest.raises(ValueError, match="coupling"):
        generate_synth_mm(tmp_path / "x.zip", 3, 4, 4, 4, 16, 0.3, 0.15, "crossed")
