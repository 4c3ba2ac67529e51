#!/usr/bin/env bash
# GPU checks for TensorRT engines, in one command, on a machine with a CUDA GPU:
#
#   pip install -e '.[trt,test]'        # full TensorRT + cuda-python (TensorRT-RTX: '.[rtx]', not on Hopper)
#   scripts/gpu-check.sh [benchmark options, e.g. --df 1 0.3 --rounds 3 --iters 10]
#
# 1. says which TensorRT and GPU it found (and stops with exit 3 if there is none),
# 2. runs the GPU/TensorRT tests (pytest -m "gpu or tensorrt"): FP32/FP16 engines vs ONNX Runtime through
#    polygraphy, the engine backend, the real runtime refusing engines built for another GPU or corrupted,
#    timing cache, hardware-compatible and version-compatible builds,
# 3. benchmarks FP32/FP16 engine latency of the uncompressed TS-3mm network vs DF 0.3, side by side
#    (benchmarks/engine_latency.py; results also in engines/engine_latency.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python - <<'PY'
import sys
from tuckertrt.engines import engine_support
ok, reason = engine_support("trt")
print(("TensorRT: " if ok else "cannot run the engine GPU checks: ") + reason)
sys.exit(0 if ok else 3)
PY
python -m pytest -m "gpu or tensorrt" tests -q
python benchmarks/engine_latency.py --json engines/engine_latency.json "$@"
