"""Stage hica_explain: results/plots/hica/<dataset>_explanations.png — per test sample, the ROIs of each modality,
the descriptor each ROI is nearest to, and the class scores (medrepro.report.hica_explain)."""

from __future__ import annotations

from medrepro.report.hica_explain import run_hica_explain
from medrepro.stages._cli import log, run_stage


def main() -> None:
    def add(p):
        p.add_argument("--dataset", required=True)

    def body(args, cfg):
        log.info("hica_explain: %s", run_hica_explain(cfg, args.dataset))

    run_stage("hica_explain", add, body)


if __name__ == "__main__":
    main()
