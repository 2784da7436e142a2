"""Stage fetch: download/verify (or generate) a dataset's raw files into data/raw/<dataset>/."""

from __future__ import annotations

from pathlib import Path

from medrepro import layout
from medrepro.data.prepare import fetch
from medrepro.data.registry import get_adapter
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)
        p.add_argument("--raw", default=None, help="raw folder (default data/raw/<dataset>)")

    def body(args, cfg):
        adapter = get_adapter(args.dataset, cfg.dataset_options(args.dataset))
        raw = Path(args.raw) if args.raw else layout.raw(args.dataset)
        record = fetch(adapter, raw, seed=cfg.seed)
        log.info("%s: %d file(s) verified in %s", args.dataset, len(record["files"]), raw)

    run_stage("fetch", add, body)


if __name__ == "__main__":
    main()
