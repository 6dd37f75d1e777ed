"""Property-based fuzzing (hypothesis) of the settings, of command lines and of .npz inputs:
each either works or ends in `EomError` / exit 2 — never a traceback. Bounded: settings and
.npz cases need no ODE solve; the command lines reuse one tiny jitted problem."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from eom._errors import EomError
from eom.cli import app
from eom.experiments import (
    RunSettings,
    SweepSettings,
    SymmetrySettings,
    ValiditySettings,
    build_settings,
)
from eom.experiments._symmetry import check_settings as check_symmetry
from eom.experiments._validity import check_settings as check_validity

ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(-2, 12), max_size=4),
    st.sampled_from(["0-3", "3-1", "0,1,2", "", "a", "1e309", "../x", "linear", "digits"]),
)
CLASSES = (RunSettings, SweepSettings, SymmetrySettings, ValiditySettings)


@settings(max_examples=300, deadline=None)
@given(cls=st.sampled_from(CLASSES), data=st.data())
def test_settings_are_built_or_refused_with_an_eom_error(cls, data):
    names = [f.name for f in dataclasses.fields(cls)]
    keys = data.draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    flags = {k: data.draw(ANY) for k in keys}
    try:
        s = build_settings({}, flags, cls)
        if cls is SymmetrySettings:
            check_symmetry(s)
        if cls is ValiditySettings:
            check_validity(s)
    except EomError as exc:
        assert str(exc)  # one paragraph naming the problem
    except (TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - the bug it finds
        raise AssertionError(f"{flags} → {type(exc).__name__}: {exc}") from exc


runner = CliRunner()
BASE = ["run", "--subset", "16", "--width", "2", "--depth", "1", "--steps", "2",
        "--record-every", "1", "--orders", "0", "--no-predict", "--diagnose-every", "0"]
OPTION_VALUES = {
    "--lr": ["0.1", "-1", "nan", "inf", "1e9", "abc", "0"],
    "--steps": ["2", "0", "-3", "1.5", "x"],
    "--orders": ["0", "3-1", "0,99", "", "-", "1-a"],
    "--subset": ["16", "1", "0", "100000", "z"],
    "--width": ["2", "0", "-1"],
    "--weight-decay": ["0", "-1", "nan"],
    "--name": ["ok", "../../x", "a/b", ".."],
    "--model": ["linear", "typo", "x.py:f:", ":", "os:path"],
    "--dataset": ["digits", "nope", "/dev/null", "missing.npz"],
    "--target": ["0.2", "3", "-1"],
    "--optimizer": ["gd", "sgd", "adam"],
}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(OPTION_VALUES)), st.just(None), max_size=3),
       st.data())
def test_command_lines_run_or_exit_2(tmp_path, picked, data):
    args = list(BASE)
    for opt in picked:
        args += [opt, data.draw(st.sampled_from(OPTION_VALUES[opt]))]
    if "--lr" not in picked:
        args += ["--lr", "0.1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / f"o{abs(hash(str(args)))}")])
    assert result.exit_code in (0, 2), (args, result.output, result.exception)
    assert "Traceback" not in result.output, args


ARRAYS = st.one_of(
    st.builds(lambda n, d, v: np.full((n, d), v), st.integers(0, 5), st.integers(0, 3),
              st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda n: np.arange(n), st.integers(0, 6)),
    st.builds(lambda n: np.array(["a"] * n), st.integers(0, 3)),
    st.just(np.zeros((2, 2, 2, 2, 2))),
    st.just(np.array(1.5)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(X=st.one_of(st.none(), ARRAYS), y=st.one_of(st.none(), ARRAYS),
       junk=st.one_of(st.none(), st.binary(max_size=64)))
def test_npz_inputs_load_or_raise_eom_error(tmp_path, X, y, junk):
    from eom.problems import make_problem, open_dataset

    path = tmp_path / "d.npz"
    if junk is not None:
        path.write_bytes(junk)
    else:
        np.savez(path, **{k: v for k, v in (("X", X), ("y", y)) if v is not None})
    try:
        data = open_dataset(path)
        make_problem("linear", data)
    except EomError as exc:
        assert str(exc)
    assert not math.isnan(0.0)


@pytest.mark.parametrize("cls", CLASSES)
def test_settings_are_frozen(cls):
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls().seed = 3


def test_an_infinite_whole_number_is_refused_not_an_overflow():
    # found by the fuzz above: '1e309' parses as float('inf'), and int(inf) raised OverflowError
    from eom.experiments import parse_orders

    with pytest.raises(EomError, match="not a whole number"):
        parse_orders("1e309")
