#!/usr/bin/env bash
# One GPU session's checks, as run on a lent NVIDIA machine (H100/H200 with PyTorch + CUDA, no
# TensorRT, no onnxruntime-gpu): the GPU tests, the per-graph PyTorch benchmark at the small and
# full-size geometry, and `medsam3-rt bench` of a small export with the transformers baseline on
# the same GPU. Results go to $OUT (default /tmp/medsam3-gpu-out); benchmarks/results/ holds the
# recorded ones. Every step has its own time limit and the script goes on after a failure, so
# one lease gives every answer it can.
#
#   OUT=/tmp/out bash benchmarks/gpu_session.sh
#
# Time limits per step: TEST_TIMEOUT, COMPILE_TEST_TIMEOUT, FULL_TIMEOUT, SMALL_TIMEOUT, EXPORT_TIMEOUT, BENCH_TIMEOUT (seconds);
# BENCH=0 skips the small export + `medsam3-rt bench` (the per-graph script has its own baseline).
#
# Missing Python packages can be put as wheels in .whl/ (see benchmarks/README.md): they are
# installed with --no-deps into /tmp/site first.
set -uo pipefail
OUT=${OUT:-/tmp/medsam3-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
step() { echo "=== $(date -u +%H:%M:%S) $*"; }

if [ -d .whl ]; then
  step "installing carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
step "installing medsam3-rt (editable, no dependencies)"
$PY -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -2
BIN=$($PY -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$BIN:$PATH"

step "environment"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY - <<'EOF'
import platform, numpy, onnxruntime, torch, transformers
print(f"python {platform.python_version()} torch {torch.__version__} (CUDA {torch.version.cuda}) transformers {transformers.__version__} "
      f"onnxruntime {onnxruntime.__version__} providers {onnxruntime.get_available_providers()} numpy {numpy.__version__}")
print("cuda available:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
  nproc
} 2>&1 | tee "$OUT/environment.txt"

step "GPU tests (torch on CUDA; TensorRT / onnxruntime-gpu ones skip with their reason)"
# torch.compile tests last: each compile takes ~15-40 s, and a limit should cut them, not the rest.
GPU_TESTS="tests/gpu/test_gpu_real.py tests/export/test_torch_backend.py"
timeout "${TEST_TIMEOUT:-180}" $PY -m pytest -q -rs -p no:cacheprovider $GPU_TESTS -k "not True and not compiled" 2>&1 \
  | tee "$OUT/gpu-tests.log" | tail -25
step "GPU tests with torch.compile"
timeout "${COMPILE_TEST_TIMEOUT:-120}" $PY -m pytest -q -rs -p no:cacheprovider $GPU_TESTS -k "True or compiled" 2>&1 \
  | tee "$OUT/gpu-tests-compile.log" | tail -25

step "per-graph PyTorch benchmark: full-size geometry (848 M parameters, 1008 px)"
timeout "${FULL_TIMEOUT:-150}" $PY benchmarks/gpu_torch_graphs.py --preset full --runs 10 \
  --output "$OUT/gpu-torch-graphs-full.json" > "$OUT/gpu-torch-graphs-full.log" 2>&1; tail -25 "$OUT/gpu-torch-graphs-full.log"

step "per-graph PyTorch benchmark: small (eager fp32, bf16, bf16 + torch.compile)"
timeout "${SMALL_TIMEOUT:-90}" $PY benchmarks/gpu_torch_graphs.py --preset small --compile --runs 20 \
  --output "$OUT/gpu-torch-graphs-small.json" > "$OUT/gpu-torch-graphs-small.log" 2>&1; tail -25 "$OUT/gpu-torch-graphs-small.log"

if [ "${BENCH:-1}" = 0 ]; then step "done (BENCH=0: no export + bench)"; exit 0; fi
step "medsam3-rt bench: small export, torch (bf16, CUDA) and ort-cpu vs transformers eager fp32 on the GPU"
if timeout "${EXPORT_TIMEOUT:-240}" medsam3-rt export small --random --output /tmp/small-export > "$OUT/export-small.log" 2>&1; then
  timeout "${BENCH_TIMEOUT:-90}" medsam3-rt bench /tmp/small-export --backend torch --backend ort-cpu --baseline on \
    --baseline-device cuda --rounds 10 --frames 8 --json "$OUT/bench-small.json" --markdown "$OUT/bench-small.md" 2>&1 | tail -30
else
  tail -5 "$OUT/export-small.log"
fi
step "done"
