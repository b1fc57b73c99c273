"""The study report never claims more than its confidence intervals allow."""

from jaxmem.report import _claims


def _row(method, epoch, auc, lo, hi, attack="loss"):
    return {"model": "m", "dataset": "d", "method": method, "epoch": epoch, "attack": attack,
            "auc": auc, "auc_lo": lo, "auc_hi": hi}


def test_claim_2_on_overlapping_intervals_is_not_reproduced():
    """The case the audit found: 0.656 -> 0.660 with CIs [0.50, 0.84] was called reproduced."""
    rows = [_row("lora", 1, 0.656, 0.50, 0.82), _row("lora", 3, 0.660, 0.50, 0.84),
            _row("prompt", 1, 0.52, 0.40, 0.64), _row("prompt", 3, 0.53, 0.41, 0.65)]
    text = "\n".join(_claims(rows, "m", "d", "loss"))
    claim2 = next(line for line in text.splitlines() if "Claim 2" in line)
    assert "not established" in claim2 and "intervals overlap" in claim2
    claim1 = next(line for line in text.splitlines() if "Claim 1 (" in line)
    assert "not established" in claim1  # 0.660 > 0.53, but [0.50, 0.84] meets [0.41, 0.65]


def test_separated_intervals_are_reproduced_and_reversed_ones_are_not():
    rows = [_row("full", 1, 0.70, 0.65, 0.75), _row("full", 3, 0.95, 0.92, 0.98),
            _row("prompt", 1, 0.50, 0.45, 0.55), _row("prompt", 3, 0.51, 0.46, 0.56)]
    text = "\n".join(_claims(rows, "m", "d", "loss"))
    assert "Claim 1 (parameter-based tuning memorizes more), loss attack: reproduced" in text
    assert "Claim 2 (parameter-based memorization grows with epochs): reproduced" in text
    rows = [_row("full", 1, 0.95, 0.92, 0.98), _row("full", 3, 0.70, 0.65, 0.75),
            _row("prompt", 1, 0.90, 0.85, 0.95), _row("prompt", 3, 0.91, 0.86, 0.96)]
    text = "\n".join(_claims(rows, "m", "d", "loss"))
    assert "loss attack: not reproduced" in text
    assert "grows with epochs): not reproduced" in text
