"""Runs last (file order): the suite as a whole injected enough faults and lost nothing."""


def test_enough_faults_and_no_data_lost(ledger):
    trials, faults, _recovered, lost = ledger.totals()
    if trials < 100:  # a subset was selected (-k / single file): nothing to judge
        return
    assert faults >= 200, f"only {faults} faults injected"
    assert lost == 0
