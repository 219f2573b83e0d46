"""Fault-injection suite: a ledger of trials, injected faults and recoveries, printed at the end.

Every trial asserts its invariants on the spot (target untouched, fully applied, or
recoverable with --abort/unapply; the user's own files intact; project files
parseable). A failed invariant is counted as data lost and fails the trial.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pytest


@dataclass
class Ledger:
    rows: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))

    def record(self, command: str, fault: str, injected: bool = True, recovered: bool = False,
               lost: bool = False) -> None:
        row = self.rows[(command, fault)]
        row[0] += 1
        row[1] += int(injected)
        row[2] += int(recovered)
        row[3] += int(lost)

    def totals(self) -> list[int]:
        return [sum(r[i] for r in self.rows.values()) for i in range(4)]


LEDGER = Ledger()


@pytest.fixture
def ledger() -> Ledger:
    return LEDGER


def pytest_terminal_summary(terminalreporter):
    if not LEDGER.rows:
        return
    write = terminalreporter.write_line
    write("")
    write(f"{'command':12} {'fault':34} {'trials':>6} {'faults':>6} {'recovered':>9} {'data lost':>9}")
    for (command, fault), (trials, faults, recovered, lost) in sorted(LEDGER.rows.items()):
        write(f"{command:12} {fault:34} {trials:>6} {faults:>6} {recovered:>9} {lost:>9}")
    trials, faults, recovered, lost = LEDGER.totals()
    write(f"{'total':12} {'':34} {trials:>6} {faults:>6} {recovered:>9} {lost:>9}")
