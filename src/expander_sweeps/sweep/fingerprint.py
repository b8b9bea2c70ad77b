"""What a study's trials were run with, so that a changed spec never reuses old results.

A spec's fields fall in three groups:
- result settings: every field that changes what a trial computes (data, model, training,
  masks, noise, spectra). They are stored with the study when it is created, and a spec whose
  settings differ is refused: its trials would be different experiments under one name.
- the search space: the points a sweep visits (remaining fractions, mask methods, seeds).
  A finished point is valid in a bigger space, so the space may grow with an explicit
  `--extend`; it is stored too, so a changed space is never taken silently.
- the rest (study sampler and storage, trackers, report options, run folder, data.root,
  download, device, evaluation batch size, engine, group size, opt-in measures) changes where or how results are kept and shown,
  or only the speed, never a trial's numbers. data.root may differ between machines of one
  study.

Only the spec: no torch, no Optuna.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..spec import SweepSpec

__all__ = ["SpecMismatch", "result_settings", "search_space", "fingerprint_of", "differences", "mismatch_message"]

# Sections whose fields are result settings, and the fields of them that are not.
_RESULT_SECTIONS = ("data", "model", "training", "masks", "noise", "spectral")
# spectral.measures adds opt-in numbers beside the others and changes none of them.
_NOT_RESULTS = {"data.root", "data.download", "training.device", "training.eval_batch_size",
                "training.engine", "training.group_size", "spectral.measures"}
_SEARCH_SPACE = ("masks.remaining", "masks.method", "training.seed")


class SpecMismatch(ValueError):
    """The spec's settings differ from those the study's trials were run with."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: tree}


def _fields(spec: SweepSpec) -> dict[str, Any]:
    dumped = spec.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for section in _RESULT_SECTIONS:
        # A list-valued field is one setting (its own dotted name), not one setting per element.
        for key, value in dumped[section].items():
            flat[f"{section}.{key}"] = value
    return flat


def result_settings(spec: SweepSpec) -> dict[str, Any]:
    """Every result-affecting field of the spec that is not a search-space dimension."""
    return {k: v for k, v in _fields(spec).items() if k not in _NOT_RESULTS and k not in _SEARCH_SPACE}


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """The spec's search-space fields, as stored with the study."""
    fields = _fields(spec)
    return {k: fields[k] for k in _SEARCH_SPACE}


def fingerprint_of(settings: dict[str, Any]) -> str:
    """A short hash of settings (stored on every trial, so a trial can be matched to its study)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per field whose value differs: `model.hidden: study 128, spec 64`."""
    lines = []
    for key in sorted(set(stored) | set(current)):
        before, now = stored.get(key, "(absent)"), current.get(key, "(absent)")
        if before != now:
            lines.append(f"{key}: study {_show(before)}, spec {_show(now)}")
    return lines


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def mismatch_message(name: str, what: str, lines: list[str], extendable: bool) -> str:
    """The refusal: what differs, and the ways out."""
    ways = ("give the changed spec a new `name` (or `run_dir`/`study.storage`) to start a new study, "
            "or go back to the study's values")
    if extendable:
        ways += ", or pass --extend to add the new points to this study (finished points are kept)"
    shown = lines[:12] + ([f"... and {len(lines) - 12} more"] if len(lines) > 12 else [])
    return (f"the spec's {what} differ from those study '{name}' was run with:\n"
            + "\n".join(f"  - {line}" for line in shown) + f"\nTo go on: {ways}.")
