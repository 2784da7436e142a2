"""``make run``'s entry point: recover from a killed run, then run Snakemake (``python -m medrepro.recover ARGS``).

A Snakemake killed mid-run (``kill -9``, a power cut) leaves its lock under ``.snakemake/locks/`` and marks the
outputs of its running jobs incomplete; a plain rerun stops on either. Here the lock is removed (``snakemake
--unlock``) only when no process that could hold it is alive: a ``snakemake`` process or a job of this pipeline
(``medrepro.stages.*``) whose working directory is this folder. Snakemake then runs with ``--rerun-incomplete``:
the killed jobs run again (each stage writes its outputs atomically and resumes from its checkpoints). A lock
that a live process may hold is left alone (Snakemake itself decides whether it blocks the run). Where processes
cannot be listed (no ``/proc``), the one command to run is printed instead. Without ARGS only the lock is handled.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

#: a process that may hold this folder's Snakemake lock: Snakemake itself, or one of the pipeline's stage jobs
HOLDER = re.compile(r"(?:^|[\s/])snakemake(?:\s|$)|medrepro\.stages\.")


def lock_files(root: Path) -> list[Path]:
    """Snakemake's lock files in ``root`` (none after a run that ended by itself)."""
    folder = root / ".snakemake" / "locks"
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _ancestors(pid: int, proc: Path) -> set[int]:
    """``pid`` and its parents (the ``make``/shell that started this check is never a holder)."""
    out = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def holders(root: Path, proc: Path = Path("/proc")) -> list[tuple[int, str]] | None:
    """(pid, command line) of live processes that may hold ``root``'s lock; None where processes cannot be listed.

    A process whose command line matches ``HOLDER`` counts when its working directory is ``root`` or below it, or
    cannot be read (another user's: assumed to be here)."""
    if not (proc / "self").is_dir():
        return None
    root, mine, found = root.resolve(), _ancestors(os.getpid(), proc), []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # exited meanwhile
        if not cmd or not HOLDER.search(cmd):
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except FileNotFoundError:
            continue
        except OSError:
            cwd = root  # not ours to read: count it
        if cwd == root or root in cwd.parents:
            found.append((int(entry.name), cmd))
    return found


def recover(root: Path, snakemake: list[str]) -> bool:
    """Remove a stale lock left by a killed run; False (with the reason on stderr) where that is not known to be
    safe. ``snakemake`` is the command that runs Snakemake."""
    if not lock_files(root):
        return True
    live = holders(root)
    if live is None:
        print(f"medrepro: {root / '.snakemake' / 'locks'} holds a lock and this system cannot list the processes "
              f"that may hold it. If no other Snakemake run is using {root}, remove the stale lock of a killed run "
              f"with:\n    snakemake --unlock\nthen run the same command again.", file=sys.stderr)
        return False
    if live:
        pid, cmd = live[0]
        print(f"medrepro: the Snakemake lock in {root} is left in place: {len(live)} process(es) of a run may hold "
              f"it (e.g. pid {pid}: {cmd[:120]})", file=sys.stderr)
        return True
    print("medrepro: removing the stale Snakemake lock of a killed run (no Snakemake process is using this folder)",
          file=sys.stderr)
    done = subprocess.run([*snakemake, "--unlock"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        print(f"medrepro: `snakemake --unlock` failed in {root}:\n{done.stderr[-2000:]}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    snakemake = [sys.executable, "-m", "snakemake"]
    root = Path.cwd()
    if not recover(root, snakemake):
        return 1
    if not args:
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Snakemake replaces this process, so that Ctrl-C and kill reach it as they would a plain `snakemake` command
    os.execv(sys.executable, [*snakemake, "--rerun-incomplete", *args])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
