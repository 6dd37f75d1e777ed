"""MkDocs hook: copy MathJax 3 (from the django-static-mathjax wheel, a plain copy of MathJax
3.2.2) into the built site, so the maths renders without any network access at build or view
time. Only the CommonHTML TeX bundle and its woff-v2 fonts are copied (~2 MB)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


def _mathjax_root() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "MathJax is not installed: pip install 'eom-dnn[docs]' (django-static-mathjax)."
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (root / "tex-chtml.js").is_file():
        raise RuntimeError(f"no tex-chtml.js under {root}; reinstall django-static-mathjax.")
    return root


def on_post_build(config, **kwargs) -> None:
    src = _mathjax_root()
    dst = Path(config["site_dir"]) / "assets" / "mathjax"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "tex-chtml.js", dst / "tex-chtml.js")
    fonts = Path("output") / "chtml" / "fonts" / "woff-v2"
    shutil.copytree(src / fonts, dst / fonts, dirs_exist_ok=True)
