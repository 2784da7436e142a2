"""Checkpoint size of EI in the paper config (2 modalities, ViT-B/16 at 448 px, MoR): full state vs training state.

Run from the repository root: python bench/checkpoint_size.py (builds the towers randomly initialised, no download).
"""
import torch
from medrepro.config import load_config
from medrepro.models.ei import build_ei
from medrepro.train.loop import frozen_keys, training_state
cfg = load_config("params.yaml", "config/paper.yaml")
tower = {**cfg.ei.vfm.as_dict(), "pretrained": False, "weights": None, "img_size": 448}
net = build_ei(tower, ["fundus", "oct"], 4, "mor", None, modality_prior=[0.5, 0.9])
def nbytes(sd): return sum(v.numel() * v.element_size() for v in sd.values())
full = net.state_dict(); part = training_state(net, frozen_keys(net))
trainable = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
mb = 1 / 2**20
print(f"full state {nbytes(full)*mb:.0f} MiB, training state {nbytes(part)*mb:.1f} MiB, trainable {trainable*mb:.1f} MiB")
# checkpoint = model + best_state (same keys) + SGD momentum (trainable)
print(f"checkpoint before ≈ {(2*nbytes(full)+trainable)*mb:.0f} MiB, after ≈ {(2*nbytes(part)+trainable)*mb:.1f} MiB")
