"""Stage vap_eval's library: each generator's images against the real test split (VAP-Diffusion Tables 1-2).

Per (dataset, modality, seed) the generators of ``generation_metrics.generators`` (diffusion variants, GAN) each make
``generation_metrics.per_class`` images per class — class counts in the test split's proportions — from the train
prompt bank (Table 1) and from the unseen bank (Table 2: captions of samples no generator saw). FD, IS, precision
and recall (k-NN manifolds) are computed on the features of ``generation_metrics.extractor``: the FID Inception-v3
(paper profile) or, offline, a downstream classifier trained on all real training data (columns then say which:
``FD_densenet121``, never FID).
Every metric cell has its 95 % bootstrap interval (``<column>_ci_low/_ci_high``: real and generated samples
resampled, one bootstrap per metric shared by every generator, so differences are paired); with several seeds each
table also has a mean row per generator (``seed`` empty: the mean, ``<column>_std`` over seeds and the interval of
the mean, replicate i = mean of the seeds' replicates i, the seeds' bootstraps being independent). Paired
intervals of vap − class, vap − vap_nopcm (and vap − vap_shuffled, where evaluated) go to ``vap_gaps.csv``: per
seed, and of the mean over seeds.

Two measures of what the images show, besides the feature statistics:
- ``CAS`` (classification accuracy score): the ``generation_metrics.classifier`` tower trained on all real data
  (the same run as the offline extractor) classifies each generated image; accuracy against the class it was
  generated for. ``real_acc``: that classifier's accuracy on the real test images (same crops), ``CAS_ratio`` =
  CAS / real_acc. Per modality: a tower sees one modality, so real_acc is below 1 where the modality alone cannot
  tell the classes apart. ``CAS_skill`` = (CAS − 1/K) / (real_acc − 1/K): the same ratio above chance (K
  classes), 0 for a generator whose class the classifier cannot read, 1 when it reads it as well as on real images.
- ``adherence`` (prompt adherence, ``medrepro.metrics.adherence``): each image measured by the ``attributes``
  captioner's code against the t_mix its row was drawn with — for a variant without text the caption that row
  would have used — per attribute (``adherence_<attribute>``: fraction equal for words, within-class correlation
  for numbers) and their mean; ``adherence_real``: the mean for the rows' real source images at the same size (the
  ceiling). NaN where the bank's captions are not the ``attributes`` captioner's (an MLLM's free text has no parser).
Their intervals resample the generated rows (one draw shared by every generator: paired), real_acc's the test
images; ``vap_gaps.csv`` also holds vap − class and vap − vap_nopcm of CAS and of every adherence column.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrepro import layout
from medrepro.captions.prompts import Modality, modality_of
from medrepro.config import Config
from medrepro.data.generator_cache import open_generator_cache
from medrepro.data.loaders import DEFAULT_MEAN, DEFAULT_STD
from medrepro.data.manifest import load_manifest
from medrepro.devices import peak_mem_mb, resolve_device
from medrepro.errors import DataError, ParamsError
from medrepro.io import atomic_path
from medrepro.metrics.adherence import Adherence, measure_images, parse_caption
from medrepro.metrics.extractors import FeatureExtractor, inception_extractor, metric_columns, model_extractor
from medrepro.metrics.generation import (
    METRICS,
    accuracy_draws,
    generation_draws,
    generation_metrics,
    percentile_interval,
)
from medrepro.metrics.resampled import resample_counts
from medrepro.train.downstream import load_classifier
from medrepro.train.saved import description
from medrepro.vap.synthesize import bank_rows, draw_sources, generate_any

log = logging.getLogger("medrepro")

#: the comparisons of Tables 1-2 that get a paired interval: (baseline or mutation, VAP-Diffusion); vap_shuffled:
#: captions shuffled within class (the `mechanisms` experiment)
GAPS = (("class", "vap"), ("vap_nopcm", "vap"), ("vap_shuffled", "vap"))


def classifier_extractor(dataset: str, method: str, seed: int, modality: str,
                         device: torch.device) -> FeatureExtractor:
    """Pooled features and class scores of ``modality``'s tower of a downstream classifier trained on all real
    training data (``models/downstream/<dataset>/<method>/real/ratio_1.0``)."""
    model, desc = load_classifier(layout.downstream(dataset, method, "real", layout.FULL).weights(seed))
    tower = model.towers[modality].to(device).eval()
    if not hasattr(tower, "get_classifier") or tower.get_classifier() is None:
        raise ParamsError(f"generation_metrics.classifier {method!r}: its towers need their own heads "
                          "(downstream.fusion: mean_logits)")
    mean = torch.tensor(DEFAULT_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(DEFAULT_STD, device=device).view(1, 3, 1, 1) * 255
    return model_extractor(method, lambda x: tower.forward_head(tower.forward_features(x), pre_logits=True),
                           tower.get_classifier(), lambda x: (x.float() - mean) / std, device=device)


def _extractor(cfg: Config, dataset: str, seed: int, modality: str, device: torch.device) -> FeatureExtractor:
    gm = cfg.generation_metrics
    if gm.extractor == "inception":
        return inception_extractor(gm.inception_weights, device)
    return classifier_extractor(dataset, gm.classifier, seed, modality, device)


def _cas_extractor(cfg: Config, dataset: str, seed: int, modality: str, device: torch.device,
                   ext: FeatureExtractor) -> FeatureExtractor:
    """The real-data classifier whose class scores give CAS: the feature extractor itself when it is that
    classifier (``generation_metrics.extractor: classifier``), else the classifier's own tower."""
    if cfg.generation_metrics.extractor == "classifier":
        return ext
    return classifier_extractor(dataset, cfg.generation_metrics.classifier, seed, modality, device)


