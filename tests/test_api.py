"""The public surface: what `import eom` exposes, and that users never need a private module.

- the top-level namespace is exactly `eom.__all__` (plus private names), with no argument checks
  (`check_*`) or chunk-level machinery (`CompareState`, `compare_chunks`, `auto_tolerance`):
  those live in `eom.internal`;
- `eom.sharding` and `eom.tree` are public; `eom.symmetry` has no name that shadows a package
  (`measure` was renamed `measure_groups`);
- README.md and examples/ import nothing whose dotted path has a component starting with `_`.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import eom
import eom.internal
import eom.sharding
import eom.symmetry
import eom.tree

ROOT = Path(__file__).resolve().parents[1]
INTERNALS = ("CompareState", "compare_chunks", "auto_tolerance", "grad_and_terms_fn")


def test_top_level_namespace_is_all():
    """Every public non-module name at the top is in `__all__` and vice versa (submodules such as
    `eom.internal` or `eom.cli` appear as attributes once someone imports them)."""
    public = {n for n in vars(eom) if not n.startswith("_")}
    objects = {n for n in public if not isinstance(getattr(eom, n), ModuleType)}
    assert objects == {n for n in eom.__all__ if not isinstance(getattr(eom, n), ModuleType)} - {
        "__version__"
    }
    for name in eom.__all__:
        assert hasattr(eom, name), name


def test_no_internals_at_the_top():
    names = set(dir(eom))
    assert not [n for n in names if n.startswith("check_")]
    assert not names & set(INTERNALS)


def test_internal_holds_the_building_blocks():
    for name in ("check_loss", "check_lr", "check_order", "check_params", *INTERNALS):
        assert callable(getattr(eom.internal, name)), name
    assert eom.internal.compare_chunks is eom.measure.compare_chunks


def test_sharding_and_tree_are_public():
    for name in ("data_parallel", "data_parallel_mean", "batch_mesh", "shard_batch"):
        assert callable(getattr(eom.sharding, name)), name
    for name in ("tree_norm", "tree_sub", "tree_add", "tree_dot", "tree_scale", "tree_size"):
        assert callable(getattr(eom.tree, name)), name


def test_symmetry_names_do_not_collide_with_packages():
    assert not hasattr(eom.symmetry, "measure")
    assert callable(eom.symmetry.measure_groups)
    subpackages = {n for n in eom.__all__ if isinstance(getattr(eom, n), type(eom))}
    assert not subpackages & set(vars(eom.symmetry))


#: `eom` followed by dotted names; a component starting with one underscore is private
#: (dunders such as `eom.__version__` are not).
_PATH = re.compile(r"\beom((?:\.\w+)+)")


def _private_paths(text: str) -> list[str]:
    bad = []
    for m in _PATH.finditer(text):
        parts = m.group(1).split(".")[1:]
        if any(p.startswith("_") and not p.startswith("__") for p in parts):
            bad.append("eom" + m.group(1))
    for m in re.finditer(r"^\s*from\s+eom(\.\w+)*\s+import\s+(.+)$", text, re.M):
        names = [n.strip(" ()").split(" as ")[0] for n in m.group(2).split(",")]
        bad += [n for n in names if n.startswith("_") and not n.startswith("__")]
    return bad


def test_private_path_detector_can_fail():
    assert _private_paths("from eom.engine._sharding import data_parallel")
    assert _private_paths("from eom import _tree")
    assert not _private_paths("from eom.sharding import data_parallel; eom.__version__")


def test_readme_and_examples_use_public_paths_only():
    files = [ROOT / "README.md", *sorted((ROOT / "examples").glob("*.py"))]
    files += sorted((ROOT / "examples").glob("*.md"))
    offenders = {
        str(f.relative_to(ROOT)): bad for f in files if (bad := _private_paths(f.read_text()))
    }
    assert not offenders, offenders
