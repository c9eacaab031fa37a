#!/usr/bin/env bash
# GPU acceptance for the TensorRT backend: run on a machine with an NVIDIA GPU and TensorRT.
#
#   scripts/gpu_acceptance.sh [WORKDIR]
#
# 1. checks the stack (nvidia-smi, the tensorrt package, cuda-python) and stops with a clear message
#    when any is missing: it never reports success where nothing ran on a GPU;
# 2. runs the GPU tests (pytest -m "tensorrt or cuda"), which must pass, not skip (SKIP_GPU_TESTS=1
#    leaves them to a caller that already ran them, as scripts/gpu_checks.sh does);
# 3. trains (1 epoch), exports and builds each zoo model at FP32, FP16 and INT8 with
#    `trtopt build --backend tensorrt`, benchmarks each engine, and prints one table:
#    model, precision, build seconds, engine MB, batch-1 median latency, throughput, accuracy vs FP32.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d -t trtopt-gpu-acceptance.XXXXXX)}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
MODELS="${MODELS:-lenet resnet18 mobilenetv2}"

SCRIPT_NAME=gpu_acceptance
# shellcheck source=scripts/gpu_preflight.sh
source "$ROOT/scripts/gpu_preflight.sh"
"$PYTHON" -c "import tensorrt" 2>/dev/null || die "the tensorrt Python package does not import (pip install 'trtopt[tensorrt-cu12]' or 'trtopt[tensorrt-cu13]')"

cd "$ROOT"
echo "== stack"
show_gpu
"$PYTHON" - <<'PY'
from trtopt.backends.select import select_backend
import tensorrt
print("tensorrt", tensorrt.__version__, "|", select_backend("auto")[1])
PY

mkdir -p "$WORK"
if [ "${SKIP_GPU_TESTS:-0}" = 1 ]; then
  echo "== GPU tests: not run here (SKIP_GPU_TESTS=1: the caller ran them)"
else
  echo "== GPU tests (must pass, not skip)"
  "$PYTHON" -m pytest -q -m "tensorrt or cuda" -rs tests/test_tensorrt_gpu.py tests/test_cuda_gpu.py tests/test_cuda_torch_gpu.py | tee "$WORK/gpu-tests.txt"
  if grep -q "skipped" "$WORK/gpu-tests.txt"; then
    echo "gpu_acceptance: some GPU tests were skipped (see the reasons above)" >&2
    exit 1
  fi
fi

echo "== pipeline per zoo model (work folder: $WORK)"
mkdir -p "$WORK/results"
for model in $MODELS; do
  "$PYTHON" -m trtopt -q train --model "$model" --dataset digits --epochs 1 --out "$WORK/$model" --json > "$WORK/results/$model-train.json"
  ckpt="$(ls "$WORK/$model"/*.pt | tail -n 1)"
  "$PYTHON" -m trtopt -q export "$ckpt" -o "$WORK/$model.onnx" --json > "$WORK/results/$model-export.json"
  for precision in fp32 fp16 int8; do
    flag=(); [ "$precision" = fp16 ] && flag=(--fp16); [ "$precision" = int8 ] && flag=(--int8 --calib-data digits)
    name="$model-$precision"
    "$PYTHON" -m trtopt -q build "$WORK/$model.onnx" "${flag[@]}" --backend tensorrt --name "$name" \
      --engines-dir "$WORK/engines" --timing-cache "$WORK/timing" --json > "$WORK/results/$name-build.json"
    "$PYTHON" -m trtopt -q bench "$WORK/engines/$name" --batch-sizes 1,32 --json "$WORK/results/$name-bench.json" > /dev/null
  done
done

"$PYTHON" - "$WORK/results" "$WORK/engines" <<'PY'
import json, sys
from pathlib import Path

results, engines = Path(sys.argv[1]), Path(sys.argv[2])

def find(data, *keys):
    """First value found under any of `keys`, searched depth-first (report layouts may nest)."""
    if isinstance(data, dict):
        for key in keys:
            if key in data:
                return data[key]
        for value in data.values():
            found = find(value, *keys)
            if found is not None:
                return found
    elif isinstance(data, list):
        for value in data:
            found = find(value, *keys)
            if found is not None:
                return found
    return None

print(f"{'engine':24} {'build s':>8} {'MB':>7} {'p50 b1 ms':>10} {'samples/s':>10} {'top1 agree':>10} {'cosine':>8}")
for build_file in sorted(results.glob("*-build.json")):
    name = build_file.name[: -len("-build.json")]
    build = json.loads(build_file.read_text())
    bench_file = results / f"{name}-bench.json"
    bench = json.loads(bench_file.read_text()) if bench_file.is_file() else {}
    engine_mb = sum(p.stat().st_size for p in (engines / name).glob("*.engine")) / 2**20
    values = [find(build, "build_seconds", "build_time_s"), engine_mb, find(bench, "median_ms", "median"),
              find(bench, "throughput", "samples_per_s"), find(build, "top1_agreement"), find(build, "cosine_similarity")]
    cells = [f"{v:.3f}" if isinstance(v, float) else str(v if v is not None else "-") for v in values]
    print(f"{name:24} {cells[0]:>8} {cells[1]:>7} {cells[2]:>10} {cells[3]:>10} {cells[4]:>10} {cells[5]:>8}")
PY
echo "== done: raw results in $WORK/results"
