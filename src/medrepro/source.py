"""The package's own source: which of its files a module runs (its import closure) and their digest.

The closure follows every ``import medrepro…`` / ``from medrepro… import`` of a module, at the top or inside a
function (a lazy import is a dependency too), read from the source text without importing anything. A stage's
``deps`` in dvc.yaml must cover the closure of its module (tested), and a kept generator run is keyed by the
digest of its stage's closure (``medrepro.vap.units``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

import medrepro

ROOT = Path(medrepro.__file__).parent
PACKAGE = "medrepro"


def module_file(module: str) -> Path | None:
    """The file of ``medrepro.x.y`` (a module or a package's ``__init__``), None if it is not in the package."""
    if module == PACKAGE:
        return ROOT / "__init__.py"
    if not module.startswith(PACKAGE + "."):
        return None
    rel = Path(*module.split(".")[1:])
    for path in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports_of(path: Path) -> set[str]:
    """The medrepro modules (and `from medrepro.x import name` targets) that the file at ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    return found


@functools.cache
def closure(module: str) -> tuple[Path, ...]:
    """Every file of the package that ``module`` runs: itself, what it imports, and so on (sorted)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(2, len(parts) + 1):  # importing a.b.c runs the __init__ of a.b too
            path = module_file(".".join(parts[:k]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imports_of(path))
    return tuple(sorted(seen))


def digest(files: tuple[Path, ...]) -> str:
    """sha256 of ``files`` (paths relative to the package, and bytes)."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
