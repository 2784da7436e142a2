"""Stage hica_roi_images: HiCA's ROI image cache, every image at ``hica.roi_image_size`` where ``hica.roi_source``
is full (data/hica_roi_images/<dataset>/; with cache only its info.json)."""

from __future__ import annotations

from medrepro import layout
from medrepro.hica.roi_images import build_roi_images
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    def body(args, cfg):
        record = build_roi_images(layout.prepared(args.dataset), layout.hica_roi_images(args.dataset),
                                  cfg.hica.roi_source, cfg.hica.roi_image_size, workers=cfg.workers)
        log.info("%s", record)

    run_stage("hica_roi_images", add, body)


if __name__ == "__main__":
    main()
