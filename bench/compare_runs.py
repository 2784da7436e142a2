"""Score saved EI / fusion-baseline runs on the test split and bootstrap their paired mAP gaps against a reference.

Usage (after the runs exist, e.g. `snakemake --cores 2 results/tables/ei_table3.csv`):

    python bench/compare_runs.py [--dataset synth_mm] [--seed 0] [--reference ei] [--resamples 1000]
    python bench/compare_runs.py --run ei=/scratch/out/ei --run concat=/scratch/out/concat --seed 1 \
        --preadapt-metrics /scratch/out/preadapt.json

Model directories default to the pipeline's (dvc.yaml): `models/ei/<dataset>/ei/real/ratio_1.0` and
`models/fusion/<dataset>/<method>` at 100 % of the train split. Each run is rebuilt with `params.yaml` (so the params
must be the ones it was trained with), loaded from `seed<k>.safetensors` and scored once; the interval is a paired
bootstrap over test samples (`medrepro.report.bootstrap`): it measures test-set size, not seed-to-seed spread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from medrepro.data.splits import ratio_column
from medrepro.io import read_json
from medrepro.metrics.classification import classification_metrics
from medrepro.models.backbones import normalization
from medrepro.params import load_params
from medrepro.report.bootstrap import paired_bootstrap
from medrepro.train.classify import predict
from medrepro.train.downstream import load_task
from medrepro.train.multimodal import build_model, modality_prior, model_spec
from medrepro.train.vfm import tower_cfg


def default_runs(params: dict, dataset: str) -> dict[str, Path]:
    runs = {"ei": Path(f"models/ei/{dataset}/ei/real/ratio_1.0")}
    runs.update({m: Path(f"models/fusion/{dataset}/{m}") for m in params["ei"]["table3_methods"]})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synth_mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default="ei")
    parser.add_argument("--run", action="append", default=[], metavar="METHOD=DIR",
                        help="a run's model directory (repeatable); default: every Table 3 run of the pipeline")
    parser.add_argument("--preadapt-metrics", type=Path, default=None, help="for EI's modality prior")
    parser.add_argument("--vfm", type=Path, default=Path("models/vfm/vfm.safetensors"))
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params()
    runs = dict(r.split("=", 1) for r in args.run) if args.run else default_runs(params, args.dataset)
    adapter = params["ei"]["adapter"]
    pre = args.preadapt_metrics or Path(f"results/metrics/preadapt/{args.dataset}/{adapter}/ratio_1.0.json")

    tower = tower_cfg(params, args.vfm)
    data, classes = load_task(args.dataset, ratio_column(1.0), args.seed, data_root=args.data_root,
                              norm=normalization(tower))
    mods = list(data.images.modalities)
    prior = modality_prior(read_json(pre), args.seed, mods)
    sized = {**tower, "img_size": classes["image_size"]}
    y, probs = data.labels[data.test_idx], {}
    for method, directory in runs.items():
        file = Path(directory) / f"seed{args.seed}.safetensors"
        if not file.is_file():
            raise SystemExit(f"error: no saved run for {method!r}: {file}")
        model = build_model(params, model_spec(params, method), sized, mods, classes, None, prior)
        unexpected = model.load_state_dict(load_file(file), strict=False).unexpected_keys
        if unexpected:
            raise SystemExit(f"error: {file} does not fit {method!r} built from params.yaml: {unexpected[:5]}")
        probs[method] = predict(model, data, data.test_idx, torch.device("cpu"))
    if args.reference not in probs:
        raise SystemExit(f"error: reference {args.reference!r} is not among the runs {sorted(probs)}")
    ref = probs[args.reference]
    print(f"{args.dataset}, seed {args.seed}, {len(y)} test samples; paired bootstrap, {args.resamples} resamples")
    for method, p in probs.items():
        line = f"{method:12s} mAP {classification_metrics(y, p, data.multilabel)['mAP']:.4f}"
        if method != args.reference:
            g = paired_bootstrap(y, ref, p, multilabel=data.multilabel, resamples=args.resamples)
            line += f"   {args.reference} - {method}: {g.gap:+.4f}  95% [{g.low:+.4f}, {g.high:+.4f}]"
        print(line, flush=True)


if __name__ == "__main__":
    main()
