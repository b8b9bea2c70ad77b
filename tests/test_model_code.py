"""What code a logged model carries (tracking/model_code.py): the modules its classes need, read
from their import statements, and a factory network's own package. Milliseconds, no MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

from expander_sweeps.models import build_model
from expander_sweeps.spec import load_spec
from expander_sweeps.tracking.model_code import (
    PACKAGE,
    code_sources,
    model_code_paths,
    package_modules,
)

REPO = Path(__file__).resolve().parents[1]


def _relative(paths) -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in paths}


def test_module_level_imports_are_followed_and_imports_inside_functions_are_not():
    # models.py imports cells and spec at module level, factories only inside a function.
    assert _relative(package_modules(frozenset({"expander_sweeps.models"}))) == {
        "__init__.py", "cells.py", "models.py", "spec.py"}
    # A module of a subpackage brings its package's __init__ and its relative imports.
    tracked = _relative(package_modules(frozenset({"expander_sweeps.tracking.base"})))
    assert {"__init__.py", "tracking/__init__.py", "tracking/base.py"} <= tracked
    assert "sweep.py" not in tracked


def test_the_built_in_model_carries_four_modules(tmp_path):
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml")
    model = build_model(spec.model, 28, 10, seed=0)
    (package,) = model_code_paths(code_sources(model), tmp_path)
    files = {p.relative_to(package).as_posix() for p in Path(package).rglob("*.py")}
    assert files == {"__init__.py", "cells.py", "models.py", "spec.py"}
    assert (Path(package) / "models.py").read_bytes() == (PACKAGE / "models.py").read_bytes()


def test_a_factory_model_carries_the_user_s_package_and_no_installed_library(tmp_path, monkeypatch):
    # This process may have imported a copy of the example from another test's folder (test
    # processes run several modules): import the repository's own, and leave the state as found.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p) / "byo_gru").is_dir()])
    for name in [m for m in sys.modules if m == "byo_gru" or m.startswith("byo_gru.")]:
        monkeypatch.delitem(sys.modules, name)
    spec = load_spec(REPO / "examples" / "byo_gru.yaml")
    model = build_model(spec.model, 6, 4, seed=0, spec_dir=spec.spec_dir)
    paths = [Path(p) for p in model_code_paths(code_sources(model), tmp_path)]
    assert paths[0] == tmp_path / "expander_sweeps"
    assert paths[1:] == [REPO / "examples" / "byo_gru"]  # the factory's package, not torch
