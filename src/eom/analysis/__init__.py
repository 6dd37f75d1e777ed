"""Analyses: where the EoM holds (sharpness, regimes, term ratios) and closed-form references."""

from ._quadratic import (
    counter_term_closed_form as counter_term_closed_form,
    exact_eom_field as exact_eom_field,
    exact_eom_solution as exact_eom_solution,
    gd_closed_form as gd_closed_form,
    gf_closed_form as gf_closed_form,
    quadratic_loss as quadratic_loss,
    quadratic_minimizer as quadratic_minimizer,
    truncated_eom_field as truncated_eom_field,
    truncated_eom_rates as truncated_eom_rates,
    truncated_eom_solution as truncated_eom_solution,
)
from ._regime import (
    ACCURATE_MAX as ACCURATE_MAX,
    REGIMES as REGIMES,
    SERIES_RADIUS as SERIES_RADIUS,
    STABILITY_LIMIT as STABILITY_LIMIT,
    diagnostics_fn as diagnostics_fn,
    first_worsening as first_worsening,
    regime as regime,
    regime_levels as regime_levels,
    regime_warning as regime_warning,
    regimes as regimes,
    severity as severity,
    term_ratios as term_ratios,
    term_ratios_fn as term_ratios_fn,
    warning_message as warning_message,
)
from ._sharpness import (
    Sharpness as Sharpness,
    hvp_fn as hvp_fn,
    lambda_max_fn as lambda_max_fn,
    sharpness as sharpness,
)
