"""Run settings: defaults, a TOML file (`--config run.toml`), and command-line flags on top."""

from __future__ import annotations

import dataclasses
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


@dataclass
class RunSettings(ModelSettings):
    """Every setting of `eom run` (also the keys accepted in a `--config` TOML file)."""

    model: str = "mlp"
    dataset: str = "digits"
    lr: float | None = None  # None: chosen so that lr·λ_max(θ_0) = target
    target: float = 0.2  # lr·λ_max(θ_0) when lr is chosen automatically
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
    local: bool = False
    name: str | None = None
    out: str | None = None


def parse_orders(text: str | list | None) -> list[int] | None:
    """'0,1,2' or '0-3' or [0, 1, 2] → [0, 1, 2], validated against the supported range."""
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
                items.extend(range(_int(a, "orders"), _int(b, "orders") + 1))
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
    if f != int(f):
        raise EomError(f"{what}: {x!r} is not a whole number.")
    return int(f)


def load_toml(path: str | Path | None, cls=RunSettings) -> dict:
    """Read a settings file; unknown keys are an error naming the valid ones."""
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
    """Defaults ← TOML file ← command-line flags (flags given as None are not set)."""
    values = dict(file_values)
    values.update({k: v for k, v in flags.items() if v is not None})
    if "orders" in values:
        values["orders"] = parse_orders(values["orders"])
    s = cls(**values)
    validate(s)
    return s


def validate(s) -> None:
    checks = [
        ("steps", 1), ("record_every", 1), ("seed", 0), ("num_lrs", 2), ("horizon_steps", 1),
    ]
    for name, lo in checks:
        if hasattr(s, name):
            v = getattr(s, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                flag = name.replace("_", "-")
                raise EomError(f"--{flag} must be a whole number ≥ {lo}, got {v!r}.")
    if getattr(s, "lr", None) is not None:
        if not isinstance(s.lr, int | float) or not s.lr > 0:
            raise EomError(f"--lr must be a positive number, got {s.lr!r}.")
    if getattr(s, "weight_decay", None) is not None and s.weight_decay < 0:
        raise EomError(f"--weight-decay must be ≥ 0, got {s.weight_decay}.")
    if getattr(s, "subset", None) is not None and s.subset < 2:
        raise EomError(f"--subset must be at least 2 samples, got {s.subset}.")
    if getattr(s, "target", None) is not None and not 0 < s.target < 2:
        raise EomError(
            f"--target (lr·λ_max for the automatic lr) must be in (0, 2), got {s.target}."
        )
