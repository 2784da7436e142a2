"""The class-specific prompt bank (VAP-Diffusion Sec. 2.3) and the items a dataset's captioning covers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medrepro.captions.prompts import modality_of
from medrepro.captions.vaps import Item
from medrepro.errors import DataError, ParamsError

BANK_COLUMNS = ["bank", "seed", "label", "class_name", "modality", "sample_id", "t_mix"]


def dataset_items(dataset: str, manifest: pd.DataFrame, classes: dict[str, Any], root: Path,
                  splits: tuple[str, ...]) -> list[Item]:
    """Every image of the samples in ``splits``, one per modality column (manifest order)."""
    if classes.get("volumetric"):
        raise DataError(f"{dataset}: captioning volumes (one image per slice) is not supported yet")
    rows = manifest[manifest["split"].isin(splits)]
    items = []
    for column in classes["modalities"]:
        mod = modality_of(dataset, column)
        items += [Item(str(sid), column, mod, root / rel) for sid, rel in zip(rows["sample_id"],
                                                                              rows[f"path_{column}"], strict=True)]
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
