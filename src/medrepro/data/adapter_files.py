"""File helpers for the real-dataset adapters: extracted folders, label files, case-insensitive lookup, paths.

Every helper raises :class:`~medrepro.errors.DataError` with a message naming the file at fault, so an
adapter can call them without wrapping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medrepro.errors import DataError


def walk_folders(top: Path, max_depth: int, enter: Callable[[Path], bool] = lambda _: True
                 ) -> Iterator[tuple[Path, int]]:
    """Folders under ``top`` (``top`` first, depth 0) breadth first in sorted order, with their depth; a folder is
    entered while its depth is below ``max_depth`` and ``enter(folder)`` holds. macOS resource forks
    (``__MACOSX``) are skipped."""
    queue: deque[tuple[Path, int]] = deque([(top, 0)])
    while queue:
        folder, depth = queue.popleft()
        yield folder, depth
        if depth < max_depth and (depth == 0 or enter(folder)):
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("__MACOSX"))
            queue.extend((c, depth + 1) for c in children)


def find_root(top: Path, marker: str, max_depth: int = 4) -> Path | None:
    """The shallowest folder under ``top`` (``top`` included) that contains the relative path ``marker``.

    Archives are often re-zipped with an extra wrapper folder (or without the expected one); searching for a
    known file such as ``meta/meta.csv`` makes adapters independent of that. Folders are visited breadth first
    in sorted order, so the result is deterministic.
    """
    return next((folder for folder, _ in walk_folders(top, max_depth) if (folder / marker).exists()), None)


def require_root(top: Path, marker: str, archive: Path | str, max_depth: int = 4) -> Path:
    """Like :func:`find_root`, but a missing marker raises DataError naming the archive and the marker."""
    root = find_root(top, marker, max_depth)
    if root is None:
        raise DataError(f"{archive}: expected a folder containing {marker!r} inside the archive; not found "
                        f"(wrong or incomplete archive?)")
    return root


def read_table(path: Path, required: Sequence[str | int] = (), **read_csv: Any) -> pd.DataFrame:
    """Read a CSV with pandas; a missing/unparsable file or a missing required column raises DataError.

    ``required`` holds column names, or positions for header-less files (``header=None``); the error names the
    file and the first missing column.
    """
    if not path.is_file():
        raise DataError(f"label file missing: {path}")
    try:
        df = pd.read_csv(path, **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot parse label file {path}: {exc}") from exc
    for col in required:
        if col not in df.columns:
            what = f"column {col + 1} (of a header-less file)" if isinstance(col, int) else f"column {col!r}"
            raise DataError(f"{path}: missing {what}")
    return df


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file; a missing file raises DataError naming it."""
    if not path.is_file():
        raise DataError(f"list file missing: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read list file {path}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


class FileIndex:
    """Case-insensitive lookup of the files under ``root`` (built lazily, once).

    Real archives mix extension cases (``NEL025.JPG`` next to ``Nel026.jpg``) while label files may spell them
    differently; on a case-sensitive file system the exact path is tried first, then this index.
    """

    def __init__(self, root: Path, suffixes: Iterable[str] | None = None) -> None:
        self.root = root
        self.suffixes = {s.lower() for s in suffixes} if suffixes is not None else None
        self._by_rel: dict[str, Path] | None = None
        self._by_stem: dict[str, list[Path]] | None = None

    def _build(self) -> None:
        self._by_rel, self._by_stem = {}, {}
        for p in sorted(self.root.rglob("*")):
            if not p.is_file() or (self.suffixes is not None and p.suffix.lower() not in self.suffixes):
                continue
            self._by_rel.setdefault(p.relative_to(self.root).as_posix().lower(), p)
            self._by_stem.setdefault(p.stem.lower(), []).append(p)

    def resolve(self, rel: str) -> Path | None:
        """The file at ``root/rel``, matching case-insensitively if the exact path does not exist."""
        exact = self.root / rel
        if exact.is_file():
            return exact
        if self._by_rel is None:
            self._build()
        assert self._by_rel is not None
        return self._by_rel.get(Path(rel).as_posix().lower().lstrip("/"))

    def by_stem(self, stem: str) -> list[Path]:
        """All files whose name without extension equals ``stem`` (case-insensitive), in sorted order."""
        if self._by_stem is None:
            self._build()
        assert self._by_stem is not None
        return self._by_stem.get(stem.lower(), [])


def manifest_path(files_dir: Path, path: Path) -> str:
    """``path`` (inside ``files_dir``) as the manifest stores it: relative to the dataset folder, POSIX."""
    return f"{files_dir.name}/{path.relative_to(files_dir).as_posix()}"


def image_paths(images: Iterable[str], folder: Path, files_dir: Path, label_file: Path, archive: Path) -> list[str]:
    """Manifest paths of ``<image>.jpg`` (or any image file of that stem) under ``folder``, in ``images`` order;
    an image that is missing is a DataError naming the label file and the archive (ISIC layouts)."""
    index = FileIndex(folder, suffixes={".jpg", ".jpeg", ".png"})
    paths = []
    for image in images:
        found = index.resolve(f"{image}.jpg") or next(iter(index.by_stem(image)), None)
        if found is None:
            raise DataError(f"{label_file}: image {image!r} not found in {archive}")
        paths.append(manifest_path(files_dir, found))
    return paths
