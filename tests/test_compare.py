"""python -m medrepro.compare: two saved runs (files, git revisions or DVC experiments) with paired intervals."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
from helpers import write_predictions

from medrepro.compare import main
from medrepro.metrics.classification import metric_value


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_compare_files_revisions_and_experiments(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    good, weak = tmp_path / "good.parquet", tmp_path / "weak.parquet"
    frames = write_predictions(good, y, 2.0, (0, 1), rng)
    write_predictions(weak, y, 0.5, (0, 1), rng)
    assert main([str(good), str(weak), "--metric", "mAUC", "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    expected = np.mean([metric_value(f["label"].to_numpy(), f.filter(like="score_").to_numpy(), "mAUC")
                        for f in frames])
    assert f"{expected:.4f}" in out and "A above" in out and "2 seed(s) [0, 1], 200 test samples" in out

    # the same file at two revisions, and a DVC experiment (a ref under refs/exps) by its name
    monkeypatch.chdir(tmp_path)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "add", "good.parquet")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "good")
    _git(tmp_path, "update-ref", "refs/exps/ab/cdef/exp-1234", "HEAD")
    weak.replace(good)  # the working copy now holds the weak run
    assert main(["exp-1234:good.parquet", "good.parquet", "--metric", "mAP", "--resamples", "200"]) == 0
    assert "A above" in capsys.readouterr().out
    assert main(["HEAD:good.parquet", "HEAD:good.parquet", "--metric", "mAP", "--resamples", "50"]) == 0
    assert "+0.0000 [+0.0000, +0.0000]  level" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["seeds", "missing", "rev"])
def test_compare_errors_name_what_is_wrong(tmp_path, capsys, case):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 50)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_predictions(a, y, 1.0, (0, 1), rng)
    write_predictions(b, y, 1.0, (0,) if case == "seeds" else (0, 1), rng)
    args = {"seeds": [str(a), str(b)], "missing": [str(a), str(tmp_path / "nope.parquet")],
            "rev": [f"no-such-rev:{a.name}", str(a)]}[case]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert {"seeds": "different test samples or seeds", "missing": "nope.parquet",
            "rev": "'no-such-rev' is neither a git revision"}[case] in err
    assert isinstance(pd.read_parquet(a), pd.DataFrame)
