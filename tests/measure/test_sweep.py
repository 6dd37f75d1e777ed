"""Order-of-accuracy sweeps: at a fixed horizon T the order-N EoM error is O(η^{N+1})."""

from __future__ import annotations

import numpy as np
import pytest

import eom
from eom.measure import loglog_slope, order_sweep

from ._problems import mlp_loss, mlp_params


def test_order_sweep_slopes_are_order_plus_one():
    """Fitted log–log slopes of the error at T = 1 against η ∈ {0.1, 0.05, 0.025, 0.0125} are
    N+1 ± 0.15 for N = 0, 1, 2. Reason for 0.15 (the issue's acceptance tolerance): the error is
    C η^{N+1}(1 + O(η)), and the O(η) correction bends the fitted line by about c·η_max; measured
    |slope − (N+1)| ≈ 0.01 here, with standard errors ≈ 0.003."""
    lrs = [0.0125, 0.1, 0.025, 0.05]  # unsorted on purpose: the sweep sorts them
    s = order_sweep(mlp_loss, mlp_params(), lrs, (0, 1, 2), 1.0)
    np.testing.assert_allclose(s.lrs, [0.0125, 0.025, 0.05, 0.1])
    np.testing.assert_array_equal(s.num_steps, [80, 40, 20, 10])
    assert s.horizon == 1.0 and s.orders == (0, 1, 2)
    for n in s.orders:
        assert not s.flagged[n].any(), (n, s.error[n])
        assert abs(s.slope[n] - (n + 1)) < 0.15, (n, s.slope[n], s.error[n])
        assert 0 < s.slope_stderr[n] < 0.05
        # the errors themselves increase with η
        assert (np.diff(s.error[n]) > 0).all()
    # each order wins over the previous one at every η (ηλ_max ≤ 0.11 here)
    for a, b in ((0, 1), (1, 2)):
        assert (s.error[b] < 0.1 * s.error[a]).all()
    rows = s.rows()
    assert len(rows) == 12
    assert rows[0] == {"order": 0, "lr": 0.0125, "num_steps": 80, "error": s.error[0][0],
                       "flagged": False}


def test_loglog_slope_recovers_power_law():
    """Exact power laws give the exponent and a zero standard error; noisy ones a small one."""
    x = np.array([0.1, 0.05, 0.025, 0.0125])
    slope, se = loglog_slope(x, 3.0 * x**2.5)
    assert slope == pytest.approx(2.5, abs=1e-12) and se < 1e-10
    rng = np.random.default_rng(0)
    slope, se = loglog_slope(x, x**2 * np.exp(0.05 * rng.standard_normal(4)))
    assert abs(slope - 2) < 5 * se + 0.1 and 0 < se < 0.2
    slope, se = loglog_slope(x[:2], x[:2] ** 3)
    assert slope == pytest.approx(3.0) and np.isnan(se)


def test_horizon_must_be_whole_number_of_steps():
    with pytest.raises(eom.EomError, match="horizon"):
        order_sweep(mlp_loss, mlp_params(), [0.3], (0,), 1.0)
