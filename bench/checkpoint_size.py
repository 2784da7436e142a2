"""Checkpoint size of EI in the paper config (2 modalities, ViT-B/16 at 448 px, MoR): full state vs training state.

Run from the repository root: ``python bench/checkpoint_size.py`` (towers randomly initialised, nothing downloaded).
A checkpoint holds the model's state, the kept best epoch's state (same keys) and SGD's momentum (trainable only).
"""

from __future__ import annotations

from medrepro.config import load_config
from medrepro.models.ei import build_ei
from medrepro.train.loop import frozen_keys, training_state

MIB = 2**20


def nbytes(state: dict) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


def main() -> None:
    cfg = load_config("params.yaml", "config/paper.yaml")
    tower = {**cfg.ei.vfm.as_dict(), "pretrained": False, "weights": None, "img_size": 448}
    net = build_ei(tower, ["fundus", "oct"], 4, "mor", None, modality_prior=[0.5, 0.9])
    full, kept = nbytes(net.state_dict()), nbytes(training_state(net, frozen_keys(net)))
    momentum = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    print(f"model state {full / MIB:.0f} MiB, training state {kept / MIB:.1f} MiB")
    print(f"checkpoint with frozen weights {(2 * full + momentum) / MIB:.0f} MiB, "
          f"without {(2 * kept + momentum) / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
