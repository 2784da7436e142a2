"""The train_diffusion stage's library at scale and across a crash: text contexts on disk (float16) or encoded per
batch, the text tower on the run's device, finished (seed, modality) generators kept across a rerun."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from captions_fixtures import prepared_synth
from helpers import config
from safetensors.torch import load_file

import medrepro.vap.runs as runs
import medrepro.vap.synthesize as synthesize
from medrepro import layout
from medrepro.data.generator_cache import build_generator_cache
from medrepro.models.text import TextTowerConfig, build_text_tower
from medrepro.vap.conditions import DiskContexts, EncodedPerBatch, encode_conditions

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands for a kill -9 mid-run (an Exception, so a regression fails the test, not the whole session)."""


TEXTS = ["a dark brown asymmetric lesion", "benign nevus", "", "pink scaly plaque with dotted vessels", "a nevus"]


@pytest.fixture(scope="module")
def minilm():
    return build_text_tower(TextTowerConfig(kind="minilm", max_tokens=16))


def test_training_contexts_are_float16_rows_on_disk(minilm, tmp_path, monkeypatch):
    calls = []
    encode = type(minilm).encode
    monkeypatch.setattr(type(minilm), "encode", lambda self, texts, **kw: calls.append(len(texts)) or
                        encode(self, texts, **kw))
    store = tmp_path / "ctx.f16"
    conds = encode_conditions(torch.tensor([0, 1, 0, 1, 1]), 2, TEXTS, minilm, pool=2, store=store)
    assert isinstance(conds.context, DiskContexts) and conds.mask is None  # no (N, L, D) tensor in RAM
    assert store.stat().st_size == 5 * 8 * 384 * 2  # N × (16 / pool 2) × D × float16
    monkeypatch.setattr(type(minilm), "encode", encode)
    from medrepro.vap.conditions import pool_tokens

    full, mask = pool_tokens(*minilm.encode(TEXTS), 2)
    rows = torch.tensor([3, 0, 3])
    labels, ctx, got_mask = conds.batch(rows, None, torch.device("cpu"))
    assert ctx.dtype == torch.float32 and torch.equal(ctx, full[rows].half().float())
    assert torch.equal(got_mask, mask[rows]) and labels.tolist() == [1, 0, 1]
    _, dropped, dropped_mask = conds.batch(rows, torch.tensor([False, True, False]), torch.device("cpu"))
    assert torch.equal(dropped[1], conds.null_context[0]) and torch.equal(dropped_mask[1], conds.null_mask[0])
    calls.clear()
    monkeypatch.setattr(type(minilm), "encode", lambda self, texts, **kw: calls.append(len(texts)) or
                        encode(self, texts, **kw))
    from medrepro.vap.conditions import write_contexts

    write_contexts(minilm, TEXTS, 2, tmp_path / "chunked.f16", chunk=2)
    assert calls == [2, 2, 1]  # encoded a chunk at a time
    assert (tmp_path / "chunked.f16").read_bytes() == store.read_bytes()


def test_sampling_contexts_are_encoded_per_batch(minilm, monkeypatch):
    calls = []
    encode = type(minilm).encode
    monkeypatch.setattr(type(minilm), "encode", lambda self, texts, **kw: calls.append(list(texts)) or
                        encode(self, texts, **kw))
    conds = encode_conditions(torch.zeros(5, dtype=torch.long), 2, TEXTS, minilm, pool=1)
    assert isinstance(conds.context, EncodedPerBatch) and calls == [[""]]  # only the null text so far
    _, ctx, mask = conds.batch(torch.tensor([1, 4]), None, torch.device("cpu"))
    assert calls[-1] == [TEXTS[1], TEXTS[4]]
    full, full_mask = encode(minilm, TEXTS)
    assert torch.allclose(ctx, full[[1, 4]], atol=1e-5) and torch.equal(mask, full_mask[[1, 4]])


