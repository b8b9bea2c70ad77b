"""The code a pickled model needs, to travel with it (MLflow's `code_paths`).

A model logged in the pickle format unpickles only where its classes can be imported. No
index has this package, so each logged model carries the modules its classes come from: not
the whole package (40 files, one upload each to a tracking server, about 0.5 s a trial), but
the modules of the model's own classes and what they import at module level, found by reading
their import statements. Imports inside functions (building a model from a factory, say) are
not followed: unpickling and `forward` do not run them. A `model.factory` network's top-level
module or package (the user's code, not an installed library) goes along whole: we do not know
its layout.
"""

from __future__ import annotations

import ast
import functools
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the tracker process copies the code without importing torch
    import torch

__all__ = ["model_code_paths", "code_sources", "package_modules"]

PACKAGE = Path(__file__).resolve().parents[1]  # src/expander_sweeps


def _module_file(name: str) -> Path | None:
    """The source file of `expander_sweeps.a.b` inside this package, or None."""
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_at_module_level(name: str, source: Path) -> set[str]:
    """Names of this package's modules that `source` (the module `name`) imports at module level."""
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import module`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {n for n in found if n.split(".")[0] == PACKAGE.name and _module_file(n) is not None}


@functools.lru_cache(maxsize=32)  # once per sweep: the source does not change under it
def package_modules(roots: frozenset[str]) -> frozenset[Path]:
    """The source files of `roots` (modules of this package), of what they import at module
    level, transitively, and of every package `__init__.py` on the way."""
    seen: set[str] = set()
    pending = set(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        pending.update(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        source = _module_file(name)
        if source is not None:
            pending.update(_imported_at_module_level(name, source) - seen)
    return frozenset(path for path in map(_module_file, seen) if path is not None)


def code_sources(model: torch.nn.Module) -> dict[str, list[str]]:
    """What `model`'s classes need to unpickle: `modules`, this package's modules they come from,
    and `user_code`, the files or folders of the top-level modules or packages of a
    `model.factory` network (the user's own code, not an installed library). Found where the
    model lives (its classes imported), so that another process can copy the code without it."""
    modules = {type(m).__module__ for m in model.modules()}
    user_code = []
    for top in sorted({m.split(".")[0] for m in modules} - {PACKAGE.name}):
        module = sys.modules.get(top)
        origin = Path(module.__file__) if module is not None and getattr(module, "__file__", None) else None
        # The user's own code only: an installed library (torch, ...) is a requirement, not code.
        if origin is not None and not {"site-packages", "dist-packages"} & set(origin.parts):
            user_code.append(str(origin.parent if origin.name == "__init__.py" else origin))
    return {"modules": sorted(m for m in modules if m.split(".")[0] == PACKAGE.name), "user_code": user_code}


def model_code_paths(sources: dict[str, list[str]], folder: Path) -> list[str]:
    """Folders to hand MLflow as `code_paths` (copied under the model's `code/`, put on sys.path
    when it is loaded), from `code_sources`: this package, cut down to what the model needs,
    written into `folder`; and the user's code of a `model.factory` model, where it is."""
    target = Path(folder) / PACKAGE.name
    for source in package_modules(frozenset(set(sources["modules"]) | {PACKAGE.name})):
        copy = target / source.relative_to(PACKAGE)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
    return [str(target), *sources["user_code"]]
