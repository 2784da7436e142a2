"""Stage caption: VAPS captions of a dataset's images and its class-specific prompt bank (VAP-Diffusion 2.2–2.3)."""

from __future__ import annotations

import pandas as pd

from medrepro import layout
from medrepro.captions.backends import make_backend
from medrepro.captions.bank import build_bank, dataset_items
from medrepro.captions.cache import CaptionCache
from medrepro.captions.prompts import PROMPT_VERSION
from medrepro.captions.vaps import caption_items
from medrepro.data.manifest import load_manifest
from medrepro.io import atomic_path, write_json
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    def body(args, cfg):
        cap = cfg.captions
        root = layout.prepared(args.dataset)
        manifest, classes = load_manifest(root)
        subsets = pd.read_parquet(layout.subsets(args.dataset))
        cache_dir = layout.caption_cache(args.dataset)
        items = dataset_items(args.dataset, manifest, classes, root, cap.splits, cache_dir / "slices")
        backend = make_backend(cap, cfg.device)
        try:
            captions, stats = caption_items(items, backend, CaptionCache(cache_dir),
                                            cap.batch_size)
        finally:
            backend.close()
        bank = build_bank(captions, manifest, classes, subsets, cap.bank_subset, cap.unseen_split)
        with atomic_path(layout.captions(args.dataset)) as tmp:
            captions.to_parquet(tmp, index=False)
        with atomic_path(layout.caption_bank(args.dataset)) as tmp:
            bank.to_parquet(tmp, index=False)
        per_class = bank[bank["bank"] == "train"].groupby("class_name")["t_mix"]
        write_json(layout.caption_metrics(args.dataset), {
            **stats.as_dict(), "backend": backend.name, "model": backend.model,
            "prompt_version": PROMPT_VERSION, "captions": len(captions),
            "bank_sizes": bank.groupby("bank").size().to_dict(),
            "distinct_t_mix_per_class": (per_class.nunique() / per_class.size()).round(4).to_dict()})
        log.info("%s: %d captions (%d requests, %d cache hits, %.1f images/s), bank of %d rows", args.dataset,
                 len(captions), stats.requests, stats.cache_hits, stats.as_dict()["images_per_s"] or 0, len(bank))

    run_stage("caption", add, body)


if __name__ == "__main__":
    main()
