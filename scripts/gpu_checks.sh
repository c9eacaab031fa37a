#!/usr/bin/env bash
# The device check: everything about trtopt's CUDA and TensorRT layers that only a GPU can settle,
# in one run of at most 10 minutes.
#
#   scripts/gpu_checks.sh [WORKDIR]
#
# 1. refuses (exit 2) when there is no NVIDIA GPU, driver or cuda-python: nothing is reported as
#    passed where nothing ran;
# 2. the CUDA layer without TensorRT: tests/test_cuda_gpu.py (cuda-python only: buffers, streams,
#    CUDA graphs replayed for alternating batch 1/4/1/4 against a plain run) and
#    tests/test_cuda_torch_gpu.py (with a CUDA build of PyTorch: a misaligned torch input,
#    torch.empty(n + 1)[1:], through an aligned buffer, and a producer race, a long torch kernel
#    writing the input, read at once, compared with the tensor after synchronizing, for DLPack, a
#    streamless interface and a stream-stating interface);
# 3. where TensorRT imports: the TensorRT GPU tests (tests/test_tensorrt_gpu.py) and
#    scripts/gpu_acceptance.sh for the models in $MODELS (default: lenet), within what is left of
#    the 10 minutes. Without TensorRT this part is reported as NOT RUN.
# Ends with one line per part (PASS / FAIL / NOT RUN); exit 0 only when every part that ran passed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d -t trtopt-gpu-checks.XXXXXX)}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
BUDGET="${BUDGET_SECONDS:-570}"  # the whole run, under 10 minutes
MODELS="${MODELS:-lenet}"
START=$SECONDS

left() { echo $(( BUDGET - (SECONDS - START) )); }

SCRIPT_NAME=gpu_checks
# shellcheck source=scripts/gpu_preflight.sh
source "$ROOT/scripts/gpu_preflight.sh"

cd "$ROOT"
mkdir -p "$WORK"
echo "== stack"
show_gpu
"$PYTHON" - <<'PY'
from trtopt.cuda.device import probe_devices
from trtopt.cuda.stack import detect_stack, driver_cuda_text, stack_problems

stack = detect_stack()
driver = driver_cuda_text(stack.driver_cuda_version) if stack.driver_cuda_version else "?"
print(f"cuda-python {stack.cuda_python}, driver CUDA {driver}, TensorRT wheels for CUDA {sorted(stack.tensorrt_cuda_majors) or '?'}")
for problem in stack_problems(stack):
    print("stack problem:", problem)
count, why = probe_devices()
print(f"CUDA devices: {count}" + (f" ({why})" if why else ""))
try:
    import torch
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
except ImportError:
    print("torch: not installed (the CUDA-layer tests that use it will be skipped, and this check fails)")
PY

declare -A RESULT
run_part() {  # name, seconds, command...: PASS only when it exits 0 and skipped nothing
  local name="$1" seconds="$2"; shift 2
  local log="$WORK/$name.log"
  if [ "$seconds" -lt 30 ]; then RESULT[$name]="NOT RUN (out of time)"; return; fi
  echo "== $name (at most ${seconds}s)"
  timeout "$seconds" "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  if [ "$status" -eq 124 ]; then RESULT[$name]="FAIL (timed out after ${seconds}s)"
  elif [ "$status" -ne 0 ]; then RESULT[$name]="FAIL (exit $status)"
  elif grep -qE "[0-9]+ skipped" "$log"; then RESULT[$name]="FAIL (tests skipped: see the reasons in $log)"
  else RESULT[$name]="PASS"; fi
}

run_part cuda-layer 90 "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m cuda tests/test_cuda_gpu.py
run_part torch-interop 120 "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m cuda tests/test_cuda_torch_gpu.py
ORDER=(cuda-layer torch-interop tensorrt-tests acceptance)
if "$PYTHON" -c "import tensorrt" 2>/dev/null; then
  run_part tensorrt-tests "$(( $(left) > 240 ? 240 : $(left) ))" \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m tensorrt tests/test_tensorrt_gpu.py
  run_part acceptance "$(( $(left) - 10 ))" env MODELS="$MODELS" PYTHON="$PYTHON" SKIP_GPU_TESTS=1 bash scripts/gpu_acceptance.sh "$WORK/acceptance"
else
  RESULT[tensorrt-tests]="NOT RUN (the tensorrt package does not import here)"
  RESULT[acceptance]="NOT RUN (the tensorrt package does not import here)"
fi

echo "== summary ($(( SECONDS - START ))s, logs in $WORK)"
failed=0
for name in "${ORDER[@]}"; do
  echo "$name: ${RESULT[$name]}"
  case "${RESULT[$name]}" in FAIL*) failed=1 ;; esac
done
exit $failed
