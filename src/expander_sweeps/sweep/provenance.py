"""Where a result came from: the package version, the git commit of its source (when it runs
from a checkout), the fingerprint of the spec's result settings and of the training data.
Every trial records them as parameters, so the Optuna study, MLflow and W&B all carry them."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..spec import SweepSpec
from .fingerprint import fingerprint_of, result_settings

__all__ = ["provenance", "code_version", "git_commit"]


def code_version() -> str:
    try:
        return version("expander-sweeps")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "unknown"


@cache
def git_commit() -> str:
    """The commit of the package's source, with `+dirty` when it has uncommitted changes, or
    `unknown` outside a git checkout (an installed wheel)."""
    source = Path(__file__).resolve().parents[1]  # the whole package (this file is in sweep/)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=source, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(spec: SweepSpec, data_fingerprint: str) -> dict[str, str]:
    return {
        "code_version": code_version(),
        "git_commit": git_commit(),
        "settings_fingerprint": fingerprint_of(result_settings(spec)),
        "data_fingerprint": data_fingerprint,
    }
