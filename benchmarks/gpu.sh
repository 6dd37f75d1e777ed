#!/usr/bin/env bash
# The benchmark table, a ~1M-parameter `eom run` and a ResNet-18-sized CNN `eom run` on whatever
# device JAX sees (meant for a CUDA GPU: `pip install -e . "jax[cuda12]"`), as one Markdown file.
#
#   benchmarks/gpu.sh [--tiny] [OUT_DIR]        (default OUT_DIR: gpu-bench)
#
# --tiny (or EOM_BENCH_TINY=1): the same three steps at toy sizes, so the script runs anywhere
# (CPU, seconds) and the test suite keeps it working. Writes OUT_DIR/gpu-bench.md (the table),
# OUT_DIR/targets.{md,json} (the issue-14 targets), OUT_DIR/runs/* (the eom run folders) and
# prints the table. PYTHON selects the interpreter (default python3).
set -euo pipefail
tiny=${EOM_BENCH_TINY:-0}
if [[ "${1:-}" == "--tiny" ]]; then tiny=1; shift; fi
out=${1:-gpu-bench}
py=${PYTHON:-python3}
mkdir -p "$out/runs"

if [[ "$tiny" == 1 ]]; then
  bench_args=(--tiny)
  mlp=(--width 8 --depth 1 --subset 64 --steps 4 --orders 0,1 --record-every 2)
  cnn=(--model cnn --width 2 --depth 1 --subset 32 --steps 2 --orders 0,1 --record-every 1)
  quiet=(--diagnose-every 0 --no-predict)
else
  bench_args=(--targets-only)
  mlp=(--width 700 --depth 3 --orders 0,1 --steps 1000)            # ≈1.03M parameters
  cnn=(--model cnn --width 128 --depth 4 --orders 0,1 --steps 200)  # 8.3M params (ResNet-18: 11.2M)
  quiet=()
fi

"$py" -c "import jax; print('devices:', jax.devices())"
"$py" -m eom.bench "${bench_args[@]}" --out "$out/targets"

# One row per run: wall time, exit status, peak RSS of the child, parameter count.
run_row() {  # name, then eom run arguments
  local name=$1; shift
  "$py" - "$out" "$name" "$@" <<'PY'
import json, resource, subprocess, sys, time
out, name, args = sys.argv[1], sys.argv[2], sys.argv[3:]
import eom  # noqa: F401
from eom.problems import make_problem
opts = dict(zip(args[::2], args[1::2]))
kw = {k: int(opts[f"--{k}"]) for k in ("width", "depth") if f"--{k}" in opts}
sub = int(opts["--subset"]) if "--subset" in opts else None
n = make_problem(opts.get("--model", "mlp"), "digits", subset=sub, **kw).n_params
cmd = [sys.executable, "-m", "eom", "run", *args, "--out", f"{out}/runs/{name}", "--overwrite"]
t0 = time.perf_counter()
rc = subprocess.call(cmd)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # MiB (Linux: KiB)
try:
    res = json.load(open(f"{out}/runs/{name}/results.json"))
    wt = res.get("wall_time") or {}
    status = res.get("status", "?")
except OSError:
    wt, status = {}, "no results"
row = {"name": name, "params": n, "rc": rc, "status": status, "wall": wall,
       "setup": wt.get("setup"), "compare": wt.get("compare"), "peak_rss_mib": rss,
       "args": " ".join(args)}
with open(f"{out}/rows.jsonl", "a") as fh:
    fh.write(json.dumps(row) + "\n")
sys.exit(0)
PY
}

rm -f "$out/rows.jsonl"
run_row mlp-1m "${mlp[@]}" "${quiet[@]}"
run_row cnn-resnet18-size "${cnn[@]}" "${quiet[@]}"

"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
import eom.bench as b
m = b.machine_info()
rows = [json.loads(line) for line in open(f"{out}/rows.jsonl")]
fmt = lambda x: "—" if x is None else f"{x:.1f}"  # noqa: E731
lines = [f"# eom on {m['backend']} ({m['device_kind']}), {m['date']}", "",
         f"Devices: {', '.join(m['devices'])}; host {m['cpu']}, {m['nproc']} cores, "
         f"load {m['load_avg_1_5_15']}; jax {m['jax']}.", "", "## Targets", "",
         open(f"{out}/targets.md").read().strip(), "", "## Runs (`eom run`)", "",
         "| run | parameters | status | wall s | setup s (λ_max, tolerances) | compare s | "
         "peak RSS MiB | arguments |", "|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['name']} | {r['params']:,} | {r['status']} (rc {r['rc']}) | "
                 f"{fmt(r['wall'])} | {fmt(r['setup'])} | {fmt(r['compare'])} | "
                 f"{fmt(r['peak_rss_mib'])} | `{r['args']}` |")
open(f"{out}/gpu-bench.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
