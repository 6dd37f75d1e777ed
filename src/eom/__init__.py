r"""eom — the equation of motion (EoM) of gradient descent.

Gradient descent $\theta_{k+1} = \theta_k - \eta\nabla L(\theta_k)$ is reproduced at $t = k\eta$
by the EoM $\dot\theta = -\nabla L - \sum_k \eta^k\xi_k$: gradient flow plus counter terms.

Importing eom turns on JAX's float64 mode (`jax_enable_x64`): discretization errors of 1e-10 are
invisible in float32. Set `EOM_NO_X64=1` before importing to keep JAX's default.

Subpackages: `eom.engine` (counter terms, fields, trajectories), `eom.measure` (GD vs GF/EoM
errors), `eom.analysis` (sharpness, regimes, closed forms), `eom.symmetry` (invariant groups),
`eom.problems` (data and models), `eom.sharding` (data parallelism), `eom.tree` (pytree
arithmetic), `eom.experiments` (the CLI's experiments as calls with typed results),
`eom.report` (their figures and HTML); `eom.internal` holds building blocks with no stability
promise.

>>> import jax.numpy as jnp
>>> import eom
>>> loss = lambda p: 0.5 * jnp.sum(p**2)
>>> gd = eom.gradient_descent(loss, jnp.ones(2), lr=0.1, num_steps=3)
>>> [round(float(v), 4) for v in gd.params[-1]]  # (1 - η)^3 on L = ½|θ|²
[0.729, 0.729]
"""

import os as _os

import jax as _jax

if not _os.environ.get("EOM_NO_X64"):
    _jax.config.update("jax_enable_x64", True)

from . import (  # noqa: E402
    analysis as analysis,
    engine as engine,
    experiments as experiments,
    measure as measure,
    problems as problems,
    report as report,
    sharding as sharding,
    symmetry as symmetry,
    tree as tree,
)
from ._errors import (  # noqa: E402
    DivergenceError as DivergenceError,
    EomError as EomError,
    UnsupportedOrderError as UnsupportedOrderError,
)
from ._version import __version__ as __version__  # noqa: E402
from .analysis import (  # noqa: E402
    Sharpness as Sharpness,
    regime as regime,
    sharpness as sharpness,
    term_ratios as term_ratios,
)
from .engine import (  # noqa: E402
    GD as GD,
    MAX_ORDER as MAX_ORDER,
    SGD as SGD,
    ContinuousModel as ContinuousModel,
    HeavyBall as HeavyBall,
    Optimizer as Optimizer,
    Trajectory as Trajectory,
    counter_terms as counter_terms,
    gradient_descent as gradient_descent,
    heavy_ball as heavy_ball,
    heavy_ball_field as heavy_ball_field,
    integrate as integrate,
    make_batches as make_batches,
    modified_field as modified_field,
    modified_terms as modified_terms,
    modified_terms_of_map as modified_terms_of_map,
    sgd as sgd,
    sgd_averaged_field as sgd_averaged_field,
    sgd_epoch_field as sgd_epoch_field,
    sgd_regularizer as sgd_regularizer,
    vector_field as vector_field,
)
from .measure import (  # noqa: E402
    Comparison as Comparison,
    OrderSweep as OrderSweep,
    PredictedError as PredictedError,
    compare as compare,
    order_sweep as order_sweep,
    predicted_error as predicted_error,
)
from .problems import Dataset as Dataset, Problem as Problem, make_problem as make_problem  # noqa: E402

__all__ = [
    # subpackages
    "analysis",
    "engine",
    "experiments",
    "measure",
    "problems",
    "report",
    "sharding",
    "symmetry",
    "tree",
    # errors and version
    "DivergenceError",
    "EomError",
    "UnsupportedOrderError",
    "__version__",
    # engine
    "MAX_ORDER",
    "Trajectory",
    "counter_terms",
    "gradient_descent",
    "integrate",
    "modified_field",
    "modified_terms",
    "modified_terms_of_map",
    "vector_field",
    # optimizers: the discrete methods and their continuous models
    "ContinuousModel",
    "GD",
    "HeavyBall",
    "Optimizer",
    "SGD",
    "heavy_ball",
    "heavy_ball_field",
    "make_batches",
    "sgd",
    "sgd_averaged_field",
    "sgd_epoch_field",
    "sgd_regularizer",
    # measurement
    "Comparison",
    "OrderSweep",
    "PredictedError",
    "compare",
    "order_sweep",
    "predicted_error",
    # analyses
    "Sharpness",
    "regime",
    "sharpness",
    "term_ratios",
    # problems
    "Dataset",
    "Problem",
    "make_problem",
]
