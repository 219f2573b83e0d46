"""Marked blocks: grammar → snapshot → compare → waivers; transplant = 3-way merge + compare.

The entry points other modules use are re-exported here.
"""

from .check import check_markers, verify_tree
from .grammar import MarkerConfig
from .report import MarkerReport
from .snapshot import Snapshot, read_snapshot, take_snapshot
from .transplant import TransplantReport, transplant

__all__ = [
    "MarkerConfig", "MarkerReport", "Snapshot", "TransplantReport",
    "check_markers", "read_snapshot", "take_snapshot", "transplant", "verify_tree",
]
