"""Training loop: early stopping, resume after an interruption gives the same final metrics, determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import train_config

from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import get_adapter
from medrepro.data.splits import make_subsets
from medrepro.devices import seed_everything
from medrepro.errors import DataError
from medrepro.models.classifier import build_classifier
from medrepro.train.classify import train_classifier
from medrepro.train.task import load_task

CFG = train_config(optimizer="sgd", momentum=0.9, weight_decay=1e-4, schedule="cyclic", lr_min=1e-4, lr_max=5e-2,
                   warmup_epochs=1, cycle_decay=0.8, batch_size=8, max_epochs=4, patience=10, min_steps_per_epoch=2,
                   augment={"hflip": True, "crop_pad": 1, "color_jitter": 0.1})
MODEL = {"arch": "densenet121", "kwargs": {"growth_rate": 4, "block_config": [1, 1]}, "pretrained": False}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    adapter = get_adapter("synth_mm", {"n_train": 32, "n_val": 12, "n_test": 16, "gen_size": 32, "image_size": 16,
                                       "difficulty": 0.2, "leak": 0.1})
    fetch(adapter, root / "raw" / "synth_mm")
    prepare(adapter, root / "raw" / "synth_mm", root / "prepared" / "synth_mm")
    import pandas as pd

    manifest = pd.read_parquet(root / "prepared" / "synth_mm" / "manifest.parquet")
    (root / "splits" / "synth_mm").mkdir(parents=True)
    make_subsets(manifest, [1.0], [1], [0]).to_parquet(root / "splits" / "synth_mm" / "subsets.parquet")
    return root


def _train(root: Path, cfg, ckpt: Path | None = None, fail_after: int | None = None, frozen_shift: float | None = None):
    data, classes = load_task("synth_mm", "ratio_1.0", 0, None, 4, data_root=root)
    gen = seed_everything(0)
    model = build_classifier(MODEL, data.images.modalities, len(classes["classes"]), classes["image_size"])
    if frozen_shift is not None:  # a frozen base (as under PEFT): only the heads train
        for name, p in model.named_parameters():
            p.requires_grad_("classifier" in name)
        with torch.no_grad():
            next(p for p in model.parameters() if not p.requires_grad).add_(frozen_shift)
    if fail_after is not None:  # simulate a kill: the (fail_after + 1)-th validation raises
        calls = {"n": 0}
        original = model.forward

        def forward(batch):
            if not model.training:
                calls["n"] += 1
                if calls["n"] > fail_after:  # the val set is one batch: one eval call per epoch
                    raise KeyboardInterrupt
            return original(batch)

        model.forward = forward
    fit, record, _ = train_classifier(model, data, cfg, gen, torch.device("cpu"), "fp32", ckpt, run_id="r")
    return fit, record


def test_resume_after_interruption_gives_identical_metrics(tiny_data, tmp_path):
    torch.set_num_threads(1)
    _, straight = _train(tiny_data, CFG)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_data, CFG, ckpt, fail_after=2)
    assert ckpt.exists()
    saved = torch.load(ckpt, weights_only=False)
    assert saved["state"]["epoch"] >= 1
    _, resumed = _train(tiny_data, CFG, ckpt)
    assert resumed["resumed_from_epoch"] == saved["state"]["epoch"]
    assert resumed["test"] == straight["test"]
    assert [h["val"] for h in resumed["history"]] == [h["val"] for h in straight["history"]]


def test_checkpoints_leave_frozen_weights_out_and_check_them_on_resume(tiny_data, tmp_path):
    torch.set_num_threads(1)
    _, straight = _train(tiny_data, CFG, frozen_shift=0.0)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_data, CFG, ckpt, fail_after=2, frozen_shift=0.0)
    saved = torch.load(ckpt, weights_only=False)
    assert saved["model"] and all("classifier" in k or "running_" in k or "num_batches" in k for k in saved["model"])
    assert set(saved["state"]["best_state"]) == set(saved["model"])  # the kept best epoch: no frozen weights either
    other_ckpt = tmp_path / "other.pt"
    other_ckpt.write_bytes(ckpt.read_bytes())
    _, resumed = _train(tiny_data, CFG, ckpt, frozen_shift=0.0)
    assert resumed["resumed_from_epoch"] == saved["state"]["epoch"] and resumed["test"] == straight["test"]
    _, other = _train(tiny_data, CFG, other_ckpt, frozen_shift=1e-3)  # other frozen weights: not their checkpoint
    assert other["resumed_from_epoch"] is None


def test_same_seed_same_metrics(tiny_data):
    torch.set_num_threads(1)
    _, a = _train(tiny_data, replace(CFG, max_epochs=2))
    _, b = _train(tiny_data, replace(CFG, max_epochs=2))
    assert a["test"] == b["test"]


def test_early_stopping_and_training_metrics(tiny_data):
    cfg = replace(CFG, max_epochs=30, patience=2, lr_max=1e-9, lr_min=1e-10)  # no learning → no val gain
    _, rec = _train(tiny_data, cfg)
    assert rec["epochs_run"] == rec["best_epoch"] + 2 < 30
    for key in ("samples_per_s", "peak_mem_mb", "wall_s"):
        assert rec[key] > 0
    assert np.isfinite(rec["test"]["mAUC"])


def test_an_undefined_val_score_on_every_epoch_is_an_error_naming_the_run():
    from medrepro.train.loop import FitPlan, run_epochs

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loss = lambda idx, g: model(torch.ones(len(idx), 2)).pow(2).mean()  # noqa: E731
    plan = FitPlan(batch_size=2, steps_per_epoch=1, max_epochs=2, patience=5)
    with pytest.raises(DataError, match="mrnet/axial: the validation score was undefined"):
        run_epochs(model, loss, lambda: float("nan"), np.arange(4), plan, opt, sched, torch.Generator(),
                   torch.device("cpu"), "fp32", desc="mrnet/axial")
    scores = iter([float("nan"), 0.5])  # one defined epoch is enough
    fit = run_epochs(model, loss, lambda: next(scores), np.arange(4), plan, opt, sched, torch.Generator(),
                     torch.device("cpu"), "fp32")
    assert fit.best_epoch == 2 and fit.best_state


def _synthetic_set(root: Path, per_class: int, seeds: tuple[int, ...] = (0,)) -> Path:
    from medrepro.vap.synthesize import write_set

    rows, images = [], {"fundus": [], "oct": []}
    rng = np.random.default_rng(0)
    for seed in seeds:
        for k in range(4):
            for i in range(per_class):
                rows.append({"sample_id": f"syn-s{seed}-{k}-{i}", "seed": seed, "label": k})
                images["fundus"].append(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
                images["oct"].append(rng.integers(0, 255, (16, 16, 1), dtype=np.uint8))
    out = root / "synthetic" / "synth_mm" / "toy"
    write_set(out, pd.DataFrame(rows), {m: np.stack(v) for m, v in images.items()})
    return out


def test_synthetic_samples_join_the_train_split_only(tiny_data, tmp_path):
    from medrepro.train.task import add_synthetic

    syn_root = _synthetic_set(tmp_path, per_class=3, seeds=(0, 1))
    data, _ = load_task("synth_mm", "ratio_1.0", 0, None, 4, data_root=tiny_data)
    mixed = add_synthetic(data, syn_root, seed=0, per_class=2, real_fraction=None, num_classes=4)
    n = len(data.labels)
    assert (mixed.n_real, mixed.n_synthetic) == (len(data.train_idx), 8)
    syn_idx = mixed.train_idx[mixed.train_idx >= n]
    assert len(syn_idx) == 8 and np.bincount(mixed.labels[syn_idx]).tolist() == [2, 2, 2, 2]
    assert all(s.startswith("syn-s0-") for s in mixed.sample_ids[syn_idx])  # seed 0's samples only
    assert np.array_equal(mixed.val_idx, data.val_idx) and np.array_equal(mixed.test_idx, data.test_idx)
    frames = np.load(syn_root / "cache" / "oct.npy")
    first = int(np.flatnonzero(mixed.sample_ids == mixed.sample_ids[syn_idx[0]])[0]) - n
    batch = mixed.images.batch(np.array([syn_idx[0]]))
    expected = (torch.from_numpy(frames[first]).float().permute(2, 0, 1).expand(3, -1, -1) - 127.5) / 127.5
    assert torch.allclose(batch["oct"][0], expected)
    weighted = add_synthetic(data, syn_root, seed=0, per_class=3, real_fraction=0.8, num_classes=4)
    real_share = (weighted.train_idx < n).mean()
    assert 0.7 < real_share < 0.9 and weighted.n_real == mixed.n_real
    with pytest.raises(DataError, match="fewer than 4 synthetic samples"):
        add_synthetic(data, syn_root, seed=0, per_class=4, real_fraction=None, num_classes=4)
