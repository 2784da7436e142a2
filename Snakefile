# medrepro — Snakemake driver of the pipeline defined in dvc.yaml.
# Usage: snakemake --cores 4 results/table3.csv [--configfile config/paper.yaml] [--profile workflow/profiles/slurm]
import os
import sys

import yaml
from snakemake.utils import min_version

from medrepro.config import check_params, read_yaml
from medrepro.errors import ParamsError

min_version("9.0")


configfile: "params.yaml"


# workflow/schemas/params.schema.yaml, then the cross-key and range checks every stage also runs on startup
# (medrepro.config): a bad value stops here, before any rule exists, with one line naming the key.
try:
    check_params(
        dict(config),
        (
            "params.yaml"
            if dict(config) == read_yaml(Path("params.yaml"))
            else "params.yaml + --configfile/--config"
        ),
    )
except ParamsError as _exc:
    sys.exit(f"medrepro: error: {_exc}")


report: "workflow/report/workflow.rst"


include: "workflow/rules/dvc_stages.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        "results/table3.csv",
