"""Stage generator_images: the generators' image cache, every image centre-cropped to ``diffusion.image_size``
(data/generator_images/<dataset>/; the classifiers keep data/prepared/<dataset>/cache)."""

from __future__ import annotations

from medrepro import layout
from medrepro.data.generator_cache import build_generator_cache
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    def body(args, cfg):
        record = build_generator_cache(layout.prepared(args.dataset), layout.generator_images(args.dataset),
                                       cfg.diffusion.image_size, workers=cfg.workers)
        log.info("%s", record)

    run_stage("generator_images", add, body)


if __name__ == "__main__":
    main()
