"""Compare two saved runs on the same test samples: each one's metric with its interval, and the seed-paired gap.

    python -m medrepro.compare A B [--metric mAUC] [--resamples 1000]

A and B are predictions files (``results/predictions/…/*.parquet``, written by every training stage), or
``REV:PATH`` for the file as committed at a git revision or in a DVC experiment (a name from ``dvc exp show``), so
two experiments of the same run compare as ``python -m medrepro.compare exp-a:results/…/x.parquet
exp-b:results/…/x.parquet``. Both must hold the same test samples and seeds. The intervals are percentile
bootstraps over test samples (``medrepro.report.bootstrap``); a gap whose interval holds 0 is "level".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from medrepro.errors import DataError, MedreproError
from medrepro.metrics.classification import METRICS
from medrepro.report.bootstrap import bootstrap_interval, paired_bootstrap_seeds
from medrepro.report.scores import seed_scores


def resolve(spec: str, workdir: Path) -> Path:
    """A predictions file: ``spec`` itself, or ``REV:PATH`` read from git (a revision or a DVC experiment)."""
    if Path(spec).is_file() or ":" not in spec:
        if not Path(spec).is_file():
            raise DataError(f"predictions file not found: {spec}")
        return Path(spec)
    rev, path = spec.split(":", 1)
    commit = _commit(rev)
    blob = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True)
    if blob.returncode != 0:
        raise DataError(f"{path} is not in {rev} ({commit[:12]}): {blob.stderr.decode().strip()}")
    out = workdir / f"{len(list(workdir.iterdir()))}.parquet"
    out.write_bytes(blob.stdout)
    return out


def _commit(rev: str) -> str:
    """The commit of a git revision, or of a DVC experiment by name (refs/exps/…/<name>)."""
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True,
                           text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
                          capture_output=True, text=True).stdout.split("\n")
    matches = [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == rev]
    if len(matches) != 1:
        raise DataError(f"{rev!r} is neither a git revision nor one DVC experiment name (`dvc exp show` lists them)")
    return matches[0]


def compare(a: Path, b: Path, metrics: list[str], resamples: int, level: float = 0.95) -> list[dict[str, Any]]:
    """Per metric: A and B (mean over seeds, interval) and A − B with its seed-paired interval."""
    y, scores_a, multilabel = seed_scores(a)
    y_b, scores_b, _ = seed_scores(b)
    if len(y) != len(y_b) or (y != y_b).any() or sorted(scores_a) != sorted(scores_b):
        raise DataError(f"{a} and {b} hold different test samples or seeds ({sorted(scores_a)} and "
                        f"{sorted(scores_b)}); a paired comparison needs the same")
    seeds = sorted(scores_a)
    sa, sb = [scores_a[s] for s in seeds], [scores_b[s] for s in seeds]
    rows = []
    for m in metrics:
        ia = bootstrap_interval(y, sa, m, multilabel, resamples, level)
        ib = bootstrap_interval(y, sb, m, multilabel, resamples, level)
        gap = paired_bootstrap_seeds(y, sa, sb, m, multilabel, resamples, level)
        verdict = "A above" if gap.low > 0 else "A below" if gap.high < 0 else "level"
        rows.append({"metric": m, "A": ia, "B": ib, "gap": gap, "verdict": verdict, "seeds": seeds, "n": len(y)})
    return rows


def render(rows: list[dict[str, Any]], level: float) -> str:
    pct = f"{level:.0%}"
    head = f"{'metric':<9} {'A':>24} {'B':>24} {'A − B':>27}  verdict"
    lines = [head]
    for r in rows:
        a, b, g = r["A"], r["B"], r["gap"]
        lines.append(f"{r['metric']:<9} {a.value:>7.4f} [{a.low:.4f}, {a.high:.4f}] {b.value:>7.4f} [{b.low:.4f}, "
                     f"{b.high:.4f}] {g.gap:>+8.4f} [{g.low:+.4f}, {g.high:+.4f}]  {r['verdict']}")
    first = rows[0]
    lines.append(f"{len(first['seeds'])} seed(s) {first['seeds']}, {first['n']} test samples; {pct} percentile "
                 f"intervals from {first['gap'].resamples} test-sample resamples, paired by sample and seed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrepro.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="predictions file, or REV:PATH (git revision or DVC experiment name)")
    parser.add_argument("b", help="the run to compare against, same form")
    parser.add_argument("--metric", action="append", choices=METRICS,
                        help="metric(s) to compare (repeatable; default: all)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            a, b = resolve(args.a, Path(tmp)), resolve(args.b, Path(tmp))
            rows = compare(a, b, args.metric or list(METRICS), args.resamples, args.level)
    except MedreproError as exc:
        print(f"medrepro compare: error: {exc}", file=sys.stderr)
        return 1
    print(f"A = {args.a}\nB = {args.b}")
    print(render(rows, args.level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
