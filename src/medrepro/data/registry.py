"""The dataset adapter interface and the registry of adapters (fetch → prepare → splits).

Each adapter module under ``medrepro.data`` defines ``class Adapter(DatasetAdapter)`` decorated with
``@register_dataset("<name>")``; ``get_adapter(name, cfg)`` imports the modules in ``ADAPTER_MODULES`` and looks the
name up in ``DATASETS``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medrepro.errors import DataError
from medrepro.registry import Registry

Task = Literal["multiclass", "multilabel"]

#: modules under ``medrepro.data`` that register a dataset adapter (imported by ``get_adapter``)
ADAPTER_MODULES: tuple[str, ...] = (
    "synth_mm",
    "mmc_amd",
    "derm7pt",
    "mrnet",
    "isic2018",
    "isic2019",
    "chestxray14",
    "cxr_pneumonia",
    "busi",
)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: its modalities (with channel counts), classes and task type."""

    name: str
    modalities: tuple[str, ...]
    classes: tuple[str, ...]
    task: Task = "multiclass"
    channels: tuple[int, ...] = ()  # 3 = RGB, 1 = grey; one per modality
    volumetric: bool = False  # samples are slice stacks (MRNet)

    def __post_init__(self) -> None:
        if not self.channels:
            object.__setattr__(self, "channels", tuple(3 for _ in self.modalities))
        if len(self.channels) != len(self.modalities):
            raise ValueError(f"{self.name}: one channel count per modality expected")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modalities": list(self.modalities),
            "classes": list(self.classes),
            "task": self.task,
            "channels": list(self.channels),
            "volumetric": self.volumetric,
        }


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs under ``data/raw/<dataset>/``.

    ``url`` is None for files that must be placed by hand (registration forms, Kaggle); ``page`` then says where to
    get them. ``sha256``/``md5`` are checked when published; otherwise the observed sha256 is recorded by fetch.
    """

    filename: str
    url: str | None = None
    page: str | None = None
    sha256: str | None = None
    md5: str | None = None
    optional: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class DatasetAdapter(ABC):
    """One dataset: which raw files it needs, how to turn them into a manifest, how to decode one image."""

    info: DatasetInfo

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        self.cfg: dict[str, Any] = dict(cfg or {})

    @abstractmethod
    def remote_files(self) -> list[RemoteFile]:
        """The archives/label files fetch must find or download into the raw folder."""

    def generate(self, raw_dir: Path, seed: int) -> None:  # pragma: no cover - only synthetic datasets
        """Create the raw files locally (synthetic datasets only)."""
        raise NotImplementedError

    @abstractmethod
    def build_manifest(self, raw_dir: Path, files_dir: Path) -> pd.DataFrame:
        """Extract the raw archives into ``files_dir`` and return the manifest.

        Columns: ``sample_id``, ``patient_id``, ``split`` (train/val/test), ``label`` (int) or ``labels`` (list of
        0/1 ints), and ``path_<modality>`` relative to ``files_dir.parent`` (the dataset folder). Extra columns
        (e.g. ``attr_*`` visual attributes, ``path_mask``) are kept.
        """

    def load_image(self, path: Path, modality: str) -> np.ndarray:
        """Decode one image as uint8 (H, W, C) or a volume as (S, H, W, C); C = this modality's channels."""
        from medrepro.data.images import read_image

        return read_image(path, channels=self.info.channels[self.info.modalities.index(modality)])

    @property
    def image_size(self) -> int:
        return int(self.cfg["image_size"])


#: dataset name → adapter class, filled by ``@register_dataset`` when the adapter modules are imported
DATASETS: Registry[type[DatasetAdapter]] = Registry("dataset", error=DataError)


def register_dataset(name: str) -> Callable[[type[DatasetAdapter]], type[DatasetAdapter]]:
    """Class decorator registering a ``DatasetAdapter`` under ``name`` (which must equal its ``info.name``)."""

    def add(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
        if cls.info.name != name:
            raise ValueError(f"{cls.__module__}.{cls.__qualname__}: registered as {name!r}, info.name is "
                             f"{cls.info.name!r}")
        return DATASETS.register(name)(cls)

    return add


def import_adapters() -> None:
    """Import every module in ``ADAPTER_MODULES`` so that ``DATASETS`` holds all adapters."""
    for module in ADAPTER_MODULES:
        importlib.import_module(f"medrepro.data.{module}")


def get_adapter(name: str, cfg: dict[str, Any] | None = None) -> DatasetAdapter:
    """Instantiate the adapter registered under ``name`` with its params block."""
    import_adapters()
    return DATASETS.lookup(name)(cfg)
