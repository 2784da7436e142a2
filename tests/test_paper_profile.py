"""The paper profile's code path, run for real on tiny real-layout archives (EI Sec. 4): every EI stage of
config/paper.yaml — fetch, prepare, split, the VFM from a weights file, pre-adaptation, EI, a fusion baseline,
two Table 7 PEFT methods, PEFT inside EI and the EI tables — on MMC-AMD (448 px) with CLIP ViT-B/16 and
on Derm7pt (512 px) and MRNet (256 px volumes) with DINOv2 ViT-B/14, whose 14-px patch divides neither size.

The towers are the papers' timm architectures (patch 16 / 14, CLIP's pre-norm, DINOv2's layer scale, heads of width
64) shrunk for the CPU: one transformer block instead of twelve and width 192 (3 heads) instead of 768 — at 512 px a
full-width block costs about 8× more and the test would take minutes. Saved with random weights to a local file and
loaded through ``ei.vfm.weights``, the path users take offline. One epoch of at least one step per stage. Each stage
runs in this process (``python -m medrepro.stages.<name>`` through runpy, in the project folder) to spare ~5 s of
start-up per stage; the Snakemake/DVC wiring of the same commands is covered by the e2e tests.
"""

from __future__ import annotations

import json
import runpy
import shlex
import sys

import pytest
import yaml
from fakes_multimodal import derm7pt_members, mmc_amd_members, mrnet_members, write_zip
from helpers import ROOT, make_project

from medrepro.config import deep_merge

pytestmark = pytest.mark.slow

ARCHIVES = {"mmc_amd": ("mmc-amd.zip", mmc_amd_members), "derm7pt": ("release_v0.zip", derm7pt_members),
            "mrnet": ("MRNet-v1.0.zip", mrnet_members)}
#: the paper's towers; (timm arch, datasets it runs on here)
TOWERS = {"clip_b16": ("vit_base_patch16_clip_224", ["mmc_amd"]),
          "dinov2_b14": ("vit_base_patch14_dinov2", ["derm7pt", "mrnet"])}
SHRINK = {"depth": 1, "embed_dim": 192, "num_heads": 3}
#: one instance of every EI stage per dataset (stage name prefixes, in DAG order)
#: (ei_ablation runs train_ei's code with one knob changed; one block leaves no other insertion layer to try)
STAGES = ("fetch@", "prepare@", "split@", "vfm", "preadapt@", "train_ei@", "fusion@", "peft@", "ei_peft@",
          "ei_table3", "ei_table@", "ei_table7", "ei_table8")


def _save_tower(arch: str, path) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **SHRINK)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _params(arch: str, weights: str, datasets: list[str]) -> dict:
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    shrink = {
        "seeds": [0], "datasets": datasets,
        "data": {"mrnet": {"n_val": 2, "val_seed": 1}},  # a val pair with positives: mAP defined
        "train": {"batch_size": 2, "max_epochs": 1, "patience": 1, "min_steps_per_epoch": 1, "slices": 2},
        "ei": {"datasets": datasets,
               "vfm": {"arch": arch, "kwargs": SHRINK, "pretrained": True, "weights": weights},
               "ablations": [], "table3_methods": ["raddiag"], "table7_methods": ["vpt", "lora"],
               "table8_methods": ["lora"]},
        "hica": {"datasets": [], "unseen": {"datasets": []}},
    }
    return deep_merge(paper, shrink)


