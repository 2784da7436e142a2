"""Where EI's [INT] tokens go: attention paid to them and their size, in the trained EI runs of a project folder.

For each EI run (the default insertion layer and every ``insert_layer-k`` ablation) and seed: per primary tower and
layer from the insertion on, the share of attention the [CLS] query and the patch queries put on the [INT] keys
(mean over heads and test samples), the ratio of the [INT] token's norm to the mean patch-token norm where it enters,
and the finding AUC with and without [INT] (the same weights, ``use_int`` off) — the material for the `colocated`
experiment's layer-0 question (docs/reproduction-notes.md).

Run from the repository root: ``python bench/ei_int_attention.py experiments/colocated [--dataset synth_mm]``.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from medrepro import layout
from medrepro.config import parse_ablation
from medrepro.data.splits import ratio_column
from medrepro.ei.multimodal import load_multimodal
from medrepro.models.backbones import normalization
from medrepro.report.ei_colocated import finding_auc_fn
from medrepro.train.classify import forward_batches, to_probs
from medrepro.train.task import load_task


class AttentionTap:
    """Forward pre-hooks on every block's attention of one tower: the share of attention on the last ``k`` keys
    ([INT] sits after all image tokens) for the [CLS] query and the patch queries, and the [INT]/patch norm ratio at
    the block's input."""

    def __init__(self, vit: torch.nn.Module, k: int, prefix: int) -> None:
        self.k, self.prefix = k, prefix
        self.sums: dict[tuple[int, str], list[float]] = defaultdict(list)
        self.handles = [blk.attn.register_forward_pre_hook(self._hook(i)) for i, blk in enumerate(vit.blocks)]
        self.handles += [blk.register_forward_pre_hook(self._norm_hook(i)) for i, blk in enumerate(vit.blocks)]

    def _hook(self, layer: int):
        def hook(attn, args):
            x = args[0]
            b, n, c = x.shape
            qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
            q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
            w = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)  # (B, H, N, N)
            on_int = w[..., n - self.k:].sum(-1).mean(1)  # (B, N): share of each query's attention on [INT]
            self.sums[(layer, "cls_to_int")].append(float(on_int[:, 0].mean()))
            self.sums[(layer, "patch_to_int")].append(float(on_int[:, self.prefix:n - self.k].mean()))
        return hook

    def _norm_hook(self, layer: int):
        def hook(block, args):
            x = args[0]
            n = x.shape[1]
            ratio = x[:, n - self.k:].norm(dim=-1).mean() / x[:, self.prefix:n - self.k].norm(dim=-1).mean()
            self.sums[(layer, "int_norm_ratio")].append(float(ratio))
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def ei_runs(cfg, dataset: str) -> list[tuple[int, layout.RunPaths]]:
    runs = [(cfg.ei.insert_layer, layout.ei(dataset, layout.FULL))]
    for setting in cfg.ei.ablations:
        knob, value = parse_ablation(setting)
        if knob == "insert_layer":
            runs.append((int(value), layout.ei_ablation(dataset, setting)))
    return runs


@torch.no_grad()
def analyse(weights: Path, seed: int, dataset: str, slices: int) -> dict[str, float]:
    model, desc = load_multimodal(weights)
    model.eval()
    data, classes = load_task(dataset, ratio_column(desc.get("real_ratio", 1.0)), seed, None, slices,
                              norm=normalization(desc["tower"]))
    finding = finding_auc_fn(list(classes["classes"]))
    idx, y, device = data.test_idx, data.labels[data.test_idx], torch.device("cpu")
    taps = {m: AttentionTap(model.primary[m].vit, len(model.references(m)), model.primary[m].num_prefix_tokens)
            for m in model.modalities}
    probs = np.concatenate([to_probs(o, False) for o in forward_batches(model, data, idx, device, 100)])
    for tap in taps.values():
        tap.close()
    model.use_int = False
    plain = np.concatenate([to_probs(o, False) for o in forward_batches(model, data, idx, device, 100)])
    out = {"finding_AUC": finding(y, probs), "finding_AUC_without_int": finding(y, plain)}
    for m, tap in taps.items():
        for (layer, what), values in sorted(tap.sums.items()):
            if layer >= model.insert_layer and values:
                out[f"{m}/L{layer}/{what}"] = float(np.mean(values))
    return out


def main() -> None:
    from medrepro.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a project folder, e.g. experiments/colocated")
    parser.add_argument("--overlay", default=None, help="params overlay (default: config/experiments/<folder>.yaml)")
    parser.add_argument("--dataset", default="synth_mm")
    args = parser.parse_args()
    overlay = args.overlay or f"config/experiments/{args.folder.name}.yaml"
    cfg = load_config("params.yaml", overlay)
    os.chdir(args.folder)
    for insert, paths in ei_runs(cfg, args.dataset):
        for seed in cfg.seeds:
            res = analyse(paths.weights(seed), seed, args.dataset, cfg.train.slices)
            head = (f"insert_layer {insert} seed {seed}: finding AUC {res.pop('finding_AUC'):.3f} "
                    f"(without [INT] {res.pop('finding_AUC_without_int'):.3f})")
            print(head)
            for key, value in res.items():
                print(f"    {key} {value:.4f}")


if __name__ == "__main__":
    main()
