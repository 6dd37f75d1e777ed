"""The numerical engine: counter terms, EoM vector fields, GD and ODE trajectories."""

from ._counter import (
    check_loss as check_loss,
    check_lr as check_lr,
    counter_term_fn as counter_term_fn,
    counter_terms as counter_terms,
    eom_field as eom_field,
    grad_and_terms_fn as grad_and_terms_fn,
    regularized as regularized,
    vector_field as vector_field,
)
from ._gd import GD as GD
from ._map import (
    map_modified_field as map_modified_field,
    modified_terms_of_map as modified_terms_of_map,
)
from ._modified import (
    MAX_ORDER as MAX_ORDER,
    check_order as check_order,
    lie_derivative as lie_derivative,
    modified_field as modified_field,
    modified_terms as modified_terms,
)
from ._momentum import (
    HeavyBall as HeavyBall,
    check_beta as check_beta,
    first_order_start as first_order_start,
    flow as flow,
    heavy_ball as heavy_ball,
    heavy_ball_field as heavy_ball_field,
    momentum_field_fn as momentum_field_fn,
    quadratic_rate as quadratic_rate,
    regime_bound as regime_bound,
    slow_root as slow_root,
    stability_limit as stability_limit,
    transient_steps as transient_steps,
)
from ._momentum_terms import (
    MomentumSchedule as MomentumSchedule,
    momentum_schedule as momentum_schedule,
)
from ._optimizer import (
    ContinuousModel as ContinuousModel,
    Optimizer as Optimizer,
    step_index as step_index,
)
from ._sgd import (
    SGD as SGD,
    SwitchingModel as SwitchingModel,
    make_batches as make_batches,
    sgd as sgd,
    sgd_averaged_field as sgd_averaged_field,
    sgd_epoch_field as sgd_epoch_field,
    sgd_regularizer as sgd_regularizer,
)
from ._trajectory import (
    Trajectory as Trajectory,
    gradient_descent as gradient_descent,
    integrate as integrate,
    save_grid as save_grid,
    step_budget as step_budget,
)
