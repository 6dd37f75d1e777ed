"""Run the eom benchmark and write its table (Markdown) and rows (JSON).

    python benchmarks/run_bench.py --quick          # a few minutes on 2 cores
    python benchmarks/run_bench.py                  # full: digits MLP (26k) and CNN (105k)
    python benchmarks/run_bench.py --out results    # files: results.md, results.json

Every number is a ratio measured in this one run (see `eom.bench`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import eom  # noqa: F401  (float64)
from eom.bench import format_table, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, few repeats")
    parser.add_argument("--eta-lambda", type=float, default=0.25, help="lr·λ_max(H(θ0))")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {line}", file=sys.stderr, flush=True)

    report = run_bench(args.quick, eta_lambda=args.eta_lambda, log=log)
    table = format_table(report)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(table + "\n")
        payload = {
            "rows": [dataclasses.asdict(r) for r in report.rows],
            "machine": report.machine,
            "settings": report.settings,
            "seconds": report.seconds,
        }
        args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
