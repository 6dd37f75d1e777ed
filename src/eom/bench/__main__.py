"""`python -m eom.bench [--tiny | --quick] [--targets-only] [--out PATH]`: the benchmark tables.

`--tiny` runs only the targets table at smoke-test size (seconds; used by `benchmarks/gpu.sh
--tiny` and the tests); `--quick` the quick benchmark; neither: the full one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    # float64 is on: `python -m eom.bench` imports the parent package `eom` before this module
    # (an explicit `import eom` here would reach up into eom.report through the top level).
    from . import TargetSettings, format_table, format_targets, machine_info, run_bench, run_targets

    p = argparse.ArgumentParser(prog="python -m eom.bench", description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="targets only, smoke-test sizes")
    p.add_argument("--quick", action="store_true", help="the quick benchmark")
    p.add_argument("--targets-only", action="store_true", help="only the targets table")
    p.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {line}", file=sys.stderr, flush=True)

    if args.tiny or args.targets_only:
        settings = (TargetSettings.tiny() if args.tiny else
                    TargetSettings.quick() if args.quick else TargetSettings.full())  # fmt: skip
        machine = machine_info()
        rows = run_targets(settings, log=log)
        m = machine
        secs = time.perf_counter() - t0
        table = (f"{format_targets(rows)}\n\nMachine: {m['cpu']}, {m['nproc']} cores, "
                 f"{m['backend']} ({m['device_kind']}), jax {m['jax']}, load "
                 f"{m['load_avg_1_5_15']}, {m['date']}; {secs:.0f} s.")  # fmt: skip
        payload = {"machine": machine, "targets": [dict(dataclasses.asdict(r),
                   passed=r.passed) for r in rows]}  # fmt: skip
    else:
        report = run_bench(args.quick, log=log)
        table = format_table(report)
        payload = {
            "machine": report.machine, "settings": report.settings,
            "rows": [dataclasses.asdict(r) for r in report.rows],
            "targets": [dict(dataclasses.asdict(r), passed=r.passed) for r in report.targets],
        }  # fmt: skip
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
