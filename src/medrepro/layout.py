"""Every artifact path a stage writes or reads, in one place.

dvc.yaml must spell the same paths literally (DVC reads no Python); ``tests/test_layout.py`` checks that every
stage's outputs there are the ones named here. Paths are relative to the project root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
RESULTS = Path("results")
DOCS = Path("docs")


# ------------------------------------------------------------------------------------------------------ data
def raw(dataset: str, data_root: Path = DATA) -> Path:
    return data_root / "raw" / dataset


def fetch_record(dataset: str, data_root: Path = DATA) -> Path:
    return raw(dataset, data_root) / "fetch.json"


def prepared(dataset: str, data_root: Path = DATA) -> Path:
    return data_root / "prepared" / dataset


def generator_images(dataset: str, data_root: Path = DATA) -> Path:
    """The generators' own image cache: centre crops at ``diffusion.image_size`` (``medrepro.data.generator_cache``)."""
    return data_root / "generator_images" / dataset


def hica_roi_images(dataset: str, data_root: Path = DATA) -> Path:
    """HiCA's ROI image cache at ``hica.roi_image_size`` (``medrepro.hica.roi_images``)."""
    return data_root / "hica_roi_images" / dataset


def subsets(dataset: str, data_root: Path = DATA) -> Path:
    return data_root / "splits" / dataset / "subsets.parquet"


def captions(dataset: str, data_root: Path = DATA) -> Path:
    """VAPS captions, one row per (sample, modality) (VAP-Diffusion Sec. 2.2)."""
    return data_root / "captions" / f"{dataset}.parquet"


def caption_bank(dataset: str, data_root: Path = DATA) -> Path:
    """The class-specific prompt bank (VAP-Diffusion Sec. 2.3)."""
    return data_root / "captions" / f"{dataset}_bank.parquet"


def caption_cache(dataset: str, data_root: Path = DATA) -> Path:
    """Cached model answers (a ``persist: true`` output: a rerun never asks a model twice)."""
    return data_root / "captions" / "cache" / dataset


def caption_metrics(dataset: str) -> Path:
    return RESULTS / "metrics" / "caption" / f"{dataset}.json"


# ------------------------------------------------------------------------------ synthetic sets and train_data
#: a run's ``train_data``: ``real`` or ``real+syn_<generator>`` (a diffusion variant of ``synthesis.generators``)
REAL = "real"
SYN_PREFIX = "real+syn_"
#: generators that are not diffusion variants: the GAN baseline and the class-mean baseline (their own stages)
BASELINE_GENERATORS = ("gan", "class_mean")


def train_data_of(generator: str | None) -> str:
    """``real`` (None) or ``real+syn_<generator>``."""
    return REAL if generator is None else f"{SYN_PREFIX}{generator}"


def generator_id(name: str, subset: str | None = None) -> str:
    """A synthetic set's name: ``vap`` (the generator trained on ``diffusion.train_subset``) or ``vap-ratio_0.01``
    (trained on that real subset, for ``vap_generator_data``)."""
    return name if subset is None else f"{name}-{subset}"


def parse_generator_id(gen_id: str) -> tuple[str, str | None]:
    """(generator name, real subset it trained on or None for ``diffusion.train_subset``) of a synthetic set name."""
    name, _, subset = gen_id.partition("-")
    return name, subset or None


def synthetic_generator(train_data: str) -> str | None:
    """The generator whose images ``train_data`` adds to the real subset (``real+syn_vap`` → ``vap``); None: real."""
    return train_data.removeprefix(SYN_PREFIX) if train_data.startswith(SYN_PREFIX) else None


def synthetic(dataset: str, generator: str, data_root: Path = DATA) -> Path:
    """A generator's synthetic samples: PNGs, ``manifest.parquet`` (provenance) and the image cache."""
    return data_root / "synthetic" / dataset / generator


def synthetic_grid(dataset: str, generator: str) -> Path:
    """Sample grid (rows: classes × modalities; first column real) for people to look at."""
    return RESULTS / "plots" / "synthetic" / dataset / f"{generator}.png"


def synthesis_metrics(dataset: str, generator: str) -> Path:
    return RESULTS / "metrics" / "synthesize" / dataset / f"{generator}.json"


# ---------------------------------------------------------------------------------------------- training runs
@dataclass(frozen=True)
class RunPaths:
    """What one training stage writes: weights + descriptions per seed, metrics, test predictions, checkpoints."""

    models: Path
    metrics: Path
    predictions: Path | None  # None: a stage without test predictions (the VFM)
    checkpoints: Path  # resumable per-epoch checkpoints (a ``persist: true`` output, emptied when runs finish)

    def weights(self, seed: int, modality: str | None = None) -> Path:
        """``seed<k>.safetensors``, or ``seed<k>/<modality>.safetensors`` for unimodal runs."""
        return self.models / (f"seed{seed}.safetensors" if modality is None else f"seed{seed}/{modality}.safetensors")

    def checkpoint(self, seed: int, modality: str | None = None) -> Path:
        return self.checkpoints / (f"seed{seed}.pt" if modality is None else f"seed{seed}_{modality}.pt")


