"""How well synth_mm captions match the generator's ground truth (``attr_*``), and how much they say of the label.

Words are read back from t_mix by the vocabulary of the ``attributes`` backend, so the check works for any backend
that uses the same words; a caption without the word counts as a disagreement.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.captions.backends.attributes import NUMBERS

_COUNT = {w: i for i, w in enumerate(NUMBERS)}
_LESIONS = re.compile(r"^(\w+) (small|medium|large) (whitish|white|yellow|orange|\w+(?: \w+)?) "
                      r"(round|oval|elongated)", re.I)
_BG = re.compile(r"on a (dim|normally lit|bright), (smooth|grainy|coarsely speckled)")
_TILT = re.compile(r"sloping (down|up) to the right")
_WIDTH = re.compile(r"pocket about ([0-9.]+) % of the width")


def fundus_words(t_mix: str) -> dict[str, object]:
    m, bg = _LESIONS.match(t_mix), _BG.search(t_mix)
    colour = m.group(3).lower() if m else None
    return {"present": bool(m), "count": _COUNT.get(m.group(1).lower()) if m else 0,
            "size": m.group(2).lower() if m else None, "colour": "white" if colour == "whitish" else colour,
            "shape": m.group(4).lower() if m else None,
            "illumination": {"normally lit": "normal"}.get(bg.group(1), bg.group(1)) if bg else None,
            "texture": bg.group(2) if bg else None}


def oct_words(t_mix: str) -> dict[str, object]:
    tilt, width = _TILT.search(t_mix), _WIDTH.search(t_mix)
    return {"pocket": "dark dome-shaped pocket" in t_mix, "tilt": tilt.group(1) if tilt else "level",
            "width": float(width.group(1)) / 100 if width else 0.0}


def synth_mm_agreement(captions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """Per attribute: the fraction of samples whose caption word equals the generator's (where it is visible).

    Lesion words are scored on drusen-positive samples (the lesions are the drusen); texture and illumination on
    every fundus; tilt direction on OCTs with |band_tilt| ≥ 0.05; pocket width as a correlation on fluid samples.
    """
    truth = labels.set_index("sample_id")
    f = captions[captions["modality"] == "fundus"].set_index("sample_id")
    o = captions[captions["modality"] == "oct"].set_index("sample_id")
    fw = pd.DataFrame([fundus_words(t) for t in f["t_mix"]], index=f.index).join(truth)
    ow = pd.DataFrame([oct_words(t) for t in o["t_mix"]], index=o.index).join(truth)
    drusen, fluid = (fw["label"] & 1).astype(bool), (ow["label"] & 2).astype(bool)
    pos = fw[drusen]
    tilted = ow[ow["attr_band_tilt"].abs() >= 0.05]
    wet = ow[fluid & (ow["width"] > 0)]
    return {
        "lesions_present_vs_drusen": float((fw["present"] == drusen).mean()),
        "size": float((pos["size"] == pos["attr_lesion_size"]).mean()),
        "colour": float((pos["colour"] == pos["attr_lesion_shade"]).mean()),
        "count_exact": float((pos["count"] == pos["attr_lesion_count"]).mean()),
        "count_within_1": float(((pos["count"] - pos["attr_lesion_count"]).abs() <= 1).mean()),
        "shape": float((pos["shape"] == pos["attr_lesion_shape"]).mean()),
        "texture": float((fw["texture"] == fw["attr_texture"]).mean()),
        "illumination": float((fw["illumination"] == fw["attr_illumination"]).mean()),
        "pocket_present_vs_fluid": float((ow["pocket"] == fluid).mean()),
        "tilt_direction": float(((tilted["tilt"] == "down") == (tilted["attr_band_tilt"] > 0)).mean()),
        "pocket_width_corr": float(np.corrcoef(wet["width"], wet["attr_fluid_width"])[0, 1]) if len(wet) > 2
        else float("nan"),
    }


def distinct_per_class(captions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Per (modality, class): distinct t_mix strings / samples."""
    df = captions.merge(labels[["sample_id", "label"]], on="sample_id")
    g = df.groupby(["modality", "label"])["t_mix"]
    return pd.DataFrame({"samples": g.size(), "distinct": g.nunique(), "ratio": g.nunique() / g.size()})


def text_vs_attribute_accuracy(captions: pd.DataFrame, labels: pd.DataFrame, folds: int = 5,
                               seed: int = 0) -> pd.DataFrame:
    """Cross-validated 4-class accuracy of a text-only classifier on t_mix, against the attributes' own ceiling.

    Text: TF-IDF of word 1–2-grams → logistic regression, per modality and on both captions joined. Reference: the
    same classifier on the generator's ground truth a caption could carry — the nuisance ``attr_*`` (class-
    independent) plus the finding visible in that modality (drusen in the fundus, fluid in the OCT; both for the
    joined captions). Text well above the reference would mean the captions leak the label beyond the image.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    truth = labels.set_index("sample_id")
    wide = captions.pivot(index="sample_id", columns="modality", values="t_mix").join(truth, how="inner")
    y = wide["label"].to_numpy()
    attrs = pd.get_dummies(wide[[c for c in wide.columns if c.startswith("attr_")]].astype(str)).astype(float)
    visible = {"fundus": ["drusen"], "oct": ["fluid"], "both": ["drusen", "fluid"]}
    findings = pd.DataFrame({"drusen": (wide["label"] & 1).astype(float), "fluid": ((wide["label"] // 2) % 2)
                             .astype(float)}, index=wide.index)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    rows = []
    for name, seen in visible.items():
        text = wide["fundus"] + " | " + wide["oct"] if name == "both" else wide[name]
        clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=2000))
        acc_text = cross_val_score(clf, text.to_numpy(), y, cv=cv).mean()
        ref = pd.concat([attrs, findings[seen]], axis=1).to_numpy()
        acc_ref = cross_val_score(LogisticRegression(max_iter=2000), ref, y, cv=cv).mean()
        rows.append({"captions": name, "text_accuracy": float(acc_text), "attribute_reference": float(acc_ref)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """``python -m medrepro.captions.agreement``: print the three checks for synth_mm captions (after the stage)."""
    import argparse
    import json

    from medrepro import layout
    from medrepro.data.manifest import load_manifest

    p = argparse.ArgumentParser(prog="python -m medrepro.captions.agreement")
    p.add_argument("--captions", default=str(layout.captions("synth_mm")))
    p.add_argument("--prepared", default=str(layout.prepared("synth_mm")))
    args = p.parse_args(argv)
    captions = pd.read_parquet(args.captions)
    manifest, _ = load_manifest(Path(args.prepared))
    labels = manifest[["sample_id", "label", *[c for c in manifest.columns if c.startswith("attr_")]]]
    print(json.dumps({k: round(v, 3) for k, v in synth_mm_agreement(captions, labels).items()}, indent=1))
    print(distinct_per_class(captions, labels).round(3).to_string())
    print(text_vs_attribute_accuracy(captions, labels).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
