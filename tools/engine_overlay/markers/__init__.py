"""Marked blocks: grammar → snapshot → compare → waivers; transplant = 3-way merge + compare.

The entry points other modules use are re-exported here, imported on first use
(PEP 562): reading VERSIONS.toml needs only the grammar, and a short `overlay
apply` should not pay for the checker, the waivers' TOML writer and transplant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "check_markers": ".check", "verify_tree": ".check", "MarkerConfig": ".grammar",
    "MarkerReport": ".report", "Snapshot": ".snapshot", "read_snapshot": ".snapshot",
    "take_snapshot": ".snapshot", "TransplantReport": ".transplant", "transplant": ".transplant",
}

if TYPE_CHECKING:
    from .check import check_markers, verify_tree
    from .grammar import MarkerConfig
    from .report import MarkerReport
    from .snapshot import Snapshot, read_snapshot, take_snapshot
    from .transplant import TransplantReport, transplant


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "MarkerConfig", "MarkerReport", "Snapshot", "TransplantReport",
    "check_markers", "read_snapshot", "take_snapshot", "transplant", "verify_tree",
]
