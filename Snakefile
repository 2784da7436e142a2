# medrepro — Snakemake driver of the pipeline defined in dvc.yaml (DESIGN.md, Orchestration).
# Usage: snakemake --cores 4 results/table3.csv [--configfile config/paper.yaml] [--profile workflow/profiles/slurm]
import os

import yaml
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


validate(config, "workflow/schemas/params.schema.yaml", set_default=False)


include: "workflow/rules/dvc_stages.smk"


localrules: all


rule all:
    default_target: True
    input:
        "results/table3.csv",
