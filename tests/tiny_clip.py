"""open_clip configs small enough for a unit test, registered with open_clip from a JSON file and saved with random
weights to a local checkpoint (the ``weights:`` path users take offline)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch

TINY_TEXT = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
TINY_VISION = dict(image_size=32, layers=1, width=32, head_width=16, patch_size=16)
TINY = {  # plain CLIP, a custom text tower, an HF (BERT) text tower (+ hf_model_name: a tiny BERT)
    "medrepro-tiny-clip": dict(embed_dim=16, vision_cfg=TINY_VISION, text_cfg=TINY_TEXT),
    "medrepro-tiny-custom": dict(embed_dim=16, custom_text=True, vision_cfg=TINY_VISION, text_cfg=TINY_TEXT),
    "medrepro-tiny-hf": dict(embed_dim=16, vision_cfg=TINY_VISION, text_cfg=dict(
        context_length=16, hf_proj_type="linear", hf_pooler_type="mean_pooler")),
}


def register(name: str, folder: Path, cfg: dict | None = None) -> Path:
    """Register config ``name`` (``TINY[name]`` unless ``cfg``) with open_clip; save its random weights under
    ``folder``; the weights file."""
    cfg_file = folder / f"{name}.json"
    cfg_file.write_text(json.dumps(cfg if cfg is not None else TINY[name]))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained_text=False).eval()
    weights = folder / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    return weights
