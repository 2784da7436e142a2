"""What each part of a trained EI network scores on its own, and what the early intervention adds.

EI's prediction is a gate-weighted sum of per-modality primary logits (Eq. 3); each primary tower sees the other
modalities only through its [INT] tokens (Eq. 1–2). ``intervention_probe`` scores, on one index set, the fused output,
every primary and auxiliary head, the mean gate weights, and the fused output and primary heads again with the
[INT] tokens left out (``use_int=False``, same weights). The gap between the two is the contribution of the early
intervention of a trained network; a primary head near its unimodal score means its tower learnt little from [INT].
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from medrepro.metrics.classification import classification_metrics
from medrepro.models.ei import EINetwork
from medrepro.train.classify import forward_batches, to_probs
from medrepro.train.task import TaskData


def _outputs(model: EINetwork, data: TaskData, idx: np.ndarray, device: torch.device, precision: str,
             batch_size: int) -> dict[str, np.ndarray]:
    """Probabilities of the fused output and every head, plus the gate weights, over ``idx`` in one pass."""
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for out in forward_batches(model.forward_all, data, idx, device, batch_size, precision):
        parts["fused"].append(to_probs(out.fused, data.multilabel))
        parts["gate"].append(out.gate.float().cpu().numpy())
        for m in model.modalities:
            parts[f"primary/{m}"].append(to_probs(out.primary[m], data.multilabel))
            parts[f"auxiliary/{m}"].append(to_probs(out.auxiliary[m], data.multilabel))
    return {k: np.concatenate(v) for k, v in parts.items()}


@torch.no_grad()
def intervention_probe(model: EINetwork, data: TaskData, idx: np.ndarray, device: torch.device,
                       precision: str = "auto", batch_size: int = 64) -> dict[str, Any]:
    """mAP of the fused output and of each head with and without [INT], and the mean gate weight per modality."""
    model.eval()
    y = data.labels[idx]
    use_int = model.use_int
    # trained without [INT] (ei.intervention false): the network as trained is also its "with [INT]" output
    runs = (("with_int", True), ("without_int", False)) if use_int else (("with_int", False),)
    scores: dict[str, Any] = {}
    try:
        for key, flag in runs:
            model.use_int = flag
            probs = _outputs(model, data, idx, device, precision, batch_size)
            gate = probs.pop("gate")
            if key == "without_int":  # auxiliary towers never see [INT]: their scores are the same
                probs = {k: v for k, v in probs.items() if not k.startswith("auxiliary/")}
            scores[key] = {k: classification_metrics(y, p, data.multilabel)["mAP"] for k, p in probs.items()}
            scores[f"gate_mean_{key}"] = dict(zip(model.modalities, gate.mean(0).tolist(), strict=True))
    finally:
        model.use_int = use_int
    if not use_int:
        scores["without_int"] = {k: v for k, v in scores["with_int"].items() if not k.startswith("auxiliary/")}
        scores["gate_mean_without_int"] = scores["gate_mean_with_int"]
    scores["int_gain"] = scores["with_int"]["fused"] - scores["without_int"]["fused"]
    return scores
