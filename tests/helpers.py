"""Shared test helpers: the project root, running the CLI tools, a tiny throw-away project, typed configs."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", CI="1", HF_HUB_OFFLINE="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop("MEDREPRO_PARAMS_OVERRIDE", None)
    return env


def run(cmd: list[str] | str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, shell=isinstance(cmd, str))
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


TINY = {
    "data": {"synth_mm": {"n_train": 48, "n_val": 16, "n_test": 24, "gen_size": 32, "image_size": 16}},
    "splits": {"ratios": [1.0]},
    "downstream": {
        "methods": ["densenet121"],
        "models": {"densenet121": {"arch": "densenet121", "kwargs": {"growth_rate": 4, "block_config": [1, 1]},
                                   "pretrained": False, "weights": None}},
        "train": {"max_epochs": 2, "batch_size": 16, "min_steps_per_epoch": 2, "warmup_epochs": 1},
        "synthetic": {"per_class": 2, "real_fraction": None},
    },
    "diffusion": {"variants": ["class", "vap"], "image_size": 16, "text": {"max_tokens": 16, "pool": 4},
                  "uvit": {"patch_size": 4, "dim": 16, "depth": 2, "heads": 2, "pcm_tokens": 4},
                  "train": {"steps": 4, "checkpoint_every": 2, "batch_size": 8, "warmup_steps": 1},
                  "sample": {"steps": 2, "batch_size": 64}},
    "gan": {"steps": 2, "batch_size": 4, "checkpoint_every": 1},
    "synthesis": {"generators": ["vap"], "ratios": [1.0], "per_class": 2, "grid_per_class": 2,
                  "generator_data": {"variant": "vap", "ratios": []}},
    "generation_metrics": {"per_class": 4, "n_boot": 20, "generators": ["class", "vap", "gan"]},
    "train": {"max_epochs": 2, "batch_size": 8, "min_steps_per_epoch": 2, "warmup_epochs": 1},
    "hica": {"subsets": ["shot_1"], "ablations": ["no_local"], "ablation_subsets": ["shot_1"],
             "unseen": {"subset": "shot_1"}, "noise": {"kinds": ["replace"], "subset": "shot_1"},
             "explain": {"subset": "shot_1", "per_class": 1},
             "embed_dim": 16, "text": {"max_tokens": 16},
             "rois": {"k": 1}, "pretrain": {"clusters": 2, "image_epochs": 1, "batch_size": 16, "text_epochs": 1},
             "zeroshot": {"epochs": 1, "batch_size": 16},
             "train": {"max_epochs": 1, "batch_size": 8, "min_steps_per_epoch": 1, "warmup_epochs": 1}},
    "ei": {"vfm": {"kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}},
           "vfm_pretrain": {"pool_size": 24, "epochs": 1, "image_size": 16, "gen_size": 32, "batch_size": 8},
           "table3_methods": ["concat", "unimodel"], "table7_methods": ["lora"], "table8_methods": ["lora"],
           "ablations": ["insert_layer-1", "lambda_aa-0.0"]},
}


@functools.lru_cache(maxsize=1)
def _root_stages() -> tuple:
    from medrepro.dvc_bridge import resolve_stages

    return tuple(resolve_stages(ROOT))


def root_stages() -> list:
    """``resolve_stages(ROOT)``, resolved once per test session (DVC's resolution takes ~10 s); each caller gets its
    own copy."""
    return copy.deepcopy(list(_root_stages()))


def base_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def config(overrides: dict | None = None):
    """The typed config of params.yaml merged with ``overrides`` (checked as a stage would check it)."""
    from medrepro.config import check_params, deep_merge, from_params

    params = deep_merge(base_params(), overrides or {})
    check_params(params)
    return from_params(params)


def train_config(**overrides: Any):
    """params.yaml's ``train`` protocol with ``overrides`` (``augment`` given as a mapping replaces it whole)."""
    import dataclasses

    from medrepro.config import AugmentConfig

    cfg = config().train
    if "augment" in overrides:
        overrides["augment"] = AugmentConfig(**{"hflip": False, "crop_pad": 0, "color_jitter": 0.0,
                                                **overrides["augment"]})
    return dataclasses.replace(cfg, **overrides)


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the tracked project files to ``dest``, shrink params.yaml, and commit it in a fresh git repo."""
    from medrepro.config import deep_merge

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("results/", "dvc.lock", "docs/results.md")) or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    params = deep_merge(base_params(), overrides if overrides is not None else TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "ci@medrepro.invalid"], dest)  # dvc exp run commits; CI may lack an identity
    run(["git", "config", "user.name", "medrepro tests"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest


def write_predictions(path: Path, y, skill: float, seeds, rng, classes=("normal", "drusen", "fluid", "drusen_fluid")):
    """A predictions parquet (runner format) of ``seeds`` runs whose true class gets ``skill`` extra logit; the
    per-seed frames."""
    import numpy as np
    import pandas as pd

    frames = []
    for s in seeds:
        logits = rng.normal(size=(len(y), len(classes)))
        logits[np.arange(len(y)), y] += skill
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        frames.append(pd.DataFrame({"seed": s, "sample_id": [f"t{i:04d}" for i in range(len(y))], "label": y,
                                    **{f"score_{c}": p[:, k] for k, c in enumerate(classes)}}))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames).to_parquet(path, index=False)
    return frames
