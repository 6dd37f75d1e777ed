r"""Adapters: models written with other libraries as `(loss, params0)` for every eom call.

Each returns `loss(params) -> scalar` (pure, jit-friendly, deterministic) and `params0`, a pytree
of float64 arrays, with $L(\theta) = \texttt{loss\_fn}(\text{model}_\theta(x), y)$ for a batch
`(x, y)`. A model factory for `eom run --model module:factory` can return the pair directly:

```python
def factory(dataset, seed):
    model = MyNNXModel(rngs=nnx.Rngs(seed))
    return eom.adapters.from_nnx(model, cross_entropy, (dataset.X, dataset.y))
```

| library | function | optional extra |
| --- | --- | --- |
| Equinox | `from_equinox` | (core) |
| Flax NNX | `from_nnx` | `eom-dnn[adapters]` |
| Flax Linen | `from_linen` | `eom-dnn[adapters]` |
| Haiku | `from_haiku` | `eom-dnn[adapters]` |
| PyTorch (torchax) | `from_torch`, `torch_factory` | `eom-dnn[torch]` |

Flax and Equinox create float32 parameters by default; every adapter casts to float64, since
counter terms computed in float32 hold to ~1e-7 only.
"""

from ._equinox import from_equinox as from_equinox
from ._flax_linen import from_linen as from_linen
from ._flax_nnx import TRACE_HINT as TRACE_HINT, from_nnx as from_nnx
from ._haiku import from_haiku as from_haiku
from ._torch import from_torch as from_torch, torch_factory as torch_factory
