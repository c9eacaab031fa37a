# Sourced by gpu_checks.sh and gpu_acceptance.sh (needs PYTHON and SCRIPT_NAME set): refuse with
# exit 2 and "nothing was run" where there is no NVIDIA GPU, driver or cuda-python, so neither
# script ever reports success for work that did not run on a GPU.

die() { echo "$SCRIPT_NAME: $*; nothing was run" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this script needs an NVIDIA GPU and driver"
nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi sees no GPU"
"$PYTHON" -c "import trtopt" 2>/dev/null || die "trtopt does not import with $PYTHON (pip install -e '.[torch,dev]' first)"
"$PYTHON" -c "from cuda.bindings import runtime" 2>/dev/null || "$PYTHON" -c "from cuda import cudart" 2>/dev/null \
  || die "cuda-python is not installed (pip install 'trtopt[cuda-cu12]' or 'trtopt[cuda-cu13]', matching the driver)"

show_gpu() { nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader; }
