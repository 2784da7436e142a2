# One Snakemake rule per resolved dvc.yaml stage (medrepro.pipeline does the resolving).
import json

from medrepro.params import OVERRIDE_ENV, read_yaml
from medrepro.pipeline import dvc_commit_keeping_mtimes, is_dir_output, resolve_stages

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

for _st in STAGES:

    rule:
        name:
            _st.rule
        input:
            _st.deps,
        output:
            [directory(o) if is_dir_output(o) else o for o in _st.outs],
        params:
            cmd=_st.cmd,
            values=json.dumps(_st.params, sort_keys=True),
        log:
            f"logs/{_st.rule}.log",
        threads: int(_st.meta.get("threads", 1))
        resources:
            **_st.meta.get("resources", {}),
        conda:
            "../../environment.yml"
        shell:
            "{params.cmd} --threads {threads} > {log} 2>&1"


onsuccess:
    # DVC would otherwise see every stage Snakemake ran as changed: record them in dvc.lock (not for override runs,
    # whose values DVC cannot see), keeping the outputs' mtimes so that Snakemake stays up to date too.
    if os.environ.get(OVERRIDE_ENV) is None:
        dvc_commit_keeping_mtimes(STAGES)
