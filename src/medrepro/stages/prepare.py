"""Stage prepare: extract, parse labels into manifest.parquet, cache resized images (data/prepared/<dataset>/)."""

from __future__ import annotations

from pathlib import Path

from medrepro import layout
from medrepro.data.prepare import prepare
from medrepro.data.registry import get_adapter
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--raw", default=None)
        p.add_argument("--out", default=None)

    def body(args, cfg):
        adapter = get_adapter(args.dataset, cfg.dataset_options(args.dataset))
        summary = prepare(adapter, Path(args.raw) if args.raw else layout.raw(args.dataset),
                          Path(args.out) if args.out else layout.prepared(args.dataset), workers=cfg.workers)
        log.info("%s", summary)

    run_stage("prepare", add, body)


if __name__ == "__main__":
    main()
