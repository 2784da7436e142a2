"""Single-modality adapters (ISIC 2018/2019, ChestX-ray14, pediatric CXR, BUSI) on tiny fake archives:
download (local HTTP server with Range support), fetch → prepare → subsets, manual placement, bad input."""

from __future__ import annotations

import hashlib
import re
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fakes_single import (
    BUSI_COUNTS,
    CXR14_TEST_PATIENTS,
    KERMANY,
    build_busi,
    build_chestxray14,
    build_cxr_pneumonia,
    build_isic2018,
    build_isic2019,
    md5,
    write_zip,
)
from PIL import Image

from medrepro.data import chestxray14, isic2018, isic2019
from medrepro.data.cache import open_cache
from medrepro.data.download import download
from medrepro.data.manifest import load_manifest
from medrepro.data.official_splits import assign_splits
from medrepro.data.prepare import fetch, prepare
from medrepro.data.registry import get_adapter
from medrepro.data.splits import make_subsets
from medrepro.errors import DataError, ManualDownloadError

SIZE = 16


def run(name: str, cfg: dict[str, Any], raw: Path, out: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """fetch → prepare → subsets; checks the cache against the manifest; returns (manifest, classes)."""
    adapter = get_adapter(name, {"image_size": SIZE, **cfg})
    fetch(adapter, raw)
    summary = prepare(adapter, raw, out, workers=2)
    df, classes = load_manifest(out)
    assert summary["n_samples"] == len(df) and classes["name"] == name
    frames, offsets = open_cache(out, "image")
    assert frames.shape == (len(df), SIZE, SIZE, adapter.info.channels[0])
    assert offsets.tolist() == list(range(len(df) + 1))
    assert all((out / p).is_file() for p in df["path_image"])
    subsets = make_subsets(df, [0.5, 1.0], [1], [0])
    assert set(subsets["sample_id"]) == set(df.loc[df["split"] == "train", "sample_id"])
    if classes["task"] == "multiclass":  # 1-shot = one train sample per class present
        assert subsets["shot_1"].sum() == df.loc[df["split"] == "train", "label"].nunique()
    return df, classes


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ---------------------------------------------------------------- split helper
def test_assign_splits_is_seeded_grouped_and_stratified() -> None:
    strata = ["a"] * 40 + ["b"] * 20
    groups = [f"p{i // 2}" for i in range(60)]  # two images per patient
    split = assign_splits(60, {"val": 0.1, "test": 0.2}, 3, strata=strata, groups=groups)
    rev = assign_splits(60, {"val": 0.1, "test": 0.2}, 3, strata=strata[::-1], groups=groups[::-1])[::-1]
    assert split.tolist() == rev.tolist()  # independent of row order
    for g in set(groups):
        assert len({s for s, gg in zip(split, groups, strict=True) if gg == g}) == 1
    counts = pd.crosstab(pd.Series(strata, name="c"), pd.Series(split, name="s"))
    assert counts.loc["a"].to_dict() == {"test": 8, "train": 28, "val": 4}
    assert counts.loc["b"].to_dict() == {"test": 4, "train": 14, "val": 2}
    assert assign_splits(60, {"val": 0.1}, 4, strata=strata).tolist() != split.tolist()


# ---------------------------------------------------------------- downloads over HTTP
@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, bytes], list[tuple[str, str]]]]:
    """A local HTTP server serving ``files`` (path → bytes) with ``Range: bytes=N-`` support; logs
    (path, Range header) per request."""
    files: dict[str, bytes] = {}
    log: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            data = files.get(self.path)
            rng = self.headers.get("Range", "")
            log.append((self.path, rng))
            if data is None:
                self.send_error(404)
                return
            start = int(m.group(1)) if (m := re.fullmatch(r"bytes=(\d+)-", rng)) else 0
            if start >= len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])

        def log_message(self, *args: Any) -> None:
            pass

    monkeypatch.setenv("no_proxy", "*")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files, log
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_isic2018_downloads_and_prepares(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    base, files, log = server
    truth = build_isic2018(tmp_path / "remote")
    for p in (tmp_path / "remote").iterdir():
        files[f"/2018/{p.name}"] = p.read_bytes()
    monkeypatch.setattr(isic2018, "BASE_URL", f"{base}/2018/")
    raw = tmp_path / "raw"
    df, classes = run("isic2018", {}, raw, tmp_path / "out")
    assert len(log) == 6 and not any(r for _, r in log)
    record = (raw / "fetch.json").read_text()
    for name, data in files.items():
        assert hashlib.sha256(data).hexdigest() in record and (raw / Path(name).name).is_file()
    assert classes["classes"] == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert classes["channels"] == [3] and classes["task"] == "multiclass"
    for part, split in (("Training", "train"), ("Validation", "val"), ("Test", "test")):
        got = df[df["split"] == split].set_index("sample_id")
        assert {s: int(got.loc[s, "label"]) for s in got.index} == dict(truth[part])
        assert all(p.startswith(f"files/ISIC2018_Task3_{part}_Input/ISIC_") for p in got["path_image"])
    assert (df["patient_id"] == df["sample_id"]).all()
    fetch(get_adapter("isic2018", {"image_size": SIZE}), raw)  # present files: verified, not downloaded
    assert len(log) == 6


def test_download_resumes_and_rejects_bad_checksums(tmp_path: Path, server) -> None:
    base, files, log = server
    build_isic2018(tmp_path / "remote")
    data = (tmp_path / "remote" / "ISIC2018_Task3_Validation_Input.zip").read_bytes()
    files["/v.zip"] = data
    sha, md5_hex = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()

    full = tmp_path / "full" / "ISIC2018_Task3_Validation_Input.zip"
    assert download(f"{base}/v.zip", full, sha256=sha, md5=md5_hex) == sha and full.read_bytes() == data

    resumed = tmp_path / "resume" / full.name
    resumed.parent.mkdir()
    half = len(data) // 2
    resumed.with_name(resumed.name + ".part").write_bytes(data[:half])
    assert download(f"{base}/v.zip", resumed, sha256=sha) == sha
    assert log[-1] == ("/v.zip", f"bytes={half}-")
    assert resumed.read_bytes() == data and not resumed.with_name(resumed.name + ".part").exists()

    for kwargs in ({"sha256": "0" * 64}, {"md5": "0" * 32}):
        dest = tmp_path / "bad" / full.name
        with pytest.raises(DataError, match=re.escape(full.name)):
            download(f"{base}/v.zip", dest, **kwargs)
        assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    with pytest.raises(DataError, match="404"):
        download(f"{base}/missing.zip", tmp_path / "missing.zip")


# ---------------------------------------------------------------- ChestX-ray14
@pytest.fixture
def cxr14_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    raw = tmp_path / "raw"
    raw.mkdir()
    findings = build_chestxray14(raw)
    patched = tuple((name, url, md5(raw / name)) for name, url, _ in chestxray14.ARCHIVES)
    monkeypatch.setattr(chestxray14, "ARCHIVES", patched)
    return raw, findings


@pytest.mark.parametrize("single_label", [True, False])
def test_chestxray14(tmp_path: Path, cxr14_raw, single_label: bool) -> None:
    raw, findings = cxr14_raw
    cfg = {"single_label": single_label, "val_fraction": 0.3, "val_seed": 1}
    df, classes = run("chestxray14", cfg, raw, tmp_path / "out")
    assert classes["channels"] == [1]
    by_patient = df.groupby("patient_id")["split"].nunique()
    assert (by_patient == 1).all()  # patient-level splits
    test_patients = {str(p) for p in CXR14_TEST_PATIENTS}
    assert set(df.loc[df["split"] == "test", "patient_id"]) <= test_patients
    assert not set(df.loc[df["split"] != "test", "patient_id"]) & test_patients
    assert set(df["split"]) == {"train", "val", "test"}
    names = {Path(p).stem: f for p, f in findings.items()}
    if single_label:
        assert classes["task"] == "multiclass" and len(classes["classes"]) == 15
        assert classes["classes"][-1] == "No Finding"
        assert set(df["sample_id"]) == {s for s, f in names.items() if "|" not in f}
        for sid, label in zip(df["sample_id"], df["label"], strict=True):
            assert classes["classes"][label] == names[sid]
    else:
        assert classes["task"] == "multilabel" and len(classes["classes"]) == 14
        assert len(df) == len(findings)
        for sid, labels in zip(df["sample_id"], df["labels"], strict=True):
            want = set(names[sid].split("|")) - {"No Finding"}
            assert {classes["classes"][i] for i, v in enumerate(labels) if v} == want
    # val patients do not depend on the single-label filter
    other = get_adapter("chestxray14", {"image_size": SIZE, **cfg, "single_label": not single_label})
    prepare(other, raw, tmp_path / "out2")
    df2 = load_manifest(tmp_path / "out2")[0]
    val = set(df.loc[df["split"] == "val", "patient_id"])
    val2 = set(df2.loc[df2["split"] == "val", "patient_id"])
    assert val & val2 and (val <= val2 if single_label else val2 <= val)


def test_chestxray14_md5_mismatch_and_manual_files(tmp_path: Path, cxr14_raw, monkeypatch) -> None:
    raw, _ = cxr14_raw
    adapter = get_adapter("chestxray14", {"image_size": SIZE})
    good = chestxray14.ARCHIVES
    monkeypatch.setattr(chestxray14, "ARCHIVES", ((good[0][0], good[0][1], "f" * 32), *good[1:]))
    with pytest.raises(DataError, match=r"md5 mismatch for .*images_001\.tar\.gz"):
        fetch(adapter, raw)
    monkeypatch.setattr(chestxray14, "ARCHIVES", good)
    (raw / "Data_Entry_2017_v2020.csv").unlink()
    with pytest.raises(ManualDownloadError) as exc:
        fetch(adapter, raw)
    msg = str(exc.value)
    assert "Data_Entry_2017_v2020.csv" in msg and chestxray14.PAGE in msg and str(raw) in msg


# ---------------------------------------------------------------- pediatric CXR
@pytest.mark.parametrize("variant", ["mendeley", "kaggle"])
def test_cxr_pneumonia(tmp_path: Path, variant: str) -> None:
    raw = tmp_path / "raw"
    build_cxr_pneumonia(raw, variant)
    df, classes = run("cxr_pneumonia", {"variant": variant, "val_fraction": 0.25, "val_seed": 0},
                      raw, tmp_path / "out")
    assert classes["classes"] == ["NORMAL", "PNEUMONIA"] and classes["channels"] == [1]
    n = {f: sum(len(v) for v in KERMANY[f].values()) for f in KERMANY}
    assert len(df) == sum(n.values())  # no .DS_Store, no __MACOSX fork, no duplicate tree
    assert not df["path_image"].str.contains("__MACOSX|chest_xray/chest_xray").any()
    assert (df["split"] == "test").sum() == n["test"]
    assert set(df.loc[df["split"] == "test", "sample_id"]) == {
        f"test_{c}_{s}" for c, stems in KERMANY["test"].items() for s in stems}
    pid = dict(zip(df["sample_id"].str.split("_", n=2).str[2], df["patient_id"], strict=True))
    assert pid["person1_bacteria_1"] == pid["person1_virus_6"] == "person1"
    assert pid["NORMAL2-IM-0427-0002"] == "NORMAL2-IM-0427" and pid["IM-0115-0001"] == "IM-0115"
    if variant == "kaggle":
        assert (df["split"] == "val").sum() == n["val"]
    else:
        val = df[df["split"] == "val"]
        assert set(val["label"]) == {0, 1}  # stratified
        train_val = df[df["split"] != "test"]
        assert (train_val.groupby("patient_id")["split"].nunique() == 1).all()  # patient-level


# ---------------------------------------------------------------- BUSI
def test_busi(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    build_busi(raw)
    out = tmp_path / "out"
    df, classes = run("busi", {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}, raw, out)
    assert classes["classes"] == ["benign", "malignant", "normal"] and classes["channels"] == [1]
    assert len(df) == sum(BUSI_COUNTS.values()) and not df["path_image"].str.contains("_mask").any()
    assert pd.crosstab(df["label"], df["split"]).to_numpy().tolist() == [[1, 4, 1], [1, 3, 1], [1, 3, 1]]
    masks = df.set_index("sample_id")["path_mask"]
    assert masks["benign_1"] == "files/masks/benign_1.png"
    two = np.asarray(Image.open(out / masks["benign_2"])) > 0
    assert two[2:12, 2:12].all() and two[20:30, 25:35].all() and two.sum() == 200  # OR of both masks
    assert (np.asarray(Image.open(out / masks["benign_1"])) > 0).sum() == 100
    assert (np.asarray(Image.open(out / masks["normal_4"])) == 0).all()


def test_busi_binary_task_leaves_the_normal_images_out(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    build_busi(raw)
    out = tmp_path / "out"
    df, classes = run("busi", {"binary": True, "val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}, raw, out)
    assert classes["classes"] == ["benign", "malignant"] and classes["task"] == "multiclass"
    assert len(df) == BUSI_COUNTS["benign"] + BUSI_COUNTS["malignant"]
    assert not df["sample_id"].str.contains("normal").any()
    assert (df["sample_id"].str.startswith("malignant") == (df["label"] == 1)).all()  # benign 0, malignant 1
    assert df["path_mask"].notna().all()  # every tumour image has its lesion mask


# ---------------------------------------------------------------- manual placement and bad input
@pytest.mark.parametrize("name,cfg,filename,page", [
    ("busi", {}, "Dataset_BUSI_with_GT.zip", "aryashah2k/breast-ultrasound-images-dataset"),
    ("cxr_pneumonia", {"variant": "kaggle"}, "archive.zip", "paultimothymooney/chest-xray-pneumonia"),
    ("cxr_pneumonia", {}, "ChestXRay2017.zip", "data.mendeley.com/datasets/rscbjbr9sj/2"),
])
def test_manual_placement(tmp_path: Path, name: str, cfg: dict, filename: str, page: str) -> None:
    raw = tmp_path / "raw" / name
    with pytest.raises(ManualDownloadError) as exc:
        fetch(get_adapter(name, {"image_size": SIZE, **cfg}), raw)
    msg = str(exc.value)
    assert filename in msg and page in msg and f"{raw}/" in msg


@pytest.mark.parametrize("defect,pattern", [
    ("truncated", r"ISIC2018_Task3_Training_Input\.zip"),
    ("drop_column", r"ISIC2018_Task3_Training_GroundTruth\.csv: missing column 'VASC'"),
    ("not_onehot", r"ISIC2018_Task3_Training_GroundTruth\.csv: row of image 'ISIC_0024307' is not one-hot"),
    ("corrupt", r"corrupt or unreadable image .*ISIC_0024306\.jpg"),
])
def test_isic2018_bad_input(tmp_path: Path, defect: str, pattern: str) -> None:
    raw = tmp_path / "raw"
    build_isic2018(raw, drop_column="VASC" if defect == "drop_column" else None,
                   not_onehot=defect == "not_onehot", corrupt=defect == "corrupt")
    if defect == "truncated":
        path = raw / "ISIC2018_Task3_Training_Input.zip"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    adapter = get_adapter("isic2018", {"image_size": SIZE})
    fetch(adapter, raw)  # no published checksum: the bad files pass fetch, prepare must catch them
    out = tmp_path / "out"
    with pytest.raises(DataError, match=pattern):
        prepare(adapter, raw, out)
    assert_nothing_left(out)


# ---------------------------------------------------------------- ISIC 2019
ISIC19_CFG = {"val_fraction": 0.1, "val_seed": 0, "test_fraction": 0.2, "split_seed": 0}


def test_isic2019_downloads_prepares_and_splits(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    base, files, log = server
    truth = build_isic2019(tmp_path / "remote")
    for p in (tmp_path / "remote").iterdir():
        files[f"/2019/{p.name}"] = p.read_bytes()
    monkeypatch.setattr(isic2019, "BASE_URL", f"{base}/2019/")
    raw = tmp_path / "raw"
    df, classes = run("isic2019", ISIC19_CFG, raw, tmp_path / "out")
    assert sorted(p for p, _ in log) == ["/2019/ISIC_2019_Training_GroundTruth.csv",
                                         "/2019/ISIC_2019_Training_Input.zip"]
    record = (raw / "fetch.json").read_text()  # no published checksum: the observed sha256 is recorded
    assert all(hashlib.sha256(data).hexdigest() in record for data in files.values())
    assert classes["classes"] == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]  # UNK dropped
    assert classes["task"] == "multiclass" and classes["channels"] == [3]
    assert dict(zip(df["sample_id"], df["label"].astype(int), strict=True)) == truth
    assert (df["patient_id"] == df["sample_id"]).all()
    assert df["path_image"].str.match(r"files/ISIC_2019_Training_Input/ISIC_\d{7}\.jpg$").all()
    # stratified: per class (10, 20, 10, 5, 5, 5, 5, 5 images) 20 % test, then 10 % of the rest val, ≥ 1 each
    counts = pd.crosstab(df["label"], df["split"])
    assert counts["test"].tolist() == [2, 4, 2, 1, 1, 1, 1, 1]
    assert counts["val"].tolist() == [1, 2, 1, 1, 1, 1, 1, 1]
    assert counts["train"].tolist() == [7, 14, 7, 3, 3, 3, 3, 3]


def test_isic2019_split_is_seeded_and_order_free(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    build_isic2019(raw)

    def splits(cfg: dict[str, Any], tag: str) -> pd.Series:
        df = get_adapter("isic2019", {"image_size": SIZE, **ISIC19_CFG, **cfg}).build_manifest(raw, tmp_path / tag)
        return df.set_index("sample_id")["split"].sort_index()

    first = splits({}, "a")
    csv_path = raw / "ISIC_2019_Training_GroundTruth.csv"
    header, *rows = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([header, *rows[::-1]]) + "\n")
    assert splits({}, "b").equals(first)  # same seeds, rows reversed: same split
    other = splits({"split_seed": 1}, "c")
    assert set(other[other == "test"].index) != set(first[first == "test"].index)
    new_val = splits({"val_seed": 1}, "d")  # val_seed redraws val only, inside the same train part
    assert new_val[new_val == "test"].equals(first[first == "test"])
    assert set(new_val[new_val == "val"].index) != set(first[first == "val"].index)


def test_isic2019_split_at_real_size() -> None:
    # class sizes of the real 25,331 training images (MEL … SCC; the published counts)
    sizes = [4522, 12875, 3323, 867, 2624, 239, 253, 628]
    labels = np.repeat(np.arange(8), sizes)
    split = isic2019.split_8_2([f"ISIC_{i:07d}" for i in range(len(labels))], labels)
    counts = pd.crosstab(labels, split)
    assert len(labels) == 25331 and abs(counts["test"].sum() - 0.2 * 25331) <= 4  # 8:2 up to per-class rounding
    assert (abs(counts["test"] - 0.2 * np.array(sizes)) <= 0.5).all()
    assert (abs(counts["val"] - 0.1 * (np.array(sizes) - counts["test"])) <= 0.5).all()


@pytest.mark.parametrize("row,pattern", [
    (4, r"ISIC_2019_Training_GroundTruth\.csv: data row 5 \(image 'ISIC_0000128'\) has no positive among "
        r"MEL,NV,BCC,AK,BKL,DF,VASC,SCC \(UNK is dropped"),
    (None, r"image 'ISIC_0000100' not found in .*ISIC_2019_Training_Input\.zip"),
], ids=["row_without_class", "image_missing"])
def test_isic2019_bad_input(tmp_path: Path, row: int | None, pattern: str) -> None:
    raw = tmp_path / "raw"
    build_isic2019(raw, no_class_row=row)
    if row is None:  # an image the ground truth lists is missing from the zip
        zip_path = raw / "ISIC_2019_Training_Input.zip"
        with zipfile.ZipFile(zip_path) as zf:
            kept = {n: zf.read(n) for n in zf.namelist() if "ISIC_0000100" not in n}
        write_zip(zip_path, kept)
    adapter = get_adapter("isic2019", {"image_size": SIZE, **ISIC19_CFG})
    fetch(adapter, raw)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=pattern):
        prepare(adapter, raw, out)
    assert_nothing_left(out)
