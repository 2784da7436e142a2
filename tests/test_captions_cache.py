"""The caption cache: a second run asks nothing, failures are retried not dropped, a killed run resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from captions_fixtures import Counting, Flaky, prepared_synth

from medrepro.captions.bank import build_bank, dataset_items
from medrepro.captions.cache import CaptionCache
from medrepro.captions.vaps import COLUMNS, CaptionError, caption_items
from medrepro.errors import DataError, ParamsError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    folder, manifest, classes = prepared_synth(root, 24, 8, gen_size=48)
    return root, folder, manifest, classes


def _items(synth):
    _, folder, manifest, classes = synth
    return dataset_items("synth_mm", manifest, classes, folder, ("train", "val"))


def test_second_run_sends_no_request(synth, tmp_path):
    items = _items(synth)
    first, second = Counting(), Counting()
    a, s1 = caption_items(items, first, CaptionCache(tmp_path / "c"), 8)
    b, s2 = caption_items(items, second, CaptionCache(tmp_path / "c"), 8)
    assert first.requests == 2 * len(items) + 2 and s1.cache_hits == 0
    assert second.requests == 0 and s2.requests == 0 and s2.cache_hits == 2 * len(items) + 2
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == COLUMNS


def test_failed_requests_are_recorded_and_retried(synth, tmp_path):
    items = _items(synth)
    cache = CaptionCache(tmp_path / "c")
    with pytest.raises(CaptionError, match=rf"{len(items)} of {len(items)} images .*HTTP 500"):
        caption_items(items, Flaky(fail_calls=10**6), cache, 8)
    assert len(cache.failures()) == len(items)  # every step-3 request, none turned into a caption
    retry = Counting()
    out, _ = caption_items(items, retry, cache, 8)
    assert retry.requests == len(items)  # only the failed step 3 is asked again
    assert cache.failures() == {}
    assert len(out) == len(items) and out["t_mix"].str.len().gt(20).all()


def test_partial_failure_names_how_many_are_missing(synth, tmp_path):
    items = _items(synth)
    with pytest.raises(CaptionError, match=r"^8 of \d+ images still have no complete caption"):
        caption_items(items, Flaky(fail_calls=1), CaptionCache(tmp_path / "c"), 8)


def test_missing_and_corrupt_images_are_named(synth, tmp_path):
    items = _items(synth)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    gone = tmp_path / "gone.png"
    for path, pattern in ((bad, "corrupt or unreadable image"), (gone, "missing")):
        broken = [*items[:3], type(items[0])("X1", "fundus", items[0].modality, path)]
        with pytest.raises(DataError, match=rf"{pattern}.*{path.name}"):
            caption_items(broken, Counting(), CaptionCache(tmp_path / "c"), 8)
    assert not (tmp_path / "c").exists()  # nothing asked, nothing written


_KILLABLE = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import pandas as pd
from captions_fixtures import Counting
from medrepro.captions.bank import dataset_items
from medrepro.captions.cache import CaptionCache
from medrepro.captions.vaps import caption_items
from medrepro.data.manifest import load_manifest
manifest, classes = load_manifest(Path({folder!r}))
items = dataset_items("synth_mm", manifest, classes, Path({folder!r}), ("train", "val"))
caps, _ = caption_items(items, Counting(delay=float(sys.argv[2])), CaptionCache(Path(sys.argv[1])), 2)
caps.to_parquet(sys.argv[3])
"""


def test_kill_9_then_rerun_asks_only_what_is_missing(synth, tmp_path):
    root, folder, *_ = synth
    script = tmp_path / "run.py"
    script.write_text(_KILLABLE.format(tests=str(Path(__file__).parent), folder=str(folder)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # the uninterrupted reference
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref"), "0", str(tmp_path / "ref.parquet")],
                   check=True, env=env)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "c"), "0.05", str(tmp_path / "x.parquet")],
                            env=env)
    entries = lambda: len(list((tmp_path / "c").glob("??/*.json")))  # noqa: E731
    deadline = time.time() + 120
    while entries() < 30 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = entries()
    items = _items(synth)
    total = 2 * len(items) + 2
    assert 30 <= done < total, done
    rerun = Counting()
    out, stats = caption_items(items, rerun, CaptionCache(tmp_path / "c"), 2)
    assert rerun.requests == total - done and stats.cache_hits == done
    pd.testing.assert_frame_equal(out, pd.read_parquet(tmp_path / "ref.parquet"))
    assert not list((tmp_path / "c").rglob(".*.tmp"))  # a half-written entry of the killed run is cleared


def test_bank_holds_training_captions_per_class_and_an_unseen_bank(synth, tmp_path):
    root, _, manifest, classes = synth
    caps, _ = caption_items(_items(synth), Counting(), CaptionCache(tmp_path / "c"), 16)
    subsets = pd.read_parquet(root / "splits" / "synth_mm" / "subsets.parquet")
    bank = build_bank(caps, manifest, classes, subsets, "ratio_0.1", "val")
    train = bank[bank["bank"] == "train"]
    for seed, rows in train.groupby("seed"):
        chosen = subsets[(subsets["seed"] == seed) & subsets["ratio_0.1"]]["sample_id"]
        assert set(rows["sample_id"]) == set(chosen)
        assert set(rows["class_name"]) == set(classes["classes"])  # at least one per class (stratified subsets)
    unseen = bank[bank["bank"] == "unseen"]
    assert set(unseen["sample_id"]) == set(manifest.loc[manifest["split"] == "val", "sample_id"])
    assert set(unseen["sample_id"]).isdisjoint(train["sample_id"])
    merged = bank.merge(caps, on=["sample_id", "modality"], suffixes=("", "_c"))
    assert (merged["t_mix"] == merged["t_mix_c"]).all() and len(merged) == len(bank)
    with pytest.raises(ParamsError, match="shot_99"):
        build_bank(caps, manifest, classes, subsets, "shot_99", "val")


def test_volumes_are_captioned_by_their_middle_slice(tmp_path):
    import numpy as np

    from medrepro.captions.prompts import MODALITIES

    vol = np.zeros((5, 24, 24), dtype=np.uint8)
    vol[2, 8:16, 8:16] = 200  # only the middle slice has the bright square
    (tmp_path / "v").mkdir()
    np.save(tmp_path / "v" / "0001.npy", vol)
    manifest = pd.DataFrame({"sample_id": ["0001"], "split": ["train"], "path_axial": ["v/0001.npy"]})
    classes = {"modalities": ["axial"], "volumetric": True}
    items = dataset_items("mrnet", manifest, classes, tmp_path, ("train",), tmp_path / "slices")
    assert items[0].modality == MODALITIES["knee_mri"] and items[0].path == tmp_path / "slices/axial/0001.png"
    from PIL import Image

    assert np.asarray(Image.open(items[0].path)).max() == 200
    out, _ = caption_items(items, Counting(), CaptionCache(tmp_path / "c"), 4)
    assert len(out) == 1 and out["t_mix"].iloc[0].startswith("One ")  # the square, seen as one abnormality
    (tmp_path / "v" / "0001.npy").write_bytes(b"not a volume")
    with pytest.raises(DataError, match="0001.npy"):
        dataset_items("mrnet", manifest, classes, tmp_path, ("train",), tmp_path / "slices2")