def _adherence_modality(dataset: str, modality: str, bank: pd.DataFrame) -> Modality | None:
    """The captioner modality whose measurements the bank's captions state, or None (logged: why no adherence)."""
    try:
        mod = modality_of(dataset, modality)
        parse_caption(str(bank.loc[bank["modality"] == modality, "t_mix"].iloc[0]), mod)
    except (ParamsError, ValueError, IndexError) as exc:
        log.info("vap_eval %s/%s: no prompt adherence (captions not from the attributes captioner): %s",
                 dataset, modality, str(exc)[:200])
        return None
    return mod


def _chw3(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def class_counts(labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """Generated images per class: ``per_class · K`` in all, split in the test split's class proportions."""
    share = np.bincount(labels, minlength=num_classes) / len(labels)
    return np.maximum(1, np.round(share * per_class * num_classes)).astype(int)


def evaluate_dataset(cfg: Config, dataset: str, device: torch.device,
                     extractor: Callable[..., FeatureExtractor] = _extractor) -> tuple[list[dict], list[dict]]:
    """(metric rows, paired-gap rows) of every (modality, seed, bank, variant) of ``dataset``."""
    prepared = layout.prepared(dataset)
    manifest, classes = load_manifest(prepared)
    names, modalities = list(classes["classes"]), list(classes["modalities"])
    size = cfg.diffusion.image_size  # real and generated images as the generators see them: centre crops
    test = np.flatnonzero(manifest["split"].to_numpy() == "test")
    test_labels = manifest["label"].to_numpy()[test].astype(np.int64)
    row_of = {str(sid): i for i, sid in enumerate(manifest["sample_id"].astype(str))}
    counts = class_counts(test_labels, len(names), cfg.generation_metrics.per_class)
    gm = cfg.generation_metrics
    rows, gaps = [], []
    draws_of: dict[tuple[str, str, str, str], list[tuple[float, np.ndarray]]] = {}  # per row: (value, replicates)
    gap_draws: dict[tuple[str, str, str, str, str], list[tuple[float, np.ndarray]]] = {}
    for seed in cfg.seeds:
        banks = {"train": bank_rows(dataset, "train", seed, names, modalities),
                 "unseen": bank_rows(dataset, "unseen", seed, names, modalities)}
        draws = {b: draw_sources(bank, counts, modalities, np.random.default_rng([seed, 2, i]))
                 for i, (b, bank) in enumerate(banks.items())}
        i_bank = {b: i for i, b in enumerate(banks)}
        for j, m in enumerate(modalities):
            ext = extractor(cfg, dataset, seed, m, device)
            cols = metric_columns(ext.name)
            frames, offsets = open_generator_cache(layout.generator_images(dataset), m, size)
            real_images = _chw3(np.asarray(frames[offsets[test]]))
            real_feats, real_probs = ext(real_images)
            cas_ext = _cas_extractor(cfg, dataset, seed, m, device, ext)
            if cas_ext is not ext:
                real_probs = cas_ext(real_images)[1]
            real_acc = accuracy_draws(real_probs, test_labels, resample_counts(len(test), gm.n_boot, [seed, 4, j]))
            mod = _adherence_modality(dataset, m, banks["train"])
            feats: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
            cas_probs: dict[tuple[str, str], np.ndarray] = {}
            measured: dict[tuple[str, str], list[dict]] = {}
            for variant in gm.generators:
                weights = layout.generator(dataset, variant, cfg.diffusion.train_subset).weights(seed, m)
                text = bool(description(weights).get("text"))  # diffusion variants with t_mix only
                for b, drawn in draws.items():
                    if not text and b == "unseen":  # no text: the unseen bank changes nothing
                        for store in (feats, cas_probs, measured):
                            if (variant, "train") in store:
                                store[(variant, b)] = store[(variant, "train")]
                        continue
                    labels = drawn["label"].to_numpy(np.int64)
                    texts = drawn[m].astype(str).tolist() if text else None
                    images = generate_any(weights, texts, labels, seed * 1000 + 500 + j, size, frames.shape[-1],
                                          cfg, device)
                    feats[(variant, b)] = ext(_chw3(images))
                    cas_probs[(variant, b)] = (feats[(variant, b)][1] if cas_ext is ext
                                               else cas_ext(_chw3(images))[1])
                    if mod is not None:
                        measured[(variant, b)] = measure_images(images, mod)
            for b in draws:
                generators = [v for v in gm.generators if (v, b) in feats]
                boot = {metric: generation_draws(real_feats, [feats[(v, b)][0] for v in generators],
                                                 [feats[(v, b)][1] for v in generators], metric, gm.n_boot, seed, gm.k)
                        for metric in METRICS}  # one bootstrap per metric: every generator on the same real draws
                seen = _seen_measures(draws[b], m, mod, generators, cas_probs, measured, b, frames, offsets, row_of,
                                      gm.n_boot, [seed, 3, j, i_bank[b]], real_acc)
                for g, variant in enumerate(generators):
                    f, p = feats[(variant, b)]
                    scores = generation_metrics(real_feats, f, p, gm.k)
                    intervals, values = {}, {}
                    for column, (value, reps) in seen[variant].items():
                        draws_of.setdefault((m, b, column, variant), []).append((value, reps))
                        intervals.update(_interval_cells(column, reps))
                        values[column] = value
                    for metric in METRICS:
                        reps = boot[metric][1][:, g]
                        draws_of.setdefault((m, b, cols[metric], variant), []).append((scores[metric], reps))
                        intervals.update(_interval_cells(cols[metric], reps))
                    rows.append({"dataset": dataset, "modality": m, "generator": variant, "bank": b, "seed": seed,
                                 "n_real": len(real_feats), "n_fake": len(f),
                                 **{cols[k]: scores[k] for k in METRICS}, **values, **intervals})
                for a, v in GAPS:
                    if a not in generators or v not in generators:
                        continue
                    for column, (value_v, reps_v) in seen[v].items():
                        if column in ("real_acc", "adherence_real"):
                            continue  # the same for every generator
                        value_a, reps_a = seen[a][column]
                        if np.isnan(value_v - value_a):
                            continue  # not measured (free-text captions) or no spread: no gap
                        gap_key = (m, b, column, a, v)
                        gap_draws.setdefault(gap_key, []).append((value_v - value_a, reps_v - reps_a))
                        gaps.append(_gap_row(dataset, gap_key, seed, *gap_draws[gap_key][-1]))
                    ia, iv = generators.index(a), generators.index(v)
                    for metric in METRICS:
                        values, reps = boot[metric]
                        gap_key = (m, b, cols[metric], a, v)
                        gap_draws.setdefault(gap_key, []).append((float(values[iv] - values[ia]),
                                                                  reps[:, iv] - reps[:, ia]))
                        gaps.append(_gap_row(dataset, gap_key, seed, *gap_draws[gap_key][-1]))
    if len(cfg.seeds) > 1:  # the mean over seeds: replicate i = mean of the seeds' replicates i
        rows += _mean_rows(dataset, draws_of, len(test))
        gaps += [_gap_row(dataset, key, None, float(np.mean([g for g, _ in per_seed])),
                          np.mean([r for _, r in per_seed], axis=0)) for key, per_seed in gap_draws.items()]
    chance = 1.0 / len(names)
    for row in rows:  # of the mean rows too: the ratios of the mean CAS to the mean real accuracy
        row["CAS_ratio"] = row["CAS"] / row["real_acc"] if row.get("real_acc") else float("nan")
        above = row["real_acc"] - chance
        row["CAS_skill"] = (row["CAS"] - chance) / above if above > 0 else float("nan")
    return rows, gaps


def _seen_measures(drawn: pd.DataFrame, modality: str, mod: Modality | None, generators: list[str],
                   cas_probs: dict[tuple[str, str], np.ndarray], measured: dict[tuple[str, str], list[dict]], bank: str,
                   frames: np.ndarray, offsets: np.ndarray, row_of: dict[str, int], n_boot: int, seed: list[int],
                   real_acc: tuple[float, np.ndarray]) -> dict[str, dict[str, tuple[float, np.ndarray]]]:
    """Per generator: column → (value, bootstrap replicates) of CAS, real_acc and the adherence columns, the
    generated rows resampled once for every generator (paired)."""
    labels = drawn["label"].to_numpy(np.int64)
    counts = resample_counts(len(drawn), n_boot, seed)
    out: dict[str, dict[str, tuple[float, np.ndarray]]] = {
        v: {"CAS": accuracy_draws(cas_probs[(v, bank)], labels, counts), "real_acc": real_acc} for v in generators}
    if mod is None:
        nan = (float("nan"), np.full(n_boot, np.nan))
        for v in generators:
            out[v].update({"adherence": nan, "adherence_real": nan})
        return out
    stated = [parse_caption(t, mod) for t in drawn[modality].astype(str)]
    ids = drawn["sample_id"].astype(str).tolist()
    missing = [s for s in ids if s not in row_of]
    if missing:
        raise DataError(f"prompt bank sample {missing[0]!r} is not in the prepared manifest (rerun the caption stage)")
    sources = np.stack([np.asarray(frames[offsets[row_of[s]]]) for s in ids])
    adh = Adherence(stated, labels, [measured[(v, bank)] for v in generators] + [measure_images(sources, mod)],
                    mod.kind)
    values, reps = adh.draws(counts)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN replicate (no spread) stays NaN
        summary, summary_reps = np.nanmean(values, 1), np.nanmean(reps, 2)  # mean over the attributes
    for g, v in enumerate(generators):
        out[v].update({f"adherence_{a}": (float(values[g, k]), reps[:, g, k]) for k, a in enumerate(adh.attributes)})
        out[v]["adherence"] = (float(summary[g]), summary_reps[:, g])
        out[v]["adherence_real"] = (float(summary[-1]), summary_reps[:, -1])
    return out


def _interval_cells(column: str, draws: np.ndarray) -> dict[str, float]:
    if not np.isfinite(draws).any():  # a measure that does not apply (e.g. no adherence): no interval
        return {f"{column}_ci_low": float("nan"), f"{column}_ci_high": float("nan")}
    lo, hi = percentile_interval(draws)
    return {f"{column}_ci_low": lo, f"{column}_ci_high": hi}


def _mean_rows(dataset: str, draws_of: dict[tuple[str, str, str, str], list[tuple[float, np.ndarray]]],
               n_real: int) -> list[dict[str, Any]]:
    """Per (modality, bank, generator): each metric's mean over seeds, its std and the interval of the mean."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for (m, b, column, variant), per_seed in draws_of.items():
        row = rows.setdefault((m, b, variant), {"dataset": dataset, "modality": m, "generator": variant, "bank": b,
                                                "seed": None, "n_real": n_real, "n_fake": None})
        values = [v for v, _ in per_seed]
        row.update({column: float(np.mean(values)), f"{column}_std": float(np.std(values, ddof=1)),
                    **_interval_cells(column, np.mean([r for _, r in per_seed], axis=0))})
    return list(rows.values())


def _gap_row(dataset: str, key: tuple[str, str, str, str, str], seed: int | None, gap: float,
             draws: np.ndarray) -> dict[str, Any]:
    m, b, metric, a, v = key
    lo, hi = percentile_interval(draws)
    return {"dataset": dataset, "modality": m, "bank": b, "seed": seed, "metric": metric, "a": a, "b": v,
            "gap_b_minus_a": gap, "ci_low": lo, "ci_high": hi}


def run_vap_eval(cfg: Config, dataset: str) -> dict[str, Any]:
    """Evaluate every generator of ``dataset``; write its metric rows and paired gaps (parquet)."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    rows, gaps = evaluate_dataset(cfg, dataset, device)
    rows_file, gaps_file = layout.generation_eval(dataset)
    record = {"peak_mem_mb": peak_mem_mb(device), "wall_s": time.perf_counter() - t0}
    frames = [pd.DataFrame(rows).astype({"seed": "Int64", "n_fake": "Int64"}),
              pd.DataFrame(gaps).astype({"seed": "Int64"}) if gaps else pd.DataFrame(gaps)]
    for path, frame in zip((rows_file, gaps_file), frames, strict=True):
        with atomic_path(path) as tmp:
            frame.assign(**record).to_parquet(tmp, index=False)
    log.info("vap_eval %s: %d rows, %.0f s", dataset, len(rows), record["wall_s"])
    return record