# ------------------------------------------------------------------------------------------------ the stage
def _cfg():
    return config({"seeds": [0], "device": "cpu", "diffusion": {
        "image_size": 8, "text": {"max_tokens": 8, "pool": 2},
        "uvit": {"patch_size": 4, "dim": 16, "depth": 2, "heads": 2, "pcm_tokens": 4},
        "train": {"steps": 4, "checkpoint_every": 2, "batch_size": 4, "warmup_steps": 1},
        "sample": {"steps": 2, "batch_size": 3}}})


@pytest.fixture
def stage_data(tmp_path, monkeypatch):
    """A tiny prepared synth_mm (two modalities) with a caption of every (sample, modality), in the cwd."""
    monkeypatch.chdir(tmp_path)
    _, manifest, classes = prepared_synth(Path("data"), n_train=8, n_val=4, gen_size=16)
    rows = [{"sample_id": sid, "modality": m, "t_mix": f"{m} image of a {classes['classes'][y]} case {i % 3}"}
            for i, (sid, y) in enumerate(zip(manifest["sample_id"], manifest["label"], strict=True))
            for m in classes["modalities"]]
    layout.captions("synth_mm").parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(layout.captions("synth_mm"))
    build_generator_cache(layout.prepared("synth_mm"), layout.generator_images("synth_mm"), 8, workers=1)
    return classes["modalities"]


def _weights(modalities) -> dict[str, dict[str, torch.Tensor]]:
    paths = layout.generator("synth_mm", "vap", "ratio_1.0")
    return {m: load_file(str(paths.weights(0, m))) for m in modalities}


def test_a_rerun_after_a_crash_keeps_the_finished_modality(stage_data, monkeypatch):
    modalities = stage_data
    cfg = _cfg()
    devices = []
    real_build = runs.build_text_tower
    monkeypatch.setattr(runs, "build_text_tower", lambda tcfg, *a: devices.append(a) or real_build(tcfg, *a))
    straight = runs.run_train_diffusion(cfg, "synth_mm", "vap")
    assert devices == [(torch.device("cpu"),)] * len(modalities)  # the tower encodes on the run's device
    want = _weights(modalities)
    paths = layout.generator("synth_mm", "vap", "ratio_1.0")
    assert not list(paths.checkpoints.iterdir())  # no kept runs, contexts or checkpoints after a finished stage
    if Path("/proc/self/fd").is_dir():  # and the deleted contexts file is closed: its disk space is back
        assert not [f for f in Path("/proc/self/fd").iterdir() if "contexts.f16" in str(f.resolve())]

    trained = []
    real_train = runs.train_generator

    def crash_on_second(net, x0, conds, dc, gen, device, precision, ckpt, run_id, desc, **kw):
        trained.append(desc)
        if len(trained) == 2:
            raise Killed  # killed while training the second modality
        return real_train(net, x0, conds, dc, gen, device, precision, ckpt, run_id, desc, **kw)

    shutil.rmtree(paths.models)  # as Snakemake and DVC do before a rerun
    monkeypatch.setattr(runs, "train_generator", crash_on_second)
    with pytest.raises(Killed):
        runs.run_train_diffusion(cfg, "synth_mm", "vap")
    assert not list(paths.checkpoints.glob("*.contexts.f16"))  # the store goes with the run
    shutil.rmtree(paths.models)
    trained.clear()
    again = runs.run_train_diffusion(cfg, "synth_mm", "vap")
    assert trained == [f"synth_mm/{modalities[1]}/vap/seed0"]  # only the modality that had not finished
    got = _weights(modalities)
    assert all(torch.equal(got[m][k], want[m][k]) for m in modalities for k in want[m])
    assert [r["kept_from_earlier_run"] for r in again["runs"]] == [True, False]
    assert [r["history"] for r in again["runs"]] == [r["history"] for r in straight["runs"]]
    assert not list(paths.checkpoints.iterdir())


