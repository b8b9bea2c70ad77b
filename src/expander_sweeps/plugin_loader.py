"""Loading the plug-ins a spec names: modules imported before the spec is checked, in every process.
(What a plug-in imports to register things is `expander_sweeps.plugins`.)

`plugins: [my_methods, lab.measures]` imports those modules (from the spec's folder first, then
the Python path) before the rest of the spec is validated, so the mask methods and graph
quantities they register (mask_methods.py, graph_measures.py) are known names in `masks.method`
and `report.bounds`. Worker processes load the spec from its file and import them again; the
tracker process receives the parent's Python path.
"""

from __future__ import annotations

import importlib

__all__ = ["import_plugins"]


def import_plugins(modules: list[str]) -> list[str]:
    """Import each module; raise ValueError (a spec error at `plugins`) saying which failed and why."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ValueError(f"cannot import plug-in module '{name}' ({err}); put it beside the spec or on the "
                             "Python path (pip install your package, or set PYTHONPATH)") from None
        except Exception as err:  # the plug-in raised while being imported (a duplicate name, say)
            raise ValueError(f"importing plug-in module '{name}' failed: {type(err).__name__}: {err}") from None
    return modules
