"""Report sections as plug-ins: Markdown a plug-in adds to every report, after the built-in sections.

    from expander_sweeps.plugins import ReportSection, register_section

    def kept_edges(spec, trials, crossings):     # pandas frames: trials.csv's rows, crossings.csv's rows
        return ["## Kept edges", "", *(f"- trial {n}: {k:.3f}" for n, k in zip(trials.trial, trials["W_hh/kept_fraction"])), ""]

    register_section(ReportSection("kept_edges", kept_edges))

The lines land in report.md, and through it in report.html (which renders report.md) and on the
trackers that receive the report. Standard library only at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry

__all__ = ["ReportSection", "register_section", "unregister_section", "section_names", "render_sections"]


@dataclass(frozen=True)
class ReportSection:
    """name: an identifier (errors name it); render: (spec, trials frame, crossings frame) ->
    Markdown lines, headed by its own `## ...` line."""

    name: str
    render: Callable[[Any, Any, Any], list[str]]


_REGISTRY: Registry[ReportSection] = Registry("report section", "errors and the docs name it")


def register_section(section: ReportSection, replace: bool = False) -> ReportSection:
    return _REGISTRY.add(section.name, section, replace)


def unregister_section(name: str) -> None:
    _REGISTRY.remove(name)


def section_names() -> tuple[str, ...]:
    return _REGISTRY.names()


def render_sections(spec: Any, trials: Any, crossings: Any) -> list[str]:
    """Every registered section's lines, in registration order. A section that raises leaves the
    rest of the report intact and says so where it would have been (never silently missing)."""
    lines: list[str] = []
    for section in _REGISTRY.items():
        try:
            rendered = [str(line) for line in section.render(spec, trials, crossings)]
        except Exception as err:
            rendered = [f"## Report section `{section.name}`", "",
                        f"**This plug-in section failed and is missing:** {type(err).__name__}: {err}"]
        lines += rendered + [""]
    return lines
