# One Snakemake rule per resolved dvc.yaml stage (medrepro.dvc_bridge does the resolving).
import json

from medrepro.config import OVERRIDE_ENV, read_yaml
from medrepro.dvc_bridge import (
    commit_stages_that_ran,
    is_dir_output,
    report_item,
    resolve_stages,
    rule_priority,
    rule_resources,
    shell_template,
)

_base = read_yaml(Path("params.yaml"))
if dict(config) != _base:
    # --configfile / --config overrides: stage commands read the same merged values via this file.
    _override = Path(".snakemake/medrepro/params.override.yaml")
    _override.parent.mkdir(parents=True, exist_ok=True)
    _override.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    os.environ[OVERRIDE_ENV] = str(_override.resolve())
    STAGES = resolve_stages(".", dict(config))
else:
    STAGES = resolve_stages(".")

# A stage that succeeds leaves a marker here; onsuccess commits exactly those stages to dvc.lock. Override runs
# leave none: their outputs do not match params.yaml, so DVC must keep seeing them as changed.
RAN_DIR = Path(".snakemake/medrepro/ran")
_BASE_RUN = os.environ.get(OVERRIDE_ENV) is None

for _st in STAGES:

    rule:
        name:
            _st.rule
        input:
            _st.deps,
        output:
            [
                (
                    directory(o)
                    if is_dir_output(o)
                    else (report(o, **report_item(o)) if report_item(o) else o)
                )
                for o in _st.outs
            ],
        params:
            cmd=_st.cmd,
            values=json.dumps(_st.params, sort_keys=True),
            ran_dir=str(RAN_DIR),
            rule=_st.rule,
        log:
            f"logs/{_st.rule}.log",
        threads: int(_st.meta.get("threads", 1))
        priority: rule_priority(_st.meta)
        resources:
            **rule_resources(_st.meta, config.get("device")),
        conda:
            "../../environment.yml"
        shell:
            shell_template(_st.meta, mark_done=_BASE_RUN)


onsuccess:
    # DVC would otherwise see every stage Snakemake ran as changed: record them in dvc.lock, keeping the outputs'
    # mtimes so that Snakemake stays up to date too. Only the stages this and earlier unrecorded runs completed;
    # nothing after override runs (DVC cannot see their values).
    if _BASE_RUN:
        commit_stages_that_ran(STAGES, RAN_DIR)
