"""Stage split: seeded nested real-ratio and K-shot subsets of the train split (data/splits/<dataset>/)."""

from __future__ import annotations

from medrepro import layout
from medrepro.data.manifest import load_manifest
from medrepro.data.splits import make_subsets
from medrepro.io import atomic_path
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    def body(args, cfg):
        manifest, _ = load_manifest(layout.prepared(args.dataset))
        subsets = make_subsets(manifest, list(cfg.splits.ratios), list(cfg.splits.shots), list(cfg.seeds))
        with atomic_path(layout.subsets(args.dataset)) as tmp:
            subsets.to_parquet(tmp, index=False)
        log.info("%s: %d rows, columns %s", args.dataset, len(subsets), list(subsets.columns))

    run_stage("split", add, body)


if __name__ == "__main__":
    main()
