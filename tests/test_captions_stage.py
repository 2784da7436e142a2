"""The caption stage under both drivers: same parquet, nothing left to do for the other, no request on rerun."""

from __future__ import annotations

import json
import shutil
import sys

import pandas as pd
import pytest
from helpers import config, root_stages, run

from medrepro import layout
from medrepro.errors import ParamsError

TARGETS = [str(layout.captions("synth_mm")), str(layout.caption_bank("synth_mm"))]


def test_caption_stage_paths_are_the_layouts():
    st = {s.name: s for s in root_stages()}["caption@synth_mm"]
    assert set(st.outs) == {*TARGETS, str(layout.caption_metrics("synth_mm"))}
    assert st.persist == [str(layout.caption_cache("synth_mm"))]
    assert {str(layout.prepared("synth_mm")), str(layout.subsets("synth_mm"))} <= set(st.deps)


@pytest.mark.parametrize(("patch", "message"), [
    ({"captions": {"splits": ["val"], "unseen_split": "val"}}, "captions.splits must include train"),
    ({"captions": {"unseen_split": "test"}}, "captions.unseen_split 'test' is not in captions.splits"),
    ({"captions": {"bank_subset": "ratio_0.5"}}, "captions.bank_subset 'ratio_0.5' is not a subset"),
    ({"captions": {"openai": {"base_url": "localhost:8000"}}}, "captions.openai.base_url"),
    ({"captions": {"backend": "gpt"}}, "captions.backend"),
])
def test_caption_params_are_checked(patch, message):
    with pytest.raises(ParamsError, match=message):
        config(patch)


def _metrics(project):
    return json.loads((project / layout.caption_metrics("synth_mm")).read_text())


@pytest.mark.e2e
def test_snakemake_and_dvc_build_the_same_captions(built_copy):
    project = built_copy  # table3's DAG built the captions through Snakemake
    first = {t: pd.read_parquet(project / t) for t in TARGETS}
    assert _metrics(project)["requests"] > 0 and _metrics(project)["failures"] == {}
    assert "Nothing to be done" in run(["snakemake", "-n", *TARGETS], project).stdout
    assert "up to date" in run(["dvc", "status", "caption@synth_mm"], project).stdout

    # the stage run again (outputs in place, cache kept): no request reaches the backend
    run([sys.executable, "-m", "medrepro.stages.caption", "--dataset", "synth_mm"], project)
    assert _metrics(project)["requests"] == 0 and _metrics(project)["cache_hits"] > 0

    # dvc repro from nothing (cache included) gives the same captions and bank; then Snakemake has nothing to do
    shutil.rmtree(project / "data")
    run(["dvc", "repro", "caption@synth_mm"], project)
    for t, frame in first.items():
        pd.testing.assert_frame_equal(pd.read_parquet(project / t), frame)
    assert "Nothing to be done" in run(["snakemake", "-n", *TARGETS], project).stdout
