r"""Scale- and translation-invariant parameter groups and what GD, GF and the EoM predict for them.

THEORY.md §4–5. On weights feeding a normalization, gradient flow conserves $\lVert w\rVert^2$ while
GD makes it grow ($\lVert w_{k+1}\rVert^2 = \lVert w_k\rVert^2 + \eta^2\lVert g_w\rVert^2$); on
softmax-logit directions with weight decay, GF decays $s = u\cdot\theta$ as $e^{-\lambda t}$ while
GD gives $(1-\eta\lambda)^k$. The EoM gets both right order by order.

```python
groups = eom.symmetry.detect(problem.loss, problem.params0)
gd = eom.gradient_descent(problem.loss, problem.params0, lr, n)
gf = eom.integrate(problem.loss, problem.params0, lr, n, order=0)
report = eom.symmetry.symmetry_report(problem.loss, groups, {"gd": gd, "gf": gf}, lr)
```
"""

from ._detect import (
    KINDS as KINDS,
    Group as Group,
    detect as detect,
    group_dots as group_dots,
    group_sums as group_sums,
    largest_groups as largest_groups,
)
from ._predict import (
    MAX_SCALE_ORDER as MAX_SCALE_ORDER,
    GroupReport as GroupReport,
    GroupStats as GroupStats,
    SymmetryReport as SymmetryReport,
    equilibrium_angular_update as equilibrium_angular_update,
    equilibrium_sq_norm as equilibrium_sq_norm,
    gd_angular_update as gd_angular_update,
    gd_sq_norm_step as gd_sq_norm_step,
    gf_sq_norm as gf_sq_norm,
    group_stats as group_stats,
    measure_groups as measure_groups,
    measured_rates as measured_rates,
    predict as predict,
    predicted_rates as predicted_rates,
    scale_rate as scale_rate,
    symmetry_report as symmetry_report,
    translation_eom as translation_eom,
    translation_gd as translation_gd,
    translation_gf as translation_gf,
    translation_rate as translation_rate,
)
