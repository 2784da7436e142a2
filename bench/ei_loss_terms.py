"""What do EI's auxiliary loss L_aa (λ1, Eq. 6) and gating loss L_ag (λ2, Eq. 7) do during training?

Trains the EI network exactly as the ``ei`` stage does (``ei:`` and ``train:`` of the params file, towers from the
pre-adaptation states, π from their validation mAP), once per λ setting, and reports:

- per epoch, each loss part (fused, Σ primary, L_aa, L_ag), the λ-weighted share of L_aa and L_ag against L_p, the
  gate weight on π (exp(−L_ag), the geometric mean of α_π) and, on synth_mm, L_aa's floor for auxiliary heads that
  read their own modality's finding perfectly (Σ_m H(y | finding_m) on the train labels);
- every ``--grad-every`` steps, the gradient norm each term alone sends into each parameter group (unweighted;
  the table multiplies by λ, i.e. what Eq. 8's total receives), first epoch and last three epochs;
- test mAP, best epoch, the intervention probe (mAP of every head, gate means) and how far each group moved.

Nothing is written. Run from a folder holding ``data/`` and ``models/`` of a finished run (vfm + preadapt), e.g.::

    nice -n 5 python bench/ei_loss_terms.py --seeds 0 --configs default,aa0,aa3x,ag0,ag3x

(``--root experiments/mechanisms`` reads that experiment's artifacts; about 1–2 CPU-minutes per setting.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medrepro import layout
from medrepro.config import load_config
from medrepro.devices import prepare_model, seed_everything
from medrepro.ei.multimodal import multimodal_run
from medrepro.ei.probe import intervention_probe
from medrepro.train.classify import train_classifier
from medrepro.train.diagnostics import grad_norms_per_term, relative_change, snapshot
from medrepro.train.loop import steps_per_epoch
from medrepro.train.runner import RunEnv

#: name → (λ1, λ2) as multiples of the params file's defaults; ``jitter`` (λ1 × 1.01) is a control: how far a run
#: moves from the default's when its trajectory is perturbed without changing what the losses ask for
CONFIGS = {"default": (1.0, 1.0), "aa0": (0.0, 1.0), "aa3x": (3.0, 1.0), "ag0": (1.0, 0.0), "ag3x": (1.0, 3.0),
           "jitter": (1.01, 1.0)}
GROUPS: dict[str, Callable[[str], bool]] = {
    "aux_adapters": lambda n: n.startswith("auxiliary.") and ".head." not in n,
    "aux_heads": lambda n: n.startswith("auxiliary.") and ".head." in n,
    "int_adapters": lambda n: n.startswith("int_adapters."),
    "prim_adapters": lambda n: n.startswith("primary.") and ".head." not in n,
    "prim_heads": lambda n: n.startswith("primary.") and ".head." in n,
    "gate": lambda n: n.startswith("gate."),
}
#: synth_mm: the classes in which each modality's own finding is present
OWN_FINDING = {"fundus": ("drusen", "drusen_fluid"), "oct": ("fluid", "drusen_fluid")}


def aux_floor(labels: np.ndarray, classes: list[str], modalities: list[str]) -> float | None:
    """Σ_m H(y | finding_m): L_aa of auxiliary heads that know their own finding exactly and nothing else."""
    if set(modalities) != set(OWN_FINDING):
        return None
    total = 0.0
    for m in modalities:
        own = np.isin(np.asarray(classes)[labels], OWN_FINDING[m])
        for bit in (True, False):
            sub = labels[own == bit]
            p = np.bincount(sub, minlength=len(classes)) / max(len(sub), 1)
            total += len(sub) / len(labels) * -sum(q * math.log(q) for q in p if q > 0)
    return total


def train_one(cfg, dataset: str, seed: int, grad_every: int) -> dict:
    """One EI run as the ``ei`` stage trains it, instrumented; returns its record."""
    paths, init = layout.multimodal(dataset, "ei", 1.0, cfg.ei.adapter, None, None, "real")
    env = RunEnv.from_config(cfg)
    run = multimodal_run(cfg, dataset, "ei", 1.0, paths, init, None, layout.VFM_WEIGHTS, env, "real", seed)
    gen = seed_everything(seed)
    net = run.build()
    model = prepare_model(net, env.device, env.compile)
    snap, log = snapshot(net, GROUPS), []

    def training_loss(batch: dict, y: torch.Tensor) -> torch.Tensor:  # EINetwork.training_loss + diagnostics
        parts = net.loss_terms(batch, y)
        net.last_loss_parts = {k: v.detach() for k, v in parts.items()}
        rec: dict = {k: float(v.detach()) for k, v in parts.items()}
        if len(log) % grad_every == 0:
            terms = {"L_p": parts["fused"] + parts["primary"], "L_aa": parts["aux"], "L_ag": parts["gate"]}
            rec["grad"] = grad_norms_per_term(net, terms, GROUPS)
        log.append(rec)
        return parts["total"]

    net.training_loss = training_loss  # train_classifier calls model.training_loss (Eq. 8)
    fit, record, _ = train_classifier(model, run.data, run.train, gen, env.device, env.precision, None, "",
                                      desc=f"seed{seed} λ1={net.lambda_aa:g} λ2={net.lambda_ag:g}")
    probe = intervention_probe(net, run.data, run.data.test_idx, env.device, env.precision)
    spe = steps_per_epoch(len(run.data.train_idx), run.train)
    data = run.data
    return {"seed": seed, "lambda_aa": net.lambda_aa, "lambda_ag": net.lambda_ag, "prior": run.description["prior"],
            "test_mAP": record["test"]["mAP"], "val_mAP": record["val_mAP"], "best_epoch": fit.best_epoch,
            "epochs": fit.epochs_run, "probe": probe, "steps": log, "spe": spe,
            "aux_floor": aux_floor(data.labels[data.train_idx], list(run.classes), list(net.modalities)),
            "change": {k: c.change for k, c in relative_change(net, snap).items()}}


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v else "0"


def report(name: str, r: dict) -> None:
    """Print one run's tables."""
    la, lg, spe, steps = r["lambda_aa"], r["lambda_ag"], r["spe"], r["steps"]
    p = r["probe"]
    heads = {k: round(v, 3) for k, v in p["with_int"].items()}
    print(f"\n== {name} seed {r['seed']}: λ1={la:g} λ2={lg:g}  π from val mAP {np.round(r['prior'], 3).tolist()}  "
          f"test mAP {r['test_mAP']:.4f}  val {r['val_mAP']:.4f}  best epoch {r['best_epoch']}/{r['epochs']}")
    gate = {k: round(v, 3) for k, v in p["gate_mean_with_int"].items()}
    print(f"   heads (test mAP, with [INT]) {heads}  gate mean {gate}  int_gain {p['int_gain']:+.3f}")
    print(f"   L_aa floor (own finding only) {r['aux_floor']:.3f}" if r["aux_floor"] is not None else "", end="")
    print("\n   epoch   fused  primary   L_aa    L_ag   λ1L_aa/L_p  λ2L_ag/L_p  α_π")
    by_epoch: dict[int, list[dict]] = defaultdict(list)
    for i, s in enumerate(steps):
        by_epoch[i // spe + 1].append(s)
    for e, ss in by_epoch.items():
        m = {k: float(np.mean([s[k] for s in ss])) for k in ("fused", "primary", "aux", "gate")}
        lp = m["fused"] + m["primary"]
        print(f"   {e:5d} {m['fused']:7.3f} {m['primary']:7.3f} {m['aux']:7.3f} {m['gate']:7.3f} "
              f"{la * m['aux'] / lp:10.3f} {lg * m['gate'] / lp:10.3f}  {math.exp(-m['gate']):.3f}")
    last = max(by_epoch)
    windows = {"epoch 1": [1], f"epochs {max(1, last - 2)}-{last}": list(range(max(1, last - 2), last + 1))}
    print("   gradient norm into each group (λ-weighted; ratio to L_p's in brackets)")
    print("   " + " " * 18 + "".join(f"{g:>22}" for g in GROUPS))
    for wname, eps in windows.items():
        gs = [s["grad"] for e in eps for s in by_epoch[e] if "grad" in s]
        mean = {t: {g: float(np.mean([x[t][g] for x in gs])) for g in GROUPS} for t in ("L_p", "L_aa", "L_ag")}
        for t, w in (("L_p", 1.0), ("L_aa", la), ("L_ag", lg)):
            cells = []
            for g in GROUPS:
                v, ref = w * mean[t][g], mean["L_p"][g]
                cells.append(f"{_fmt(v)}" + (f" ({v / ref:.2f})" if t != "L_p" and ref else ""))
            print(f"   {wname:>11} {t:>5} " + "".join(f"{c:>22}" for c in cells))
    print("   moved ‖θ−θ0‖/‖θ0‖: " + "  ".join(f"{g} {_fmt(c)}" for g, c in r["change"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="folder with data/ and models/ of a finished run")
    parser.add_argument("--dataset", default="synth_mm")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--configs", default="default,aa0,aa3x,ag0,ag3x", help=f"of {sorted(CONFIGS)}")
    parser.add_argument("--grad-every", type=int, default=10, help="steps between per-term gradient measurements")
    parser.add_argument("--max-epochs", type=int, default=None, help="override train.max_epochs (a smoke run)")
    parser.add_argument("--json", default=None, help="also write every record (steps included) to this file")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    base = load_config(Path(args.params).resolve())
    if args.max_epochs:
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, max_epochs=args.max_epochs))
    out = Path(args.json).resolve() if args.json else None
    os.chdir(args.root)
    records = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.configs.split(","):
            fa, fg = CONFIGS[name]
            cfg = base.with_ablation(f"lambda_aa-{fa * base.ei.lambda_aa}")
            cfg = cfg.with_ablation(f"lambda_ag-{fg * base.ei.lambda_ag}")
            r = train_one(cfg, args.dataset, seed, args.grad_every)
            report(name, r)
            records.append({"config": name, **r})
    print("\nsummary (test mAP)")
    for seed in sorted({r["seed"] for r in records}):
        row = {r["config"]: round(r["test_mAP"], 4) for r in records if r["seed"] == seed}
        print(f"   seed {seed}: {row}")
    if out is not None:
        out.write_text(json.dumps(records, default=float))


if __name__ == "__main__":
    main()
