"""params.yaml validation and install metadata: pins agree, config/paper.yaml is valid, errors name the key."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from conftest import ROOT

from medrepro.errors import ParamsError
from medrepro.params import deep_merge, load_params, validate


def test_params_yaml_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params["datasets"] == ["synth_mm"]


def test_paper_overrides_are_valid_and_replace_embedded_architectures():
    params = load_params(ROOT / "params.yaml", ROOT / "config" / "paper.yaml")
    dense = params["downstream"]["models"]["densenet121"]
    assert dense["pretrained"] is True and dense["kwargs"] == {"growth_rate": 32, "block_config": [6, 12, 24, 16]}
    assert params["ei"]["vfm"]["kwargs"] == {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12}
    assert params["ei"]["vfm_source"] == "given" and set(params["ei"]["datasets"]) <= set(params["datasets"])


@pytest.mark.parametrize(("patch", "key"), [
    ({"train": {"lr_maxx": 1.0}}, "train.lr_maxx"),
    ({"train": {"lr_max": "fast"}}, "train.lr_max"),
    ({"splits": {"ratios": [0.0]}}, "splits.ratios.0"),
    ({"datasets": ["imagenet"]}, "datasets.0"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_params_name_the_key(patch, key):
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), patch)
    with pytest.raises(ParamsError, match=re.escape(key)):
        validate(params)


def test_environment_yml_pins_equal_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(deps) <= set(pip)
    assert "python=3.11" in env["dependencies"]
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "dvc==3.67.1", "snakemake==9.27.1"):
        assert pin in deps


def test_colocated_config_is_valid():
    params = load_params(ROOT / "params.yaml", ROOT / "config" / "colocated.yaml")
    assert params["data"]["synth_mm"]["coupling"] == "colocated" and params["train"]["max_epochs"] == 60
    assert load_params(ROOT / "params.yaml")["data"]["synth_mm"]["coupling"] == "independent"
