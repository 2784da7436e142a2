"""Downloads with resume and checksum verification; manual-placement checks for gated datasets."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medrepro.data.registry import DatasetAdapter, RemoteFile
from medrepro.errors import DataError, ManualDownloadError
from medrepro.progress import progress_disabled

CHUNK = 1 << 20


def file_digest(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, sha256: str | None = None, md5: str | None = None) -> str:
    """Check published checksums; return the observed sha256. Raises DataError naming the file on mismatch."""
    observed = file_digest(path, "sha256")
    if sha256 and observed != sha256.lower():
        raise DataError(f"sha256 mismatch for {path}: expected {sha256}, got {observed} (delete it and fetch again)")
    if md5:
        got = file_digest(path, "md5")
        if got != md5.lower():
            raise DataError(f"md5 mismatch for {path}: expected {md5}, got {got} (delete it and fetch again)")
    return observed


def download(url: str, dest: Path, sha256: str | None = None, md5: str | None = None, timeout: float = 60) -> str:
    """Download ``url`` to ``dest``, resuming a previous ``dest.part``; verify and return the sha256.

    The final file appears only after the checksum matched; a mismatching download is deleted.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the partial file is already complete
            resp = None
        else:
            raise DataError(f"download failed for {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"download failed for {url}: {exc}") from exc
    if resp is not None:
        with resp:
            resumed = start and resp.status == 206
            mode = "ab" if resumed else "wb"
            total = resp.headers.get("Content-Length")
            total_n = int(total) + (start if resumed else 0) if total else None
            with open(part, mode) as fh, tqdm(
                total=total_n, initial=start if resumed else 0, unit="B", unit_scale=True,
                desc=dest.name, disable=progress_disabled(),
            ) as bar:
                try:
                    for chunk in iter(lambda: resp.read(CHUNK), b""):
                        fh.write(chunk)
                        bar.update(len(chunk))
                except OSError as exc:
                    raise DataError(f"download of {url} interrupted ({exc}); rerun fetch to resume") from exc
        got = part.stat().st_size
        if total_n is not None and got != total_n:  # a dropped connection must not pass as a complete file
            raise DataError(f"download of {url} incomplete: {got} of {total_n} bytes in {part}; rerun fetch to resume")
    try:
        observed = verify(part, sha256, md5)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return observed


def fetch_dataset(adapter: DatasetAdapter, raw_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Make every raw file of ``adapter`` present and verified under ``raw_dir``; return the fetch record."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    name = adapter.info.name
    files = adapter.remote_files()
    if not files:  # synthetic: generated locally
        adapter.generate(raw_dir, seed)
        files = [RemoteFile(p.name) for p in sorted(raw_dir.iterdir()) if p.is_file() and p.name != "fetch.json"]
    record: dict[str, Any] = {"dataset": name, "files": {}}
    for rf in files:
        path = raw_dir / rf.filename
        if path.exists():
            sha = verify(path, rf.sha256, rf.md5)
        elif rf.url:
            sha = download(rf.url, path, rf.sha256, rf.md5)
        elif rf.optional:
            continue
        else:
            where = f" from {rf.page}" if rf.page else ""
            raise ManualDownloadError(
                f"{name}: {rf.filename} must be downloaded by hand{where} and placed at {path} "
                f"(folder {raw_dir}/), then rerun fetch"
            )
        record["files"][rf.filename] = {"sha256": sha, "bytes": path.stat().st_size, "url": rf.url}
    return record
