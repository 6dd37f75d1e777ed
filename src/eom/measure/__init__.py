"""Measurement: GD vs GF/EoM errors, the predicted error, order-of-accuracy sweeps."""

from ._compare import (
    FLAG_REASON as FLAG_REASON,
    CompareState as CompareState,
    Comparison as Comparison,
    RecordOptions as RecordOptions,
    SolverOptions as SolverOptions,
    compare as compare,
    compare_chunks as compare_chunks,
    run_chunks as run_chunks,
)
from ._predict import PredictedError as PredictedError, predicted_error as predicted_error
from ._sweep import (
    OrderSweep as OrderSweep,
    fit_sweep as fit_sweep,
    loglog_slope as loglog_slope,
    order_sweep as order_sweep,
    sweep_point as sweep_point,
)
from ._tolerance import SOLVER_MARGIN as SOLVER_MARGIN, auto_tolerance as auto_tolerance
