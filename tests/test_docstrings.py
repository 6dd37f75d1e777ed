"""The examples in the public docstrings run and print what they say (`doctest`).

Every public function of `eom` (the top-level namespace), `eom.sharding` and `eom.experiments`
must carry at least one example; every docstring example of the public modules below is run. The
examples use tiny problems (one to a few parameters) so the whole file stays within a few seconds
of compile time per example; those that run a whole experiment (`SLOW`) take 15–75 s each on a
busy 2-core machine and run with `-m slow`.
"""

from __future__ import annotations

import doctest
import inspect
import types

import pytest

import eom
import eom.experiments
import eom.internal
import eom.sharding
import eom.symmetry
import eom.tree

#: Public modules whose docstring examples are run.
MODULES = (
    eom,
    eom.engine,
    eom.measure,
    eom.analysis,
    eom.symmetry,
    eom.problems,
    eom.sharding,
    eom.tree,
    eom.internal,
    eom.experiments,
)
#: Modules every public function of which must have an example.
REQUIRED = (eom, eom.sharding, eom.experiments)
#: Examples that run a whole experiment (ODE solves of a real network): `-m slow` only.
SLOW = {f"eom.experiments.{name}" for name in
        ("run", "sweep", "symmetry", "validity", "measure_point")}


def _public(module: types.ModuleType) -> dict[str, object]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_") and not isinstance(obj, types.ModuleType)
    }


def _examples() -> dict[str, doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=False)
    found: dict[str, doctest.DocTest] = {}
    seen: set[int] = set()
    for module in MODULES:
        for name, obj in [("", module), *_public(module).items()]:
            if id(obj) in seen or not (inspect.isroutine(obj) or inspect.isclass(obj) or not name):
                continue
            seen.add(id(obj))
            qual = f"{module.__name__}.{name}" if name else module.__name__
            for test in finder.find(obj, qual, globs={}):
                if test.examples:
                    found[qual] = test
    return found


EXAMPLES = _examples()


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(EXAMPLES)])
def test_docstring_example_runs(name):
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    runner.run(EXAMPLES[name])
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_slow_examples_exist():
    """A renamed experiment must not silently drop out of `SLOW` (and so run by default)."""
    assert SLOW <= set(EXAMPLES)


def test_every_public_function_has_an_example():
    missing = [
        f"{module.__name__}.{name}"
        for module in REQUIRED
        for name, obj in _public(module).items()
        if inspect.isfunction(obj) and f"{module.__name__}.{name}" not in EXAMPLES
    ]
    assert not missing, f"public functions without a docstring example: {missing}"
