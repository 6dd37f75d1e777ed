"""Device plans of the experiments on this process's devices (no compile): validation, the
user-model and too-many refusals, and one device meaning the unchanged problem."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from eom import EomError
from eom.experiments import RunSettings, build_settings
from eom.experiments._common import problem_on_devices
from eom.experiments._devices import describe


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_devices_must_be_a_positive_whole_number(bad):
    with pytest.raises(EomError, match="--devices must be"):
        build_settings({}, {"devices": bad}, RunSettings)


def test_one_device_is_the_unchanged_problem():
    from eom.problems import make_problem

    s = RunSettings(model="linear", subset=8, devices=1)
    problem, plan = problem_on_devices(s)
    assert plan["count"] == 1 and plan["split"] == "none" and plan["padding"] == 0
    # the same loss object as make_problem's: one device is today's computation, compiled once
    assert type(problem.loss) is type(make_problem("linear", "digits", subset=8).loss)
    assert describe(plan).startswith("1 cpu device")


def test_more_devices_than_visible_is_refused():
    n = len(jax.local_devices())
    with pytest.raises(EomError, match=f"only {n} cpu device"):
        problem_on_devices(RunSettings(model="linear", subset=8, devices=n + 1))


def test_user_model_with_several_devices_is_refused(monkeypatch):
    import eom.experiments._devices as dev

    monkeypatch.setattr(jax, "local_devices", lambda: [jax.devices()[0]] * 2)  # "2 devices"
    s = RunSettings(model="examples.custom_function_model:factory", subset=8, devices=2)
    with pytest.raises(EomError, match="eom.sharding.data_parallel"):
        dev.plan_devices(s, type("P", (), {"dataset": type("D", (), {"X": np.zeros((8, 2))})()})())
