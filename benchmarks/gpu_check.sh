#!/usr/bin/env bash
# One call on a lent GPU machine (at most 8 minutes): the CUDA tests, then the GPU benchmarks.
# The machine has torch but not mlxtend: carry its wheel in .whl/ (see benchmarks/RESULTS.md).
# Writes nvidia-smi.txt, cuda_tests.txt, gpu_bench.md/.json and gpu_bench.log under $OUT.
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/nvidia-smi.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt"
timeout 270 python3 benchmarks/gpu_bench.py --out "$OUT/gpu_bench.md" 2>&1 | tee "$OUT/gpu_bench.log"
echo "gpu_check finished"
