"""`make run` after a killed run: the stale lock goes when nothing holds it, incomplete outputs are made again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, run, tool_env

from medrepro import recover

pytestmark = pytest.mark.e2e

SNAKEFILE = """rule out:
    output: "out.txt"
    shell: "echo partial > {output}; touch started; sleep ${{MEDREPRO_TEST_SLEEP:-0}}; echo done > {output}"
"""


def wait_for(path: Path, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.1)


def killed_run(root: Path) -> None:
    """A Snakemake run killed with SIGKILL (its whole process group) while its job is writing out.txt."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Snakefile").write_text(SNAKEFILE)
    env = {**tool_env(), "MEDREPRO_TEST_SLEEP": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "out.txt"], cwd=root, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(root / "started")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_make_run_recovers_from_a_killed_run(tmp_path):
    assert "\tpython -m medrepro.recover --cores $(CORES) results/table3.csv" in (ROOT / "Makefile").read_text()
    root = tmp_path / "proj"
    killed_run(root)
    assert recover.lock_files(root) and list((root / ".snakemake" / "incomplete").iterdir())
    assert (root / "out.txt").read_text() == "partial\n"
    # a live process that may hold the lock: it stays, and the check says why
    holder = root / "bin" / "snakemake"
    holder.parent.mkdir()
    # one process that never forks (a shell script's child would carry the script's command line until its exec)
    holder.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    holder.chmod(0o755)
    fake = subprocess.Popen([str(holder)], cwd=root, start_new_session=True)
    try:
        end = time.monotonic() + 10
        while not recover.holders(root) and time.monotonic() < end:  # until the fake has started
            time.sleep(0.05)
        assert [pid for pid, _ in recover.holders(root)] == [fake.pid]
        res = run([sys.executable, "-m", "medrepro.recover"], root)
        assert "left in place" in res.stderr and f"pid {fake.pid}" in res.stderr and recover.lock_files(root)
    finally:
        os.killpg(fake.pid, signal.SIGKILL)
        fake.wait()
    assert recover.holders(root) == []
    # the command `make run` runs: unlock, rerun the incomplete job, done
    res = run([sys.executable, "-m", "medrepro.recover", "--cores", "1", "out.txt"], root)
    assert "removing the stale Snakemake lock" in res.stderr
    assert (root / "out.txt").read_text() == "done\n" and not recover.lock_files(root)
    assert not list((root / ".snakemake" / "incomplete").iterdir())


def test_without_a_process_list_the_one_command_is_printed(tmp_path, capsys, monkeypatch):
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x\n")
    assert recover.holders(tmp_path, proc=tmp_path / "no-proc") is None
    monkeypatch.setattr(recover, "holders", lambda root: None)
    assert recover.recover(tmp_path, ["snakemake"]) is False
    assert "\n    snakemake --unlock\n" in capsys.readouterr().err


@pytest.mark.parametrize(("cmd", "holds"), [
    ("/work/.venv/bin/python /work/.venv/bin/snakemake --cores 4 results/table3.csv", True),
    ("python -m snakemake --cores 4 --rerun-incomplete results/table3.csv", True),
    ("/usr/bin/bash -c set -euo pipefail;  python -m medrepro.stages.caption --dataset synth_mm --threads 1", True),
    ("python -m medrepro.stages.train_diffusion --dataset synth_mm", True),
    ("make run", False),
    ("python -m medrepro.recover --cores 4 results/table3.csv", False),
    ("python -m pytest -p no:xdist tests/test_pipeline.py", False),
    ("vim docs/snakemake-notes.md", False),
])
def test_which_processes_may_hold_the_lock(cmd, holds):
    assert bool(recover.HOLDER.search(cmd)) is holds
