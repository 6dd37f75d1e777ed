"""Benchmarks of eom itself: targets with pass/fail, cost ratios, timing and memory helpers.

Sits above `eom.measure` (it times engine and measure functions); nothing in the numerical
library imports it. `psutil` is optional (extra `bench`); without it memory is read from /proc
or `resource`.
"""

from ._bench import (
    BenchModel as BenchModel,
    BenchReport as BenchReport,
    BenchRow as BenchRow,
    bench_models as bench_models,
    field_rows as field_rows,
    gd_memory_rows as gd_memory_rows,
    hessian_field as hessian_field,
    trajectory_rows as trajectory_rows,
)
from ._machine import (
    PeakRSS as PeakRSS,
    load_average as load_average,
    machine_info as machine_info,
    rss_bytes as rss_bytes,
    rss_source as rss_source,
)
from ._optimizer_rows import (
    batch_problem as batch_problem,
    measure_momentum as measure_momentum,
    measure_sgd as measure_sgd,
)
from ._suite import format_table as format_table, run_bench as run_bench
from ._targets import (
    COMPILE_LIMIT as COMPILE_LIMIT,
    FIELD_LIMITS as FIELD_LIMITS,
    TRAJECTORY_LIMITS as TRAJECTORY_LIMITS,
    TargetResult as TargetResult,
    TargetSettings as TargetSettings,
    format_targets as format_targets,
    measure_fields as measure_fields,
    measure_trajectories as measure_trajectories,
    register_target as register_target,
    registered_targets as registered_targets,
    run_targets as run_targets,
)
from ._timing import (
    compile_fn as compile_fn,
    interleaved_minima as interleaved_minima,
    no_compilation_cache as no_compilation_cache,
    time_ratio as time_ratio,
    xla_cost as xla_cost,
)
