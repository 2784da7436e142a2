"""dvc.yaml spells every artifact path the way medrepro.layout names it (stages compute their paths from layout)."""

from __future__ import annotations

import argparse
import shlex

from helpers import ROOT, root_stages

from medrepro import layout
from medrepro.config import load_config


def _args(cmd: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    for flag in ("--dataset", "--method", "--adapter", "--ablation", "--table", "--variant"):
        p.add_argument(flag)
    p.add_argument("--train-data", default="real")
    p.add_argument("--ratio", type=float, default=layout.FULL)
    return p.parse_known_args(shlex.split(cmd)[3:])[0]


def _expected(kind: str, a: argparse.Namespace, adapter: str) -> tuple[layout.RunPaths, layout.RunPaths | None]:
    if kind == "downstream":
        return layout.downstream(a.dataset, a.method, a.train_data, a.ratio), None
    if kind == "preadapt":
        return (layout.peft(a.dataset, a.method) if a.method else layout.preadapt(a.dataset, adapter, a.ratio)), None
    return layout.multimodal(a.dataset, a.method or "ei", a.ratio, adapter, a.adapter, a.ablation, a.train_data)


def test_training_stage_paths_are_the_layouts():
    cfg = load_config(ROOT / "params.yaml")
    checked = 0
    for st in root_stages():
        module = st.cmd.split()[2].rsplit(".", 1)[1]
        if module not in ("downstream", "preadapt", "train_ei"):
            continue
        paths, init = _expected(module, _args(st.cmd), cfg.ei.adapter)
        assert set(st.outs) == {str(paths.models), str(paths.predictions), str(paths.metrics)}, st.name
        assert st.persist == [str(paths.checkpoints)], st.name
        if init is not None:
            assert str(init.models) in st.deps, st.name
        checked += 1
    assert checked >= 20


def test_generator_paths_are_the_layouts():
    cfg = load_config(ROOT / "params.yaml")
    stages = root_stages()
    trained = [s for s in stages if s.name.startswith("train_diffusion@")]
    synthesized = [s for s in stages if s.name.startswith("synthesize@")]
    assert len(trained) == len(cfg.datasets) * len(cfg.diffusion.variants)
    assert len(synthesized) == len(cfg.datasets) * len(cfg.synthesis.generators)
    for st in trained:
        a = _args(st.cmd)
        paths = layout.generator(a.dataset, a.variant, cfg.diffusion.train_subset)
        assert set(st.outs) == {str(paths.models), str(paths.metrics)}, st.name
        assert st.persist == [str(paths.checkpoints)], st.name
    for st in synthesized:
        a = _args(st.cmd)
        assert set(st.outs) == {str(layout.synthetic(a.dataset, a.variant)),
                                str(layout.synthetic_grid(a.dataset, a.variant)),
                                str(layout.synthesis_metrics(a.dataset, a.variant))}, st.name
        assert str(layout.generator(a.dataset, a.variant, cfg.diffusion.train_subset).models) in st.deps
    syn_runs = [s for s in stages if "real+syn_" in s.cmd]
    assert syn_runs and all(any(d.startswith("data/synthetic/") for d in s.deps) for s in syn_runs)


def test_subset_generators_have_their_own_synthetic_sets_and_downstream_folder():
    assert layout.parse_generator_id(layout.generator_id("vap", "ratio_0.01")) == ("vap", "ratio_0.01")
    assert layout.parse_generator_id(layout.generator_id("vap_nopcm")) == ("vap_nopcm", None)
    cfg = load_config(ROOT / "params.yaml")
    gd = cfg.synthesis.generator_data
    by_name = {s.name: s for s in root_stages()}
    for d in cfg.datasets:
        for r in gd.ratios:
            gen = layout.generator_id(gd.variant, layout.ratio_key(r))
            trained = by_name[f"train_diffusion_subset@{d}-{r}"]
            assert str(layout.generator(d, gd.variant, layout.ratio_key(r)).models) in trained.outs
            assert str(layout.synthetic(d, gen)) in by_name[f"synthesize_subset@{d}-{r}"].outs
            for m in cfg.downstream.methods:
                paths = layout.downstream(d, m, layout.train_data_of(gen), r)
                assert paths.predictions.parts[:3] == ("results", "predictions", "generator_data")
                assert str(paths.predictions) in by_name[f"downstream_subset_syn@{d}-{m}-{r}"].outs
    # table3 reads results/predictions/downstream whole: the subset runs must not land there
    real_syn_vap = layout.train_data_of("vap")
    assert layout.downstream("synth_mm", "maxvit", real_syn_vap, 0.01).predictions.parts[2] == "downstream"
    assert by_name["vap_generator_data"].outs == [str(layout.VAP_GENERATOR_DATA)]


def test_report_and_vfm_paths_are_the_layouts():
    by_name = {s.name: s for s in root_stages()}
    vfm = by_name["vfm"]
    assert set(vfm.outs) == {str(layout.VFM_WEIGHTS), str(layout.VFM_DESCRIPTION), str(layout.VFM.metrics)}
    assert vfm.persist == [str(layout.VFM.checkpoints)]
    assert set(by_name["table3"].outs) == {str(p) for p in (layout.TABLE3, layout.TABLE3_MD, layout.TABLE3_PLOT,
                                                            layout.SUMMARY, layout.TABLE3_GAPS, layout.SOFTWARE)}
    for n in (3, 4, 6, 7, 8):
        name = f"ei_table@{n}" if n in (4, 6) else f"ei_table{n}"
        gaps = [str(layout.EI_TABLE3_GAPS)] if n == 3 else []
        assert by_name[name].outs == [str(layout.ei_table(n)), *gaps]
    assert by_name["results_doc"].outs == [str(layout.RESULTS_DOC)]
    assert by_name["prepare@synth_mm"].outs == [str(layout.prepared("synth_mm"))]
    assert by_name["split@synth_mm"].outs == [str(layout.subsets("synth_mm"))]
    assert by_name["fetch@synth_mm"].outs == [str(layout.fetch_record("synth_mm"))]


def test_dvc_plots_read_files_that_stages_write():
    import yaml

    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    outs = {o for s in root_stages() for o in s.outs}
    files = {f for entry in plots for spec in entry.values() for f in spec["y"]}
    assert {"results/tables/ei_table3.csv", "results/tables/table3_gaps.csv"} <= files
    assert files <= outs, files - outs
