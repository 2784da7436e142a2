"""MMC-AMD, Derm7pt and MRNet adapters on tiny archives with the real layouts: fetch → prepare → subsets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fakes_multimodal import (
    DERM_CASES,
    DERM_COLUMNS,
    MMC_EYES,
    MMC_LABEL,
    MRNET_CASES,
    MRNET_VIEWS,
    derm7pt_members,
    derm7pt_meta_bytes,
    derm7pt_meta_rows,
    jpeg_bytes,
    lines_bytes,
    mmc_amd_members,
    mmc_image_ids,
    mrnet_labels,
    mrnet_members,
    mrnet_slices,
    write_zip,
)

from medrepro.data import derm7pt, mmc_amd, mrnet, registry
from medrepro.data.cache import open_cache
from medrepro.data.manifest import load_manifest
from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import DatasetAdapter, get_adapter, register_dataset
from medrepro.data.splits import make_subsets
from medrepro.errors import DataError, ManualDownloadError, ParamsError

SIZE = 32


def mmc_adapter(**kw) -> DatasetAdapter:
    return mmc_amd.Adapter({"image_size": SIZE, "split": "AP", **kw})


def derm_adapter() -> DatasetAdapter:
    return derm7pt.Adapter({"image_size": SIZE})


def mrnet_adapter(**kw) -> DatasetAdapter:
    return mrnet.Adapter({"image_size": SIZE, "n_val": 2, "val_seed": 0, **kw})


DATASETS: dict[str, tuple[Callable[[], DatasetAdapter], str, Callable[[], dict[str, bytes]]]] = {
    "mmc_amd": (mmc_adapter, "mmc-amd.zip", mmc_amd_members),
    "derm7pt": (derm_adapter, "release_v0.zip", derm7pt_members),
    "mrnet": (mrnet_adapter, "MRNet-v1.0.zip", mrnet_members),
}


def run(tmp_path: Path, adapter: DatasetAdapter, archive: str, members: dict[str, bytes]):
    raw = tmp_path / "raw"
    write_zip(members, raw / archive)
    record = fetch(adapter, raw)
    assert list(record["files"]) == [archive] and len(record["files"][archive]["sha256"]) == 64
    out = tmp_path / "prepared"
    summary = prepare(adapter, raw, out, workers=1)
    df, classes = load_manifest(out)
    assert summary["n_samples"] == len(df)
    assert classes["modalities"] == list(adapter.info.modalities)
    for m in adapter.info.modalities:
        assert all((out / p).is_file() for p in df[f"path_{m}"])
    return df, classes, out


def check_cache(out: Path, modality: str, n: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    frames, offsets = open_cache(out, modality)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (SIZE, SIZE, channels)
    assert offsets.shape == (n + 1,) and offsets[0] == 0 and offsets[-1] == frames.shape[0]
    return frames, offsets


def test_registry_names_the_adapters():
    for name, module in (("mmc_amd", mmc_amd), ("derm7pt", derm7pt), ("mrnet", mrnet)):
        adapter = get_adapter(name, {"image_size": SIZE})
        assert isinstance(adapter, module.Adapter) and adapter.info.name == name
    assert set(registry.DATASETS) == set(registry.ADAPTER_MODULES)  # each module registers its own dataset
    with pytest.raises(DataError, match="unknown dataset 'mmc'; choose one of busi, chestxray14, "):
        get_adapter("mmc")
    with pytest.raises(ValueError, match="info.name is 'mrnet'"):
        register_dataset("knee")(mrnet.Adapter)


def test_mmc_amd_pairs_eyes_per_split(tmp_path):
    df, classes, out = run(tmp_path, mmc_adapter(), "mmc-amd.zip", mmc_amd_members())
    assert classes["classes"] == ["normal", "dry", "pcv", "wet"]
    expected = {e for e, s in MMC_EYES.items() if s[2] and s[3]}  # eyes with both modalities
    assert set(df["sample_id"]) == expected
    for row in df.itertuples():
        assert row.split == MMC_EYES[row.sample_id][0]
        assert row.label == MMC_LABEL[row.sample_id[0]]
        assert row.patient_id == row.sample_id
        assert row.cfp_id == mmc_image_ids(row.sample_id, "cfp")[0]  # first sorted
        assert row.oct_id == mmc_image_ids(row.sample_id, "oct")[0]
        assert row.n_oct == MMC_EYES[row.sample_id][3]
        assert row.path_oct.endswith(f"oct-median3x3-448x448/{row.oct_id}.jpg")
    assert df["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    for m in ("cfp", "oct"):
        check_cache(out, m, len(df), 3)
    subsets = make_subsets(df, [0.5, 1.0], [1], [0, 1])
    assert len(subsets) == 2 * 6 and subsets["ratio_1.0"].all()


def test_mmc_amd_split_a_and_tolerant_layout(tmp_path):
    # split A assignment; archive without the VisualSearch/ wrapper and with images in another folder name
    members = {k.removeprefix("VisualSearch/").replace("oct-median3x3-448x448", "oct-raw"): v
               for k, v in mmc_amd_members().items()}
    df, _, _ = run(tmp_path, mmc_adapter(split="A"), "mmc-amd.zip", members)
    assert {r.sample_id: r.split for r in df.itertuples()} == {
        e: s[1] for e, s in MMC_EYES.items() if s[2] and s[3]}
    assert df["path_oct"].str.contains("/oct-raw/").all()
    with pytest.raises(ParamsError, match="'A' or 'AP'"):
        _ = mmc_adapter(split="B").split_version


def test_mmc_amd_repackaged_with_split_folders_inside_mmc_amd(tmp_path):
    # split folders moved into mmc-amd/ next to ImageData/, another wrapper: the manifest of the authors' layout
    authors, _, _ = run(tmp_path / "authors", mmc_adapter(), "mmc-amd.zip", mmc_amd_members())
    members = {k.replace("VisualSearch/mmc-amd-split", "VisualSearch/mmc-amd/mmc-amd-split")
               .replace("VisualSearch/", "export/"): v for k, v in mmc_amd_members().items()}
    assert any(k.startswith("export/mmc-amd/mmc-amd-splitAP-train/") for k in members)
    df, _, _ = run(tmp_path / "repack", mmc_adapter(), "mmc-amd.zip", members)
    cols = ["sample_id", "split", "label", "cfp_id", "oct_id", "n_oct"]
    assert df[cols].equals(authors[cols])
    assert df["path_cfp"].str.contains("export/mmc-amd/ImageData/cfp-clahe-448x448/").all()


@pytest.mark.parametrize("drop", ["ImageData/", "-split"])
def test_mmc_amd_missing_folders_name_both_layouts(tmp_path, drop):
    members = {k: v for k, v in mmc_amd_members().items() if drop not in k}
    write_zip(members, tmp_path / "raw" / "mmc-amd.zip")
    with pytest.raises(DataError, match="expected either layout: the authors' VisualSearch/mmc-amd/ImageData/ "
                                        "next to VisualSearch/mmc-amd-splitAP-.*or a repackaged mmc-amd/"):
        prepare(mmc_adapter(), tmp_path / "raw", tmp_path / "prepared", workers=1)


def test_derm7pt_labels_splits_and_mixed_case(tmp_path):
    df, classes, out = run(tmp_path, derm_adapter(), "release_v0.zip", derm7pt_members())
    assert classes["classes"] == ["BCC", "NEV", "MEL", "SK", "MISC"]
    assert classes["modalities"] == ["derm", "clinic"]
    split_of = {"train": "train", "valid": "val", "test": "test"}
    by_id = df.set_index("sample_id")
    assert set(by_id.index) == {str(c[0]) for c in DERM_CASES}
    for num, diagnosis, clinic, derm, official, label in DERM_CASES:
        row = by_id.loc[str(num)]
        assert (row["label"], row["split"], row["diagnosis"]) == (label, split_of[official], diagnosis)
        assert row["patient_id"] == str(num)
        assert row["path_clinic"].endswith(clinic)
        assert row["path_derm"].lower().endswith(derm.lower())
    assert by_id.loc["3", "path_derm"].endswith("Fel/Fel010.JPG")  # resolved case-insensitively
    assert by_id.loc["1", "attr_pigment_network"] == "typical"
    for m in ("derm", "clinic"):
        check_cache(out, m, len(df), 3)
    subsets = make_subsets(df, [0.01, 1.0], [1], [0])
    assert subsets["ratio_0.01"].sum() == 5  # at least one per class


def test_mrnet_views_labels_val_rule_and_slices(tmp_path):
    df, classes, out = run(tmp_path, mrnet_adapter(), "MRNet-v1.0.zip", mrnet_members())
    assert classes["task"] == "multilabel" and classes["volumetric"]
    assert classes["classes"] == ["abnormal", "meniscus", "acl"] and classes["channels"] == [1, 1, 1]
    assert set(df.loc[df["split"] == "test", "sample_id"]) == set(MRNET_CASES["valid"])
    val = df.loc[df["split"] == "val", "sample_id"]
    assert len(val) == 2 and set(val) <= set(MRNET_CASES["train"])
    assert df["sample_id"].str.fullmatch(r"\d{4}").all()  # zero-padded ids kept as strings
    for row in df.itertuples():
        assert list(row.labels) == mrnet_labels(row.sample_id)
    for v in MRNET_VIEWS:
        frames, offsets = check_cache(out, v, len(df), 1)
        assert np.diff(offsets).tolist() == [mrnet_slices(s, v) for s in df["sample_id"]]
    vol = mrnet_adapter().load_image(out / df["path_axial"].iloc[0], "axial")
    assert vol.shape == (mrnet_slices(df["sample_id"].iloc[0], "axial"), 32, 32, 1) and vol.dtype == np.uint8
    subsets = make_subsets(df, [1.0], [1], [0])
    assert len(subsets) == len(MRNET_CASES["train"]) - 2

    # the val draw depends only on val_seed
    again = mrnet_adapter().build_manifest(tmp_path / "raw", tmp_path / "again" / "files")
    assert set(again.loc[again["split"] == "val", "sample_id"]) == set(val)
    with pytest.raises(ParamsError, match="n_val"):
        mrnet_adapter(n_val=8).build_manifest(tmp_path / "raw", tmp_path / "again2" / "files")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_archive_names_page_file_and_folder(tmp_path, name):
    make, archive, _ = DATASETS[name]
    adapter = make()
    page = adapter.remote_files()[0].page
    assert page is not None
    raw = tmp_path / "raw"
    with pytest.raises(ManualDownloadError) as err:
        fetch(adapter, raw)
    msg = str(err.value)
    assert page.split()[0] in msg and archive in msg and str(raw) in msg


def _drop_meta_column(m: dict[str, bytes]) -> None:
    m["release_v0/meta/meta.csv"] = derm7pt_meta_bytes(derm7pt_meta_rows(),
                                                       [c for c in DERM_COLUMNS if c != "diagnosis"])


def _unknown_diagnosis(m: dict[str, bytes]) -> None:
    rows = derm7pt_meta_rows()
    rows[4]["diagnosis"] = "mystery lesion"
    m["release_v0/meta/meta.csv"] = derm7pt_meta_bytes(rows)


def _bad_index_file(m: dict[str, bytes]) -> None:
    m["release_v0/meta/valid_indexes.csv"] = b"idx\n6\n7\n"


def _corrupt_derm_image(m: dict[str, bytes]) -> None:
    m["release_v0/images/Gal/Gal002.jpg"] = jpeg_bytes(1)[:60]


def _missing_mmc_image(m: dict[str, bytes]) -> None:
    del m["VisualSearch/mmc-amd/ImageData/cfp-clahe-448x448/f-d-1002.jpg"]


def _mmc_label_mismatch(m: dict[str, bytes]) -> None:
    ids = mmc_image_ids("p-3001", "oct") + mmc_image_ids("d-3002", "oct")
    m["VisualSearch/mmc-amd-splitAP-test/annotations/oct.txt"] = lines_bytes([f"{i} 3" for i in ids])


def _corrupt_npy(m: dict[str, bytes]) -> None:
    m["MRNet-v1.0/train/coronal/0003.npy"] = m["MRNet-v1.0/train/coronal/0003.npy"][:100]


def _mrnet_missing_label_column(m: dict[str, bytes]) -> None:
    m["MRNet-v1.0/train-acl.csv"] = lines_bytes(MRNET_CASES["train"])


def _mrnet_missing_case(m: dict[str, bytes]) -> None:
    m["MRNet-v1.0/valid-meniscus.csv"] = b"0008,1\n0009,0\n"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD = {
    "derm7pt-missing-column": ("derm7pt", _drop_meta_column, ["meta.csv", "'diagnosis'"]),
    "derm7pt-unknown-diagnosis": ("derm7pt", _unknown_diagnosis, ["meta.csv", "mystery lesion"]),
    "derm7pt-index-column": ("derm7pt", _bad_index_file, ["valid_indexes.csv", "'indexes'"]),
    "derm7pt-corrupt-image": ("derm7pt", _corrupt_derm_image, ["Gal002.jpg", "corrupt"]),
    "mmc_amd-missing-image": ("mmc_amd", _missing_mmc_image, ["f-d-1002.jpg", "not found"]),
    "mmc_amd-label-mismatch": ("mmc_amd", _mmc_label_mismatch, ["annotations/oct.txt", "contradicts"]),
    "mrnet-corrupt-volume": ("mrnet", _corrupt_npy, ["coronal/0003.npy"]),
    "mrnet-missing-column": ("mrnet", _mrnet_missing_label_column, ["train-acl.csv", "column 2"]),
    "mrnet-missing-case": ("mrnet", _mrnet_missing_case, ["valid-meniscus.csv", "'0010'"]),
    **{f"{name}-truncated-archive": (name, None, [DATASETS[name][1], "truncated"]) for name in DATASETS},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_file_and_leaves_no_output(tmp_path, case):
    name, mutate, fragments = BAD[case]
    make, archive, members_fn = DATASETS[name]
    members = members_fn()
    if mutate is not None:
        mutate(members)
    raw = tmp_path / "raw"
    path = write_zip(members, raw / archive)
    if mutate is None:
        _truncate(path)
    adapter = make()
    fetch(adapter, raw)  # present → verified (no published checksum)
    out = tmp_path / "prepared"
    with pytest.raises(DataError) as err:
        prepare(adapter, raw, out, workers=1)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary folder left either

