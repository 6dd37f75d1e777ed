"""Settings of the experiments: frozen dataclasses built from defaults, a TOML file
(`--config run.toml`) and command-line flags on top, validated once."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import EomError
from ..engine import MAX_ORDER


class ModelSettings:
    """Shared behaviour of every command's settings dataclass (model options, plain dict)."""

    def model_kwargs(self) -> dict:
        """The built-in model options that were given (`width`, `depth`)."""
        return {k: v for k, v in (("width", self.width), ("depth", self.depth)) if v is not None}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: The optimizers a run can compare its continuous models against (only "gd" runs today; the
#: others plug in through `eom.engine.Optimizer` subclasses).
OPTIMIZERS = ("gd", "sgd", "momentum")


def distance_label(optimizer: str | None) -> str:
    """Column header of the model-to-iterate distance, naming the discrete method measured."""
    name = {"sgd": "SGD", "momentum": "HB"}.get(str(optimizer), "GD")
    return f"‖θ−θ_{name}‖"


@dataclass(frozen=True)
class RunSettings(ModelSettings):
    """Every setting of `eom run` (also the keys accepted in a `--config` TOML file)."""

    model: str = "mlp"
    dataset: str = "digits"
    lr: float | None = None  # None: chosen so that lr·λ_max(θ_0) = target
    # lr·λ_max(θ_0) when lr is chosen automatically; None: 0.2, or for momentum
    # MOMENTUM_RADIUS_FRACTION × its radius (see `auto_target`)
    target: float | None = 0.2
    steps: int = 200
    orders: list[int] = field(default_factory=lambda: [0, 1, 2])
    weight_decay: float = 0.0
    seed: int = 0
    record_every: int = 5
    diagnose_every: int = 50
    subset: int | None = None
    width: int | None = None
    depth: int | None = None
    predict: bool = True
    predict_every: int = 1  # evaluate the prediction's ξ_(N+1) every this many GD steps
    local: bool = False
    optimizer: str = "gd"  # "gd" | "sgd" | "momentum"
    batch_size: int | None = None  # sgd: samples per minibatch
    shuffle: str | bool = "random"  # sgd: "cyclic" | "random" (old bool configs: True = random)
    momentum: float | None = None  # momentum: β (None: OPTIMIZER_DEFAULTS)
    nesterov: bool = False  # momentum: Nesterov's variant
    start: str = "rest"  # momentum: "rest" (v_0 = 0, errors from the transient K on) | "manifold"
    allow_unstable: bool = False  # η·λ_max(θ_0) ≥ 2: run GD alone instead of refusing
    devices: int | None = None  # local devices the batch is split over (None: all)
    name: str | None = None
    out: str | None = None

    def as_dict(self) -> dict:
        """The settings; a GD run leaves out the SGD/momentum ones (so run folders written before
        they changed type, e.g. `shuffle = true`, still resume)."""
        d = dataclasses.asdict(self)
        if self.optimizer == "gd":
            for k in OPTIMIZER_ONLY:
                d.pop(k, None)
        return d


#: Settings that mean something only for `--optimizer sgd|momentum`.
OPTIMIZER_ONLY = ("batch_size", "shuffle", "momentum", "nesterov", "start")


#: Defaults that replace RunSettings' own when `--optimizer` is sgd or momentum and the flag
#: (or config key) is not given: tiny problems, so a default run ends in minutes on 2 cores.
OPTIMIZER_DEFAULTS = {
    "sgd": {"subset": 256, "width": 16, "depth": 1, "batch_size": 64, "steps": 40, "orders": [0, 1],
            "target": 0.1, "record_every": 4, "diagnose_every": 4},
    "momentum": {"subset": 256, "width": 16, "depth": 1, "momentum": 0.5, "steps": 200,
                 "target": None, "record_every": 5, "diagnose_every": 20},
}
#: Momentum's automatic learning rate (neither lr nor target given): η·λ_max(θ_0) is this
#: fraction of the momentum radius (1−√β)² (Nesterov ((1−β)/(1+β))²), inside the EoM's regime
#: for every β. A fixed η·λ_max would be 15× the radius at β = 0.9 (0.04 vs 0.00263).
MOMENTUM_RADIUS_FRACTION = 0.5


def auto_target(s) -> tuple[float, str]:
    """`(η·λ_max(θ_0), lr_source)` for the automatic learning rate of the settings `s`.

    An explicit `target` is η·λ_max; without one, momentum takes `MOMENTUM_RADIUS_FRACTION` ×
    its radius and every other optimizer `RunSettings.target`'s default 0.2.

    >>> from eom.experiments import auto_target, optimizer_settings
    >>> x, source = auto_target(optimizer_settings("momentum", momentum=0.9))
    >>> round(x, 6), source
    (0.001317, 'auto: η·λ_max(θ_0) = 0.5 × momentum radius 0.00263')
    >>> auto_target(optimizer_settings("momentum", momentum=0.9, target=0.01))
    (0.01, 'auto: η·λ_max(θ_0) = 0.01')
    """
    target = getattr(s, "target", None)
    if target is not None:
        return float(target), f"auto: η·λ_max(θ_0) = {target}"
    if getattr(s, "optimizer", "gd") == "momentum":
        from ..engine import regime_bound

        radius = regime_bound(s.momentum, bool(s.nesterov))
        return (MOMENTUM_RADIUS_FRACTION * radius,
                f"auto: η·λ_max(θ_0) = {MOMENTUM_RADIUS_FRACTION:g} × momentum radius "
                f"{radius:.3g}")
    default = RunSettings.target
    return default, f"auto: η·λ_max(θ_0) = {default}"
SHUFFLES = ("cyclic", "random")


def with_optimizer_defaults(optimizer: str | None, given: dict) -> dict:
    """`given` (setting → value, None = not given) filled with `OPTIMIZER_DEFAULTS[optimizer]`."""
    extra = OPTIMIZER_DEFAULTS.get(optimizer or "gd", {})
    if given.get("model") not in (None, "mlp", "mlp-bn"):  # width/depth: the built-in MLPs'
        extra = {k: v for k, v in extra.items() if k not in ("width", "depth")}
    return {**{k: v for k, v in extra.items() if given.get(k) is None}, **{
        k: v for k, v in given.items() if v is not None}}


def optimizer_settings(optimizer: str = "gd", **values) -> RunSettings:
    """`RunSettings` with the optimizer's tiny defaults (`OPTIMIZER_DEFAULTS`) under `values`.

    >>> from eom.experiments import optimizer_settings
    >>> optimizer_settings("sgd", steps=8).batch_size
    64
    """
    return RunSettings(optimizer=optimizer, **with_optimizer_defaults(optimizer, values))


def shuffle_kind(v: str | bool) -> str:
    """"cyclic" | "random"; a bool from an old config reads True → random, False → cyclic."""
    if isinstance(v, bool):
        return "random" if v else "cyclic"
    return v


def parse_orders(text: str | list | None) -> list[int] | None:
    """'0,1,2' or '0-3' or [0, 1, 2] → [0, 1, 2], validated against the supported range.

    >>> import eom
    >>> eom.experiments.parse_orders("0-2"), eom.experiments.parse_orders("0,2")
    ([0, 1, 2], [0, 2])
    """
    if text is None:
        return None
    if isinstance(text, list | tuple):
        items = list(text)
    else:
        items = []
        for part in str(text).replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = _int(a, "orders"), _int(b, "orders")
                if hi < lo:
                    raise EomError(f"--orders {part}: a range goes up, e.g. {hi}-{lo}.")
                items.extend(range(lo, hi + 1))
            else:
                items.append(part)
    orders = sorted({_int(x, "orders") for x in items})
    if not orders:
        raise EomError("--orders is empty; give e.g. --orders 0,1,2 (0 is gradient flow).")
    bad = [n for n in orders if n < 0 or n > MAX_ORDER - 1]
    if bad:
        raise EomError(
            f"--orders {bad} outside the supported range 0–{MAX_ORDER - 1} (the prediction needs "
            f"one order more, up to eom.MAX_ORDER = {MAX_ORDER}); use e.g. --orders 0,1,2."
        )
    return orders


def _int(x: Any, what: str) -> int:
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise EomError(f"{what}: {x!r} is not a whole number.") from None
    if not math.isfinite(f) or f != int(f):
        raise EomError(f"{what}: {x!r} is not a whole number.")
    return int(f)


def load_toml(path: str | Path | None, cls=RunSettings) -> dict:
    """Read a settings file; unknown keys are an error naming the valid ones.

    >>> import pathlib, tempfile
    >>> import eom
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
    >>> _ = path.write_text("steps = 10")
    >>> eom.experiments.load_toml(path)
    {'steps': 10}
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise EomError(f"--config {path} does not exist; give the path of a TOML settings file.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EomError(f"--config {path} is not valid TOML: {exc}.") from None
    data = {k.replace("-", "_"): v for k, v in data.items()}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise EomError(
            f"--config {path}: unknown setting(s) {unknown}; valid ones are {sorted(names)}."
        )
    return data


def build_settings(file_values: dict, flags: dict, cls=RunSettings):
    """Defaults ← TOML file ← command-line flags (flags given as None are not set).

    >>> import eom
    >>> s = eom.experiments.build_settings({"steps": 10}, {"orders": "0-2", "lr": None})
    >>> s.steps, s.orders, s.lr
    (10, [0, 1, 2], None)
    """
    values = dict(file_values)
    values.update({k: v for k, v in flags.items() if v is not None})
    if "orders" in values:
        values["orders"] = parse_orders(values["orders"])
    _check_types(cls, values)
    try:
        s = cls(**values)
    except TypeError as exc:
        raise EomError(f"bad settings: {exc}.") from None
    validate(s)
    return s


def _conforms(v: Any, annotation: str) -> bool:
    """Whether `v` fits a field annotation such as 'int | None' or 'list[float] | None'."""
    for alt in (a.strip() for a in annotation.split("|")):
        if alt.startswith("list[") and isinstance(v, list | tuple):
            if all(_conforms(x, alt[5:-1]) for x in v):
                return True
        elif alt in _TYPES and _TYPES[alt](v):
            return True
    return False


_TYPES = {
    "None": lambda v: v is None,
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


def _check_types(cls, values: dict) -> None:
    """Settings from a TOML file are untyped: check each against its field's annotation."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    for k, v in values.items():
        ann = fields.get(k)
        if isinstance(ann, str) and not _conforms(v, ann):
            flag = k.replace("_", "-")
            raise EomError(f"--{flag} must be {ann.replace(' | None', '')}, got {v!r}.")


def check_name(name: str | None) -> None:
    """A run name is one folder under runs/: no path separators, no '..'."""
    if name is None:
        return
    if not isinstance(name, str) or not name or name in (".", "..") or any(
        c in name for c in "/\\\0"
    ):
        raise EomError(
            f"--name {name!r} must be a plain folder name (no '/', '\\' or '..'); it becomes "
            "runs/<name>/. Use --out for a path."
        )


def check_optimizer(s) -> None:
    opt = getattr(s, "optimizer", "gd")
    if opt not in OPTIMIZERS:
        raise EomError(f"--optimizer {opt!r} is not one of {', '.join(OPTIMIZERS)}.")
    if getattr(s, "batch_size", None) is not None and s.batch_size < 1:
        raise EomError(f"--batch-size must be ≥ 1, got {s.batch_size}.")
    if getattr(s, "momentum", None) is not None and not 0 <= s.momentum < 1:
        raise EomError(f"--momentum (β) must be in [0, 1), got {s.momentum}.")
    if hasattr(s, "shuffle") and shuffle_kind(s.shuffle) not in SHUFFLES:
        raise EomError(f"--shuffle must be cyclic or random, got {s.shuffle!r}.")
    if getattr(s, "start", "rest") not in ("rest", "manifold"):
        raise EomError(f"--start must be rest or manifold, got {s.start!r}.")
    if opt == "sgd" and s.batch_size is None:
        raise EomError("--optimizer sgd needs --batch-size B (samples per minibatch).")
    if (opt == "sgd" and shuffle_kind(s.shuffle) == "random" and s.orders
            and max(s.orders) > 1):
        raise EomError(
            f"--orders {s.orders}: with --shuffle random the averaged flow is derived at first "
            "order only (higher orders are not verified: UnsupportedOrderError); use --orders "
            "0,1, or --shuffle cyclic for the epoch EoM of every order."
        )
    if opt == "momentum" and s.momentum is None:
        raise EomError("--optimizer momentum needs --momentum β (e.g. 0.5 or 0.9).")


def _finite_number(s, name: str) -> None:
    v = getattr(s, name, None)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise EomError(f"--{name.replace('_', '-')} must be a finite number, got {v!r}.")


def validate(s) -> None:
    for name in ("lr", "target", "weight_decay", "decay", "min_target", "max_target",
                 "momentum"):
        _finite_number(s, name)
    check_name(getattr(s, "name", None))
    check_optimizer(s)
    _validate_ranges(s)


def _validate_ranges(s) -> None:
    checks = [
        ("steps", 1), ("record_every", 1), ("seed", 0), ("num_lrs", 2), ("horizon_steps", 1),
        ("predict_every", 1),
    ]
    for name, lo in checks:
        if hasattr(s, name):
            v = getattr(s, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                flag = name.replace("_", "-")
                raise EomError(f"--{flag} must be a whole number ≥ {lo}, got {v!r}.")
    devices = getattr(s, "devices", None)
    if devices is not None and (not isinstance(devices, int) or isinstance(devices, bool)
                                or devices < 1):
        raise EomError(f"--devices must be a whole number ≥ 1, got {devices!r}.")
    if getattr(s, "lr", None) is not None:
        if not isinstance(s.lr, int | float) or not s.lr > 0:
            raise EomError(f"--lr must be a positive number, got {s.lr!r}.")
    if getattr(s, "weight_decay", None) is not None and s.weight_decay < 0:
        raise EomError(f"--weight-decay must be ≥ 0, got {s.weight_decay}.")
    if getattr(s, "subset", None) is not None and s.subset < 2:
        raise EomError(f"--subset must be at least 2 samples, got {s.subset}.")
    # momentum's own stability limit (up to 2(1+β)) is checked against λ_max(θ_0) later
    top = math.inf if getattr(s, "optimizer", "gd") == "momentum" else 2
    if getattr(s, "target", None) is not None and not 0 < s.target < top:
        where = "> 0" if top == math.inf else f"in (0, {top})"
        raise EomError(
            f"--target (lr·λ_max for the automatic lr) must be {where}, got {s.target}."
        )
