"""The same DAG on a real SLURM cluster: workflow/cluster/local-slurm.sh brings up a single-node cluster on this
machine and the slurm profile's executor plugin submits every rule as a job. `make test-cluster` (needs root,
Debian's slurm-wlm and munge; the SLURM executor plugin comes with the lock); not part of `make test`."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from helpers import ROOT, TINY, make_project, run

from medrepro.config import deep_merge

pytestmark = pytest.mark.cluster
SCRIPT = ROOT / "workflow" / "cluster" / "local-slurm.sh"
CONF = "/tmp/medrepro-slurm/etc/slurm.conf"
#: the cluster run: TINY on the CPU (a job asks for no GPU), as the local run it is compared with
CLUSTER = deep_merge(TINY, {"device": "cpu"})


@pytest.fixture(scope="module")
def cluster():
    run([str(SCRIPT), "up"], ROOT)
    os.environ["SLURM_CONF"] = CONF
    yield
    run([str(SCRIPT), "down"], ROOT)


def _snakemake(project, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["snakemake", "--profile", "workflow/profiles/slurm", "--cores", "2", *args], project, check=check)


def _jobs(run_id: str) -> list[str]:
    """States of the cluster's finished jobs of one Snakemake run (job-completion records)."""
    out = subprocess.run(["sacct", "--completion", "-n", "-P", "-o", "JobName,State"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split("|")[1] for line in out.splitlines() if line.startswith(run_id)]


def _run_id(output: str) -> str:
    return re.search(r"SLURM run ID: (\S+)", output).group(1)


def test_table3_on_slurm_equals_the_local_run(cluster, tmp_path):
    local = make_project(tmp_path / "local", CLUSTER)
    run(["snakemake", "--cores", "2", "results/table3.csv"], local)
    project = make_project(tmp_path / "proj", CLUSTER)
    res = _snakemake(project, "results/table3.csv")
    out = res.stdout + res.stderr
    assert (project / "results/table3.csv").read_bytes() == (local / "results/table3.csv").read_bytes()
    submitted = len(re.findall(r"has been submitted with SLURM jobid", out))
    rules = len(re.findall(r"^(?:local)?rule \S+:", out, flags=re.M)) - out.count("localrule all:")
    assert submitted == rules > 10  # one job per rule; `all` stays on the submit host
    assert _jobs(_run_id(out)) == ["COMPLETED"] * submitted
    assert "Nothing to be done" in run(["snakemake", "-n", "results/table3.csv"], project).stdout
    assert "up to date" in run(["dvc", "status", "table3", "--with-deps"], project).stdout  # onsuccess: dvc commit


def test_a_cancelled_job_is_resubmitted_and_resumes_from_its_checkpoint(cluster, tmp_path):
    longer = {"downstream": {"train": {"max_epochs": 60, "patience": 60}}}  # time to cancel it mid-training
    project = make_project(tmp_path / "proj", deep_merge(CLUSTER, longer))
    target = "results/predictions/downstream/synth_mm/densenet121/real/ratio_1.0.parquet"
    ckpt = project / "models/checkpoints/downstream/synth_mm/densenet121/real/ratio_1.0"
    proc = subprocess.Popen(["snakemake", "--profile", "workflow/profiles/slurm", "--cores", "2", target],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not (ckpt.is_dir() and any(ckpt.iterdir())):  # the training job has written its first checkpoint
        assert time.time() < deadline and proc.poll() is None, "no checkpoint appeared"
        time.sleep(2)
    jobs = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout.split()
    subprocess.run(["scancel", jobs[0]], check=True)  # the downstream job, mid-training
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    log = (project / "logs/downstream__synth_mm_densenet121_1p0.log").read_text()
    assert "resumed from epoch" in log  # the resubmitted job continued from the checkpoint
    assert (project / target).is_file()


def test_a_job_asking_more_memory_than_the_node_has_fails_with_slurms_message(cluster, tmp_path):
    project = make_project(tmp_path / "proj", CLUSTER)
    t0 = time.time()
    res = _snakemake(project, "data/raw/synth_mm/fetch.json", "--set-resources", "fetch__synth_mm:mem_mb=100000000",
                     check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and time.time() - t0 < 300  # an error, not a hang
    assert "Memory specification can not be satisfied" in out or "Requested node configuration" in out, out[-3000:]
