"""Tolerances that serve the user (issue 14): as the measured error decays, the automatic
tolerance is tightened (and chunks re-solved) so that recorded points stay measurements."""

from __future__ import annotations

import numpy as np

from eom.measure import FLAG_REASON, compare

from ._problems import quad_loss, quad_params


def test_tightening_keeps_decaying_errors_measured():
    """GD on the quadratic at η = 0.5 converges (ηλ ∈ [0.1, 0.5]); GD and every EoM approach θ*,
    so the error decays ~100× over 128 steps while a fixed tolerance's solver error does not.
    Measured (2 cores, this commit): fixed tolerance flags 23 % / 34 % / 50 % of the points of
    orders 0/1/2; tightened, 0 % / 0 % / 9 % (the last: solver error carried from the first
    chunk, which is never reduced after the fact). The thresholds leave a margin for load."""
    kw = dict(record_every=1)
    fixed = compare(quad_loss, quad_params(), 0.5, 128, (0, 1, 2), tighten=False, **kw)
    tight = compare(quad_loss, quad_params(), 0.5, 128, (0, 1, 2), **kw)
    before = fixed.flagged_fraction()
    after = tight.flagged_fraction()
    assert min(before.values()) > 0.15, before
    assert np.mean(list(after.values())) <= 0.05, after
    assert after[0] == 0.0 and after[1] == 0.0, after
    # the tightened run measures the same errors where both are measurements
    ok = ~fixed.flagged[0] & ~tight.flagged[0]
    np.testing.assert_allclose(tight.error[0][ok], fixed.error[0][ok], rtol=0.1)
    assert "SOLVER_MARGIN" in FLAG_REASON and "solver error" in FLAG_REASON