def ratio_key(ratio: float) -> str:
    """``ratio_0.01``: the path part of a real-data ratio, as DVC prints the float in dvc.yaml (the subsets' column
    name is ``data.splits.ratio_column``: the same string for every ratio params.yaml uses)."""
    return f"ratio_{float(ratio)}"


def _run(kind: str, *parts: str) -> RunPaths:
    key = "/".join(parts)
    return RunPaths(models=MODELS / kind / key, metrics=RESULTS / "metrics" / kind / f"{key}.json",
                    predictions=RESULTS / "predictions" / kind / f"{key}.parquet",
                    checkpoints=MODELS / "checkpoints" / kind / key)


def downstream(dataset: str, method: str, train_data: str, ratio: float) -> RunPaths:
    """A downstream classifier's run. Runs on the synthetic set of a generator trained on a named real subset
    (``real+syn_vap-ratio_0.01``: vap_generator_data) live under ``generator_data/``, so that table3's folders hold
    table3's runs only."""
    gen = synthetic_generator(train_data)
    kind = "generator_data" if gen is not None and parse_generator_id(gen)[1] else "downstream"
    return _run(kind, dataset, method, train_data, ratio_key(ratio))


def preadapt(dataset: str, adapter: str, ratio: float) -> RunPaths:
    """Unimodal pre-adaptation with EI's PEFT method (EI Sec. 4.1)."""
    return _run("preadapt", dataset, adapter, ratio_key(ratio))


def lora_zeroed(dataset: str, adapter: str) -> Path:
    """Test predictions of pre-adaptation's ``adapter`` runs (whole train split) with their LoRA up-projections
    zeroed (experiment mechanisms: the adapters against the frozen tower under the same head)."""
    return RESULTS / "predictions" / "lora_zeroed" / dataset / f"{adapter}.parquet"


def peft(dataset: str, method: str) -> RunPaths:
    """Unimodal PEFT comparison on the whole train split (EI Table 7)."""
    return _run("peft", dataset, method)


def ei(dataset: str, ratio: float, train_data: str = "real") -> RunPaths:
    return _run("ei", dataset, "ei", train_data, ratio_key(ratio))


def generator(dataset: str, name: str, subset: str) -> RunPaths:
    """The generators ``name`` (a VAP-Diffusion variant, or ``gan``) trained on ``subset`` of the train split; weights
    per (seed, modality). No test predictions: the generation metrics are their own stage."""
    key = f"{dataset}/{name}/{subset}"
    return RunPaths(models=MODELS / "generators" / key, metrics=RESULTS / "metrics" / "generators" / f"{key}.json",
                    predictions=None, checkpoints=MODELS / "checkpoints" / "generators" / key)


def hica(dataset: str, method: str, subset: str) -> RunPaths:
    """HiCA or one of its baselines trained on a labelled ``subset`` (``shot_K`` / ``ratio_r``) of the train split.
    Runs on a real-ratio subset (table3's hica rows, stage train_hica_ratio) live under ``hica_ratio/``, so that
    table3 depends on them alone, not on the HiCA tables' runs."""
    return _run("hica_ratio" if subset.startswith("ratio_") else "hica", dataset, method, subset)


def hica_pretrain(dataset: str) -> RunPaths:
    """HiCA stage 1 (domain pretraining) of a dataset: towers per (seed, modality) and ``seed<k>/text/``."""
    return RunPaths(models=MODELS / "hica_pretrain" / dataset,
                    metrics=RESULTS / "metrics" / "hica_pretrain" / f"{dataset}.json", predictions=None,
                    checkpoints=MODELS / "checkpoints" / "hica_pretrain" / dataset)


def cnn_pretrain(method: str) -> RunPaths:
    """A ``downstream.models`` CNN pretrained on the disjoint synthetic pool (HiCA's transfer-learning baseline)."""
    return RunPaths(models=MODELS / "cnn_pretrain", metrics=RESULTS / "metrics" / "cnn_pretrain" / f"{method}.json",
                    predictions=None, checkpoints=MODELS / "checkpoints" / "cnn_pretrain" / method)


def fusion(dataset: str, method: str) -> RunPaths:
    """A fusion baseline of EI Table 3 on the whole train split."""
    return _run("fusion", dataset, method)


def ei_peft(dataset: str, adapter: str) -> RunPaths:
    """EI with another PEFT method inside (EI Table 8)."""
    return _run("ei_peft", dataset, adapter)


