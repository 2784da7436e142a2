"""intervention_probe: per-head scores of a trained EI network with and without its [INT] tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ei import MODS, C, ei

from medrepro.ei.probe import intervention_probe
from medrepro.metrics.classification import classification_metrics

N = 24


class FakeData:
    """The slice of ``TaskData`` the probe uses: ``labels``, ``multilabel`` and ``inputs``."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = {m: torch.randn(N, 3, 32, 32, generator=g) for m in MODS[:2]}
        self.labels = np.arange(N) % C
        self.multilabel = False

    def inputs(self, idx, device, train, gen, aug):  # noqa: ANN001, ANN201 - the TaskData.inputs signature
        assert not train and aug is None
        return {m: x[torch.as_tensor(idx)].to(device) for m, x in self.images.items()}


def _map(y: np.ndarray, logits: torch.Tensor) -> float:
    return classification_metrics(y, logits.softmax(-1).numpy())["mAP"]


def test_probe_scores_every_head_with_and_without_int() -> None:
    model, data = ei(MODS[:2]), FakeData()
    idx = np.arange(N)
    probe = intervention_probe(model, data, idx, torch.device("cpu"), batch_size=10)  # 3 batches, last one short
    assert model.use_int and not model.training  # the flag is restored; eval mode
    x = data.inputs(idx, None, False, None, None)
    with torch.no_grad():
        on = model.forward_all(x)
        model.use_int = False
        off = model.forward_all(x)
        model.use_int = True
    y = data.labels
    assert probe["with_int"]["fused"] == pytest.approx(_map(y, on.fused), abs=1e-9)
    assert probe["without_int"]["fused"] == pytest.approx(_map(y, off.fused), abs=1e-9)
    for m in MODS[:2]:
        assert probe["with_int"][f"primary/{m}"] == pytest.approx(_map(y, on.primary[m]), abs=1e-9)
        assert probe["without_int"][f"primary/{m}"] == pytest.approx(_map(y, off.primary[m]), abs=1e-9)
        assert probe["with_int"][f"auxiliary/{m}"] == pytest.approx(_map(y, on.auxiliary[m]), abs=1e-9)
        assert f"auxiliary/{m}" not in probe["without_int"]  # auxiliary towers never see [INT]
        assert probe["gate_mean_with_int"][m] == pytest.approx(float(on.gate[:, MODS.index(m)].mean()), abs=1e-6)
    assert on.fused.shape == (N, C) and not torch.allclose(on.fused, off.fused)  # [INT] changes the prediction
    assert probe["int_gain"] == pytest.approx(probe["with_int"]["fused"] - probe["without_int"]["fused"])


class FailingData(FakeData):
    """Fails on the second batch, i.e. in the pass without [INT]."""

    calls = 0

    def inputs(self, idx, device, train, gen, aug):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("disk gone")
        return super().inputs(idx, device, train, gen, aug)


def test_probe_restores_the_int_flag_on_error() -> None:
    model = ei(MODS[:2])
    with pytest.raises(RuntimeError, match="disk gone"):
        intervention_probe(model, FailingData(), np.arange(N), torch.device("cpu"))
    assert model.use_int is True