def test_a_changed_param_or_input_retrains_a_kept_run(stage_data, monkeypatch):
    from medrepro.vap import units

    cfg = _cfg()
    runs.run_train_diffusion(cfg, "synth_mm", "vap")
    paths = layout.generator("synth_mm", "vap", "ratio_1.0")
    record = runs.train_one(cfg, "synth_mm", "vap", "ratio_1.0", paths, (0, stage_data[0]))
    done = paths.checkpoint(0, stage_data[0]).with_suffix(".done.json")
    assert done.is_file() and record["kept_from_earlier_run"] is False

    def no_training(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(runs, "train_generator", no_training)
    assert runs.train_one(cfg, "synth_mm", "vap", "ratio_1.0", paths, (0, stage_data[0]))["kept_from_earlier_run"]
    caps = pd.read_parquet(layout.captions("synth_mm"))
    caps["t_mix"] = caps["t_mix"] + " (recaptioned)"
    caps.to_parquet(layout.captions("synth_mm"))
    with pytest.raises(Killed):  # other captions: trains again
        runs.train_one(cfg, "synth_mm", "vap", "ratio_1.0", paths, (0, stage_data[0]))
    stage = "medrepro.stages.train_diffusion"  # the stage whose source keys the run
    assert units.unit_key({}, stage) != units.unit_key({}, "medrepro.stages.train_gan")  # code
    assert units.unit_key({"steps": 4}, stage) != units.unit_key({"steps": 6}, stage)  # params
    assert units.unit_key({}, stage, np.zeros(2, np.uint8)) != units.unit_key({}, stage, np.ones(2, np.uint8))  # inputs


def test_synthesis_encodes_on_the_device_per_batch(stage_data, monkeypatch):
    cfg = _cfg()
    runs.run_train_diffusion(cfg, "synth_mm", "vap")
    weights = layout.generator("synth_mm", "vap", "ratio_1.0").weights(0, stage_data[0])
    devices, sizes = [], []
    real_build = synthesize.build_text_tower

    def build(tcfg, *a):
        devices.append(a)
        tower = real_build(tcfg, *a)
        encode = tower.encode
        tower.encode = lambda texts, **kw: sizes.append(len(texts)) or encode(texts, **kw)
        return tower

    monkeypatch.setattr(synthesize, "build_text_tower", build)
    images = synthesize.generate(weights, ["a"] * 7, np.array([0, 1, 0, 1, 0, 1, 0]), 0, 8, 1, cfg,
                                 torch.device("cpu"))
    assert images.shape == (7, 8, 8, 1) and images.dtype == np.uint8
    assert devices == [(torch.device("cpu"),)] and sizes == [1, 3, 3, 1]  # null text, then sampling batches of 3


def test_the_gan_stage_keeps_its_finished_modality_too(stage_data, monkeypatch):
    import medrepro.vap.gan_runs as gan_runs

    cfg = config({"seeds": [0], "device": "cpu", "diffusion": {"image_size": 8},
                  "gan": {"steps": 2, "batch_size": 4, "checkpoint_every": 1}})
    straight = gan_runs.run_train_gan(cfg, "synth_mm")
    paths = layout.generator("synth_mm", "gan", "ratio_1.0")
    want = {m: load_file(str(paths.weights(0, m))) for m in stage_data}
    trained = []
    real_train = gan_runs.train_gan

    def crash_on_second(*args, **kwargs):
        trained.append(args[-1])
        if len(trained) == 2:
            raise Killed
        return real_train(*args, **kwargs)

    monkeypatch.setattr(gan_runs, "train_gan", crash_on_second)
    shutil.rmtree(paths.models)
    with pytest.raises(Killed):
        gan_runs.run_train_gan(cfg, "synth_mm")
    shutil.rmtree(paths.models)
    trained.clear()
    again = gan_runs.run_train_gan(cfg, "synth_mm")
    assert trained == [f"synth_mm/{stage_data[1]}/gan"]
    assert all(torch.equal(load_file(str(paths.weights(0, m)))[k], want[m][k]) for m in stage_data for k in want[m])
    assert [r["kept_from_earlier_run"] for r in again["runs"]] == [True, False]
    assert [r["history"] for r in again["runs"]] == [r["history"] for r in straight["runs"]]
