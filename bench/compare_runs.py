"""Score saved EI / fusion-baseline runs on the test split and bootstrap their paired mAP gaps against a reference.

Usage (after the runs exist, e.g. `snakemake --cores 2 results/tables/ei_table3.csv`):

    python bench/compare_runs.py [--dataset synth_mm] [--seed 0] [--reference ei] [--resamples 1000]
    python bench/compare_runs.py --run ei=/scratch/out/ei --run concat=/scratch/out/concat --seed 1

Model folders default to the pipeline's (`medrepro.layout`: EI and every `ei.table3_methods` baseline at 100 % of
the train split). Each run is rebuilt from the description JSON saved beside its `seed<k>.safetensors` (not from
params.yaml), loaded and scored once; the interval is a paired bootstrap over test samples
(`medrepro.report.bootstrap`): it measures test-set size, not seed-to-seed spread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medrepro import layout
from medrepro.config import load_config
from medrepro.data.splits import ratio_column
from medrepro.metrics.classification import classification_metrics
from medrepro.models.backbones import normalization
from medrepro.report.bootstrap import paired_bootstrap
from medrepro.train.classify import predict
from medrepro.train.saved import load_run
from medrepro.train.task import load_task


def default_runs(dataset: str) -> dict[str, Path]:
    """EI and the Table 3 baselines of params.yaml, at the pipeline's paths."""
    cfg = load_config()
    runs = {"ei": layout.ei(dataset, layout.FULL).models}
    runs.update({m: layout.fusion(dataset, m).models for m in cfg.ei.table3_methods})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synth_mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default="ei")
    parser.add_argument("--run", action="append", default=[], metavar="METHOD=DIR",
                        help="a run's model folder (repeatable); default: every Table 3 run of the pipeline")
    parser.add_argument("--data-root", type=Path, default=layout.DATA)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {k: Path(v) for k, v in (r.split("=", 1) for r in args.run)} if args.run else default_runs(args.dataset)

    probs, data = {}, None
    for method, folder in runs.items():
        weights = folder / f"seed{args.seed}.safetensors"
        model, desc = load_run(weights)
        data, _ = load_task(desc["dataset"], ratio_column(desc["ratio"]), args.seed, list(desc["modalities"]),
                            desc["train"]["slices"], args.data_root, norm=normalization(desc["tower"]))
        probs[method] = predict(model, data, data.test_idx, torch.device("cpu"))
    if args.reference not in probs:
        raise SystemExit(f"error: reference {args.reference!r} is not among the runs {sorted(probs)}")
    y, ref = data.labels[data.test_idx], probs[args.reference]
    print(f"{args.dataset}, seed {args.seed}, {len(y)} test samples; paired bootstrap, {args.resamples} resamples")
    for method, p in probs.items():
        line = f"{method:12s} mAP {classification_metrics(y, p, data.multilabel)['mAP']:.4f}"
        if method != args.reference:
            g = paired_bootstrap(y, ref, p, multilabel=data.multilabel, resamples=args.resamples)
            line += f"   {args.reference} - {method}: {g.gap:+.4f}  95% [{g.low:+.4f}, {g.high:+.4f}]"
        print(line, flush=True)


if __name__ == "__main__":
    main()