def _run_stage(cmd: str, threads: int = 2) -> None:
    """``python -m medrepro.stages.<name> …`` in this process; a non-zero exit fails the test with the command."""
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "-m"], cmd
    saved = sys.argv
    sys.argv = [argv[2], *argv[3:], "--threads", str(threads)]
    try:
        runpy.run_module(argv[2], run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (None, 0), f"{cmd} exited with {exc.code}"
    finally:
        sys.argv = saved


@pytest.mark.parametrize("tower", sorted(TOWERS))
def test_every_ei_stage_runs_on_the_paper_profile(tower, tmp_path, monkeypatch):
    import pandas as pd

    from medrepro.dvc_bridge import resolve_stages

    arch, datasets = TOWERS[tower]
    weights = tmp_path / f"{tower}.safetensors"
    _save_tower(arch, weights)
    project = make_project(tmp_path / "proj", _params(arch, str(weights), datasets))
    for ds in datasets:
        archive, members = ARCHIVES[ds]
        write_zip(members(), project / "data" / "raw" / ds / archive)
    monkeypatch.chdir(project)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stages = resolve_stages(project)
    ran = []
    for prefix in STAGES:
        for st in stages:
            if st.name.startswith(prefix) and (st.name == prefix or "@" not in st.name or
                                               st.name.split("@")[1].split("-")[0] in datasets + ["3", "4", "6"]):
                if st.name.startswith(("preadapt@", "train_ei@")) and not st.name.endswith("-1.0"):
                    continue  # the full train split only: the small ratios add nothing to the code path
                _run_stage(st.cmd)
                ran.append(st.name)
    assert {n.split("@")[0] for n in ran} >= {p.rstrip("@") for p in STAGES}, ran
    t3 = pd.read_csv(project / "results/tables/ei_table3.csv")
    assert set(t3["dataset"]) == set(datasets) and set(t3["method"]) >= {"ei", "raddiag"}
    assert t3["mAP"].between(0, 1).all()
    t7 = pd.read_csv(project / "results/tables/ei_table7.csv")
    assert set(t7["method"]) == {"vpt", "lora", "mor"}


#: the open_clip config HiCA's towers come from (``tests/tiny_clip.py``)
TINY_CLIP = "medrepro-tiny-clip"
#: HiCA's stages (Sec. III-IV and Tables I-VI), in DAG order
HICA_STAGES = ("fetch@", "prepare@", "split@", "caption@", "hica_pretrain@", "train_hica@", "train_hica_ratio@",
               "train_hica_unseen@", "train_hica_noise@", "train_hica_ablation@", "hica_zeroshot@", "hica_cnn@",
               "hica_transfer@", "hica_explain@", "hica_table@", "hica_table6")


def _hica_params(clip_weights: str, resnet_weights: str) -> dict:
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    datasets = ["cxr_pneumonia", "busi"]
    tiny_cnn = {"kwargs": {"growth_rate": 4, "block_config": [1, 1]}}
    shrink = {
        "seeds": [0], "datasets": datasets, "splits": {"ratios": [1.0], "shots": [1]},
        "synthesis": {"ratios": [1.0], "generator_data": {"ratios": []}},
        # 64 px instead of 224: the tiny tower takes 32 px, so the resize to the tower's input is exercised either way
        "data": {"cxr_pneumonia": {"val_fraction": 0.3, "image_size": 64},
                 "busi": {"val_fraction": 0.25, "test_fraction": 0.25, "image_size": 64}},
        "captions": {"backend": "attributes"},  # no VLM offline; the caption stage's code path is the same
        "ei": {"datasets": []},
        "downstream": {"models": {"densenet121": tiny_cnn,
                                  "resnet": {"arch": "resnet50", "kwargs": {"layers": [1, 1, 1, 1]},
                                             "weights": resnet_weights}},
                       "train": {"batch_size": 4, "max_epochs": 1, "patience": 1}},
        "hica": {"clip": {"model": TINY_CLIP, "weights": clip_weights}, "subsets": ["shot_1"], "roi_size": 32,
                 "ablations": ["no_cross"], "ablation_subsets": ["shot_1"],
                 "unseen": {"subset": "shot_1"}, "noise": {"kinds": ["replace"], "subset": "shot_1"},
                 "explain": {"subset": "shot_1", "per_class": 1},
                 "pretrain": {"clusters": 2, "image_epochs": 1, "batch_size": 4},
                 "train": {"batch_size": 4, "max_epochs": 1, "patience": 1, "min_steps_per_epoch": 1}},
    }
    return deep_merge(paper, shrink)


def test_every_hica_stage_runs_on_the_paper_profile(tmp_path, monkeypatch):
    """HiCA on its paper's datasets (pediatric chest X-ray, BUSI) with both towers from one open_clip model loaded
    from a weights file (``hica.clip``), the ResNet transfer baseline from a weights file."""
    import pandas as pd
    import timm
    import torch
    from fakes_single import build_busi, build_cxr_pneumonia
    from safetensors.torch import save_file
    from tiny_clip import register

    from medrepro.dvc_bridge import resolve_stages

    clip_weights = register(TINY_CLIP, tmp_path)
    torch.manual_seed(0)
    resnet = timm.create_model("resnet50", pretrained=False, num_classes=0, layers=[1, 1, 1, 1])
    resnet_weights = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(resnet_weights))
    project = make_project(tmp_path / "proj", _hica_params(str(clip_weights), str(resnet_weights)))
    build_cxr_pneumonia(project / "data" / "raw" / "cxr_pneumonia", "mendeley")
    build_busi(project / "data" / "raw" / "busi")
    monkeypatch.chdir(project)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ran = []
    for prefix in HICA_STAGES:
        for st in resolve_stages(project):
            if st.name.startswith(prefix) and (prefix.endswith("@") or st.name == prefix):
                _run_stage(st.cmd)
                ran.append(st.name)
    assert {n.split("@")[0] for n in ran} == {p.rstrip("@") for p in HICA_STAGES}, ran
    t1 = pd.read_csv(project / "results/tables/hica_table1.csv")
    assert set(t1["dataset"]) == {"cxr_pneumonia", "busi"}
    assert set(t1["method"]) >= {"hica", "zeroshot", "cnn", "transfer"} and t1["value"].between(0, 1).all()
    t4 = pd.read_csv(project / "results/tables/hica_table4.csv")
    assert set(t4["dataset"]) == {"busi"} and set(t4["unseen_classes"]) == {"malignant"}
    zs = json.loads((project / "results/metrics/hica/busi/zeroshot/unlabelled.json").read_text())
    assert zs["runs"][0]["epochs_run"] == 0  # CLIP's own projections: nothing aligned
