"""Where a bound stops being positive: the crossing of a curve of bound values over kept
fractions, its status, and the one wording of that status every output uses (the terminal, the
report's tables, `compare`). Analysis only: numbers in, a `Crossing` out, no frames, no rendering."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["CrossingStatus", "Crossing", "find_crossing", "crossing_text"]


class CrossingStatus(str, Enum):
    """How a bound's curve behaves from dense to sparse. The values are what crossings.csv/json
    store (a str Enum: it compares equal to them, and reads back from them)."""

    CROSSED = "crossed"  # positive, then <= 0 at some kept fraction
    NEVER = "never"  # positive at every defined point
    NEGATIVE_AT_START = "negative_at_start"  # <= 0 already at the densest point: predicts nothing
    NO_DATA = "no_data"  # undefined at every point

    def __str__(self) -> str:  # in f-strings and CSV cells: the stored value, not the member name
        return self.value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def crossing_text(row: Mapping[str, Any], prefix: str = "") -> str:
    """A crossing in its one short wording, from a crossings row (`status`, `crossing_pct`,
    `lower_pct`, `stays_negative_from_pct`) or a claim row (`prefix="bound_"`):
    "12.34%", with "(positive again below; stays negative from 5%)" or "(positive again below,
    never stays negative)" when the curve turns positive again further down; "never (to 1%)";
    "never positive"; "undefined"."""
    status = CrossingStatus(row[f"{prefix}status"])
    if status == CrossingStatus.NEVER:
        lower = row.get("lower_pct")
        return "never" if _missing(lower) else f"never (to {lower:.3g}%)"
    if status == CrossingStatus.NEGATIVE_AT_START:
        return "never positive"
    if status == CrossingStatus.NO_DATA:
        return "undefined"
    pct = row[f"{prefix}crossing_pct"]
    text = f"{pct:.2f}%"
    stays_key = f"{prefix}stays_negative_from_pct"
    if stays_key in row:  # rows without the column say nothing about what follows
        stays, lower = row[stays_key], row.get("lower_pct")
        if _missing(stays):
            text += " (positive again below, never stays negative)"
        elif not _missing(lower) and not math.isclose(stays, lower):
            text += f" (positive again below; stays negative from {stays:.3g}%)"
    return text


@dataclass(frozen=True)
class Crossing:
    """Where a bound first stops being positive as the remaining fraction decreases."""

    status: CrossingStatus
    remaining: float | None  # interpolated remaining fraction of the first crossing
    upper: float | None  # last grid point (from dense down) where the bound was > 0
    lower: float | None  # first grid point where it was <= 0
    # The densest point from which the bound is <= 0 at every sparser point (non-monotone
    # curves exist: a disconnected graph's bound can turn positive again); None if never.
    stays_negative: float | None = None
    undefined: tuple[float, ...] = ()  # points where the bound was undefined at every seed

    def describe(self) -> str:
        """The long form (the report's crossing table): the status in its one wording, with where."""
        if self.status == CrossingStatus.CROSSED:
            text = f"{100 * self.remaining:.2f}% (between {100 * self.lower:g}% and {100 * self.upper:g}%)"
        elif self.status == CrossingStatus.NEVER:
            text = f"never (positive down to {100 * self.lower:g}%)" if self.lower else "never"
        elif self.status == CrossingStatus.NEGATIVE_AT_START:
            text = f"never positive (already negative at {100 * self.lower:g}%, the densest point): predicts nothing"
        else:
            text = "undefined at every point"
        if self.status in (CrossingStatus.CROSSED, CrossingStatus.NEGATIVE_AT_START) and self.stays_negative != self.lower:
            text += ("; positive again further down, never stays negative" if self.stays_negative is None
                     else f"; stays negative only from {100 * self.stays_negative:g}%")
        if self.undefined:
            text += "; undefined (degenerate graph) at " + ", ".join(f"{100 * r:g}%" for r in self.undefined)
        return text


def _point_value(values: list[float]) -> float:
    """One value per fraction from its seeds: +inf only when every seed is unbounded (a dense
    layer), otherwise the mean of the finite ones, so one unbounded seed never hides the rest."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.inf
    return float(np.mean(finite))


def find_crossing(remaining: Sequence[float], values: Sequence[float]) -> Crossing:
    """First remaining fraction (walking from dense to sparse) where `values` stops being > 0.

    Several values at one fraction (seeds) are combined by `_point_value`; NaN (undefined)
    values are left out, and a fraction where every seed is undefined is listed, never used.
    Between the last positive grid point and the first non-positive one the crossing is
    interpolated linearly in log(fraction), the axis the figures draw; from +inf (a dense
    layer) the interpolation's limit is the non-positive point itself.
    """
    by_fraction: dict[float, list[float]] = {}
    seen: set[float] = set()
    for r, v in zip(remaining, values, strict=True):
        seen.add(float(r))
        if v is None or math.isnan(float(v)):
            continue
        by_fraction.setdefault(float(r), []).append(float(v))
    undefined = tuple(sorted(seen - set(by_fraction), reverse=True))
    if not by_fraction:
        return Crossing(CrossingStatus.NO_DATA, None, None, None, None, undefined)
    points = sorted(((r, _point_value(vs)) for r, vs in by_fraction.items()), reverse=True)
    stays: float | None = None
    for r, v in reversed(points):  # from the sparsest point up, while the bound is <= 0
        if v > 0:
            break
        stays = r
    previous: tuple[float, float] | None = None
    for r, v in points:
        if v <= 0:
            if previous is None:
                return Crossing(CrossingStatus.NEGATIVE_AT_START, None, None, r, stays, undefined)
            r0, v0 = previous
            if math.isinf(v0):
                estimate = r
            else:
                # v is linear in log(r) between the two points: solve for the zero.
                estimate = math.exp(math.log(r0) + (math.log(r) - math.log(r0)) * v0 / (v0 - v))
            return Crossing(CrossingStatus.CROSSED, estimate, r0, r, stays, undefined)
        previous = (r, v)
    return Crossing(CrossingStatus.NEVER, None, points[0][0], points[-1][0], None, undefined)
