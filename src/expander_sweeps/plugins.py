"""The one door for plug-ins: everything a plug-in module imports to add a mask method, a graph
quantity, a tracker or a report section. Name the module under `plugins:` in the spec.

    from expander_sweeps.plugins import MaskMethod, register_mask_method
    from expander_sweeps.plugins import GraphQuantity, register_quantity
    from expander_sweeps.plugins import Backend, register_backend
    from expander_sweeps.plugins import ReportSection, register_section

The contracts and a tested example of each: docs/architecture.md.
"""

from __future__ import annotations

from .graphs.graph_measures import GraphQuantity, register_quantity, unregister_quantity
from .pruning.mask_methods import (
    MaskMethod,
    MaskRequest,
    mask_method,
    mask_method_names,
    register_mask_method,
    unregister_mask_method,
)
from .reporting.report_sections import ReportSection, register_section, unregister_section
from .tracking.backends import Backend, register_backend, unregister_backend
from .tracking.base import TrialRecord

__all__ = ["MaskMethod", "MaskRequest", "register_mask_method", "unregister_mask_method", "mask_method",
           "mask_method_names", "GraphQuantity", "register_quantity", "unregister_quantity", "Backend",
           "register_backend", "unregister_backend", "TrialRecord", "ReportSection", "register_section",
           "unregister_section"]
