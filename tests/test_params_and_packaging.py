"""params.yaml checks and install metadata: pins agree, overrides are valid, every bad value names its key."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from helpers import ROOT, base_params

from medrepro.config import Config, check_params, deep_merge, load_config, load_params
from medrepro.errors import ParamsError
from medrepro.report.software import lock_differences, locked_pins


def test_params_yaml_builds_the_typed_config():
    cfg = load_config(ROOT / "params.yaml")
    assert isinstance(cfg, Config) and cfg.datasets == ("synth_mm",)
    assert cfg.train.augment.crop_pad == 2 and cfg.downstream.models["maxvit"].arch == "maxvit_embedded"
    assert cfg.ei.knobs()["vfm"]["kwargs"]["depth"] == cfg.ei.vfm.depth == 4


def test_paper_overrides_are_valid_and_replace_embedded_architectures():
    cfg = load_config(ROOT / "params.yaml", ROOT / "config" / "paper.yaml")
    dense = cfg.downstream.models["densenet121"]
    assert dense.pretrained is True and dense.kwargs == {"growth_rate": 32, "block_config": [6, 12, 24, 16]}
    assert cfg.ei.vfm.kwargs == {"patch_size": None, "embed_dim": 768, "depth": 12, "num_heads": 12}
    assert cfg.ei.vfm_source == "given" and set(cfg.ei.datasets) <= set(cfg.datasets)


@pytest.mark.parametrize(("patch", "key"), [
    ({"train": {"lr_maxx": 1.0}}, "train.lr_maxx"),
    ({"train": {"lr_max": "fast"}}, "train.lr_max"),
    ({"splits": {"ratios": [0.0]}}, "splits.ratios.0"),
    ({"datasets": ["imagenet"]}, "datasets.0"),
    ({"bogus": 1}, "bogus"),
    ({"ei": {"vfm": {"kwargs": {"depth": "4"}}}}, "ei.vfm.kwargs.depth"),
    ({"downstream": {"models": {"maxvit": {"kwargs": {"img_size": "32"}}}}},
     "downstream.models.maxvit.kwargs.img_size"),
])
def test_schema_errors_name_the_key(patch, key):
    with pytest.raises(ParamsError, match=re.escape(key)):
        check_params(deep_merge(base_params(), patch))


#: the cross-key and range cases: each names the key and the offending value
BAD_PARAMS = [
    ({"downstream": {"methods": ["maxvitt"]}}, "downstream.methods lists 'maxvitt', which is not a key of "
                                                "downstream.models"),
    ({"ei": {"table3_methods": ["dynm"]}}, "ei.table3_methods lists 'dynm', which is not a key of ei.baselines"),
    ({"ei": {"insert_layer": 99}}, "ei.insert_layer: insert_layer 99 is outside 0..3"),
    ({"ei": {"int_layer": 5}}, "ei.int_layer: int_layer 5 is outside 1..4"),
    ({"ei": {"ablations": ["insert_layer-7"]}}, "ei.ablations entry 'insert_layer-7'"),
    ({"train": {"lr_min": 0.1}}, "train.lr_min (0.1) is above train.lr_max"),
    ({"downstream": {"train": {"lr_min": 0.1}}}, "downstream.train.lr_min (0.1) is above downstream.train.lr_max"),
    ({"seeds": [0, 1, 0]}, "seeds lists '0' 2 times"),
    ({"ei": {"datasets": ["synth_mm", "mrnet"]}}, "ei.datasets lists 'mrnet', which datasets does not"),
    ({"synthesis": {"generator_data": {"ratios": [0.05]}}},
     "synthesis.generator_data.ratios lists 0.05, which synthesis.ratios does not"),
    ({"synthesis": {"ratios": [0.05]}}, "synthesis.ratios lists 0.05, which splits.ratios does not"),
    ({"synthesis": {"ratios": [0.01, 0.01]}}, "synthesis.ratios lists '0.01' 2 times"),
    ({"synthesis": {"ratios": [0.01, 0.1, 1.0], "generator_data": {"ratios": [1.0]}}},
     "synthesis.generator_data.ratios lists 1.0: diffusion.train_subset already trains on it"),
    ({"synthesis": {"generator_data": {"variant": "vap_nopcm"}}},
     "synthesis.generator_data.variant 'vap_nopcm' is not in synthesis.generators"),
    ({"diffusion": {"variants": ["class", "vap"]}},
     "generation_metrics.generators lists 'vap_nopcm', which diffusion.variants (the generators trained) does not"),
]


@pytest.mark.parametrize(("patch", "message"), BAD_PARAMS)
def test_cross_key_errors_name_the_key(patch, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        check_params(deep_merge(base_params(), patch))


def test_override_file_is_merged_and_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ei: {table3_methods: [dynm]}\n")
    with pytest.raises(ParamsError, match=re.escape(f"params.yaml + {bad}: ei.table3_methods lists 'dynm'")):
        load_params(ROOT / "params.yaml", bad)


def test_no_params_lookups_outside_the_config_module():
    package = ROOT / "src" / "medrepro" / "config"
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "src").rglob("*.py")) if package not in p.parents
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"params\[\"", line)]
    assert not offenders, offenders


def test_environment_yml_installs_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.lock"]
    assert "python=3.11" in env["dependencies"]


def test_lock_holds_pyproject_pins():
    """Every exact pin of pyproject.toml (dependencies and extras) is the lock's version: a pin changed without
    `make lock` fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    locked = locked_pins(ROOT / "requirements.lock")
    pins = {name.lower(): version for name, version in (d.split("==") for d in deps if "==" in d)}
    assert {n: locked.get(n.replace("_", "-")) for n in pins} == pins
    for pin in ("torch", "torchvision", "dvc", "snakemake"):
        assert pin in pins


def test_installed_set_equals_the_lock():
    """The environment running the tests is exactly requirements.lock (make install installs it, nothing else)."""
    assert lock_differences(ROOT / "requirements.lock") == []


def test_lock_differences_name_each_mismatch(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nnumpy==2.4.6 \\\n    --hash=sha256:00\nnot-here==1.0 ; sys_platform == 'win32'\n"
                    "scipy==1.0\n")
    diff = lock_differences(lock, {"numpy": "2.4.5", "pandas": "3.0", "pip": "26.3", "medrepro": "0.1.0"})
    assert diff == ["numpy: installed 2.4.5, locked 2.4.6", "scipy: locked 1.0, not installed",
                    "pandas: installed 3.0, not in requirements.lock"]


def test_colocated_config_is_valid():
    cfg = load_config(ROOT / "params.yaml", ROOT / "config" / "experiments" / "colocated.yaml")
    assert cfg.dataset_options("synth_mm")["coupling"] == "colocated" and cfg.train.max_epochs == 60
    assert load_config(ROOT / "params.yaml").dataset_options("synth_mm")["coupling"] == "independent"
