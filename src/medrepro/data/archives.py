"""Safe extraction of zip and tar archives with errors that name the archive."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from medrepro.errors import DataError


def extract(archive: Path, dest: Path) -> Path:
    """Extract a .zip, .tar, .tar.gz/.tgz or .gz-compressed tar into ``dest``; return ``dest``.

    A truncated or corrupt archive raises DataError naming it; members escaping ``dest`` are refused.
    """
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                root = dest.resolve()
                for member in zf.infolist():
                    target = (dest / member.filename).resolve()
                    if root not in target.parents and target != root:
                        raise DataError(f"refusing unsafe path {member.filename!r} in {archive}")
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
        else:
            raise DataError(f"not a zip or tar archive (truncated or wrong file?): {archive}")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"corrupt or truncated archive {archive}: {exc}") from exc
    return dest