def ei_ablation(dataset: str, setting: str) -> RunPaths:
    """EI with one knob changed (EI Tables 4 and 6)."""
    return _run("ei_ablation", dataset, setting)


#: the real-data ratio of every EI-paper table (the whole train split)
FULL = 1.0


def multimodal(dataset: str, method: str, ratio: float, ei_adapter: str, adapter: str | None = None,
               ablation: str | None = None, train_data: str = "real") -> tuple[RunPaths, RunPaths]:
    """(the run's paths, the unimodal runs its towers start from) for EI, a fusion baseline, Table 8 or an ablation
    (``train_data``: EI itself on real or real + synthetic data; its towers start from the real-data runs)."""
    if method != "ei":
        return fusion(dataset, method), preadapt(dataset, ei_adapter, ratio)
    if adapter is not None:
        return ei_peft(dataset, adapter), peft(dataset, adapter)
    if ablation is not None:
        return ei_ablation(dataset, ablation), preadapt(dataset, ei_adapter, ratio)
    return ei(dataset, ratio, train_data), preadapt(dataset, ei_adapter, ratio)


# ------------------------------------------------------------------------------------------- the VFM and reports
VFM = RunPaths(models=MODELS / "vfm", metrics=RESULTS / "metrics" / "vfm.json", predictions=None,
               checkpoints=MODELS / "checkpoints" / "vfm")
VFM_WEIGHTS = VFM.models / "vfm.safetensors"
VFM_DESCRIPTION = VFM.models / "vfm.json"

TABLE3 = RESULTS / "table3.csv"
TABLE3_MD = RESULTS / "table3.md"
TABLE3_PLOT = RESULTS / "plots" / "table3.png"
TABLE3_GAPS = RESULTS / "tables" / "table3_gaps.csv"  # real + synthetic − real, seed-paired intervals
SOFTWARE = RESULTS / "software_versions.csv"  # the stack that made table3
SUMMARY = RESULTS / "metrics" / "summary.json"
RESULTS_DOC = DOCS / "results.md"


def ei_table(number: int) -> Path:
    return RESULTS / "tables" / f"ei_table{number}.csv"


EI_TABLE3_GAPS = RESULTS / "tables" / "ei_table3_gaps.csv"  # EI − each fusion baseline, seed-paired intervals


def vap_table(number: int) -> Path:
    return RESULTS / "tables" / f"vap_table{number}.csv"


#: paired intervals of VAP-Diffusion against its ablations (Tables 1-2 directions)
VAP_GAPS = RESULTS / "tables" / "vap_gaps.csv"


def hica_explanations(dataset: str) -> Path:
    """HiCA's per-sample explanation figure of ``dataset``."""
    return RESULTS / "plots" / "hica" / f"{dataset}_explanations.png"


def hica_table(number: int) -> Path:
    """HiCA's Table ``number`` as CSV."""
    return RESULTS / "tables" / f"hica_table{number}.csv"


VAP_GENERATOR_DATA = RESULTS / "tables" / "vap_generator_data.csv"


def generation_eval(dataset: str) -> tuple[Path, Path]:
    """(metric rows, paired-gap rows) of every generator of ``dataset`` (the vap_eval stage)."""
    return RESULTS / "generation" / f"{dataset}.parquet", RESULTS / "generation" / f"{dataset}_gaps.parquet"


EXPERIMENTS = Path("experiments")  # named experiments: each its own project folder (medrepro.experiments)
EI_COLOCATED = RESULTS / "tables" / "ei_colocated.csv"  # experiment `colocated`: EI's cross-modal claim
EI_COLOCATED_GAPS = RESULTS / "tables" / "ei_colocated_gaps.csv"  # its seed-paired gaps
EI_INDEPENDENT = RESULTS / "tables" / "ei_independent.csv"  # experiment `independent`: EI on the default data, 3 seeds
EI_INDEPENDENT_GAPS = RESULTS / "tables" / "ei_independent_gaps.csv"  # its seed-paired gaps
#: HiCA's tables (I, II, IV, V, VI), also built by the `hica3` experiment (3 seeds)
HICA_TABLES = (1, 2, 4, 5, 6)


def hica3_table(number: int) -> Path:
    """The `hica3` experiment's HiCA table ``number`` (3 seeds)."""
    return RESULTS / "tables" / f"hica3_table{number}.csv"


VAP3_TABLE3_GAPS = RESULTS / "tables" / "vap3_table3_gaps.csv"  # experiment `vap3`: real + syn − real, 3 seeds
VAP3_GENERATION_GAPS = RESULTS / "tables" / "vap3_generation_gaps.csv"  # its vap − class generation gaps
MECHANISMS = RESULTS / "tables" / "mechanisms.csv"  # experiment `mechanisms`: each mechanism against its mutation
