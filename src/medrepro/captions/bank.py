"""The class-specific prompt bank (VAP-Diffusion Sec. 2.3) and the items a dataset's captioning covers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medrepro.captions.prompts import modality_of
from medrepro.captions.vaps import Item
from medrepro.errors import DataError, ParamsError
from medrepro.io import atomic_path

BANK_COLUMNS = ["bank", "seed", "label", "class_name", "modality", "sample_id", "t_mix"]


def middle_slice(volume: Path, out: Path) -> Path:
    """The middle slice of a uint8 volume (S, H, W) ``.npy`` as a PNG at ``out`` (written once, atomically)."""
    if out.is_file():
        return out
    if not volume.is_file():
        raise DataError(f"volume named by the manifest is missing: {volume}")
    try:
        arr = np.load(volume, mmap_mode="r")
        frame = np.asarray(arr[arr.shape[0] // 2], dtype=np.uint8)
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"corrupt or unreadable volume named by the manifest: {volume}: {exc}") from exc
    with atomic_path(out) as tmp:
        Image.fromarray(frame.squeeze()).save(tmp, format="PNG")
    return out


def dataset_items(dataset: str, manifest: pd.DataFrame, classes: dict[str, Any], root: Path,
                  splits: tuple[str, ...], slice_dir: Path | None = None) -> list[Item]:
    """Every image of the samples in ``splits``, one per modality column (manifest order).

    A volume is captioned by its middle slice, rendered once as a PNG under ``slice_dir``.
    """
    rows = manifest[manifest["split"].isin(splits)]
    if classes.get("volumetric") and slice_dir is None:
        raise DataError(f"{dataset}: volumes are captioned by their middle slice, which needs a slice folder")
    items = []
    for column in classes["modalities"]:
        mod = modality_of(dataset, column)
        for sid, rel in zip(rows["sample_id"], rows[f"path_{column}"], strict=True):
            path = root / rel
            if classes.get("volumetric"):
                path = middle_slice(path, slice_dir / column / f"{sid}.png")
            items.append(Item(str(sid), column, mod, path))
    return items


def _labelled(manifest: pd.DataFrame, classes: dict[str, Any]) -> pd.DataFrame:
    """(sample_id, label) pairs; a multilabel sample appears once per positive class."""
    if "labels" in manifest.columns:
        pairs = [(sid, k) for sid, ls in zip(manifest["sample_id"], manifest["labels"], strict=True)
                 for k, v in enumerate(ls) if v]
        return pd.DataFrame(pairs, columns=["sample_id", "label"])
    return manifest[["sample_id", "label"]].astype({"label": "int64"})


def build_bank(captions: pd.DataFrame, manifest: pd.DataFrame, classes: dict[str, Any], subsets: pd.DataFrame,
               subset: str, unseen_split: str) -> pd.DataFrame:
    """Per class, the t_mix of the training samples in ``subset`` (one bank per split seed), plus an "unseen" bank.

    The unseen bank holds the t_mix of ``unseen_split`` samples, which the diffusion model is not trained on
    (VAP-Diffusion Table 2).
    """
    if subset not in subsets.columns:
        raise ParamsError(f"captions.bank_subset: {subset!r} is not a subset column of splits "
                          f"(has: {', '.join(c for c in subsets.columns if c not in ('sample_id', 'seed'))})")
    names = list(classes["classes"])
    labelled = _labelled(manifest, classes).merge(manifest[["sample_id", "split"]], on="sample_id")
    caps = captions[["sample_id", "modality", "t_mix"]]
    frames = []
    for seed, chosen in subsets[subsets[subset]].groupby("seed", sort=True):
        part = labelled[labelled["sample_id"].isin(chosen["sample_id"]) & (labelled["split"] == "train")]
        frames.append(part.assign(bank="train", seed=int(seed)))
    unseen = labelled[labelled["split"] == unseen_split]
    frames.append(unseen.assign(bank="unseen", seed=-1))
    bank = pd.concat(frames, ignore_index=True).merge(caps, on="sample_id", how="left")
    lacking = bank[bank["t_mix"].isna()]
    if not lacking.empty:
        raise DataError(f"prompt bank: sample {lacking['sample_id'].iloc[0]!r} ({lacking['bank'].iloc[0]} bank) has no "
                        f"caption; captions.splits must include the train split and {unseen_split!r}")
    bank["class_name"] = [names[k] for k in bank["label"]]
    bank = bank[BANK_COLUMNS].sort_values(["bank", "seed", "label", "modality", "sample_id"], kind="stable")
    return bank.reset_index(drop=True)
