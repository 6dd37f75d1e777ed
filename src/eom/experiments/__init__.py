"""The experiments the `eom` command line offers, as library calls.

Each takes a frozen settings object, an optional `store` (a folder: written as it goes,
resumable, locked; without one the experiment runs in a temporary folder and only the result is
kept) and an optional `progress(done, total, what)` callback, and returns a typed result with
`.to_dir(path)` / `.from_dir(path)`:

    from eom.experiments import RunSettings, run
    result = run(RunSettings(model="mlp", dataset="digits", steps=100))
    result.results["final"]["orders"]["1"]["error"]
"""

from ._common import (
    build_problem as build_problem,
    check_stable as check_stable,
    choose_lr as choose_lr,
    fingerprints as fingerprints,
    lambda_max as lambda_max,
    lr_for_target as lr_for_target,
)
from ._notebook import tqdm_progress as tqdm_progress
from ._optim import USER_BATCH_CONVENTION as USER_BATCH_CONVENTION
from ._paper import PaperSettings as PaperSettings, paper as paper
from ._result import (
    ExperimentResult as ExperimentResult,
    PaperResult as PaperResult,
    RunResult as RunResult,
    SweepResult as SweepResult,
    SymmetryResult as SymmetryResult,
    ValidityResult as ValidityResult,
)
from ._run import run as run
from ._runner import Runner as Runner
from ._seeds import SeedAverage as SeedAverage, seed_average as seed_average
from ._settings import (
    MOMENTUM_RADIUS_FRACTION as MOMENTUM_RADIUS_FRACTION,
    OPTIMIZER_DEFAULTS as OPTIMIZER_DEFAULTS,
    OPTIMIZERS as OPTIMIZERS,
    RunSettings as RunSettings,
    auto_target as auto_target,
    build_settings as build_settings,
    load_toml as load_toml,
    optimizer_settings as optimizer_settings,
    parse_orders as parse_orders,
)
from ._store import RunDir as RunDir, atomic_write as atomic_write, dtype_in_use as dtype_in_use
from ._sweep import SweepSettings as SweepSettings, parse_lrs as parse_lrs, sweep as sweep
from ._symmetry import (
    SymmetrySettings as SymmetrySettings,
    parse_weight_decays as parse_weight_decays,
    symmetry as symmetry,
)
from ._validity import (
    ValiditySettings as ValiditySettings,
    accurate_gains as accurate_gains,
    best_order as best_order,
    measure_point as measure_point,
    not_better as not_better,
    step_counts as step_counts,
    stops_helping as stops_helping,
    validity as validity,
)
