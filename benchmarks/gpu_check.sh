#!/usr/bin/env bash
# What one lent GPU session runs, in one call: the CUDA tests (tests/engine/test_gpu.py), then the StarCoder-15B-architecture
# benchmark on a 16-turn wave (both paths) and a 64-turn wave (the optimised path, once per count of guessed tokens
# in $GUESSES, default "0 4"). With STATIC=1 (issue 25) it runs instead: the decode-step check (eager forward against a
# captured replay at 128 rows), the CUDA tests, the 16-turn wave with (b) eager and (s) static cache + CUDA graphs in
# the same process, and the 64-turn wave the same way. Needs .state/gpu_inputs and .state/gpu_inputs64 (`benchmarks/gpu_starcoder.py --prepare DIR [--turns 64]` where the package is installed) and,
# where the machine's transformers is older than 5.24, its wheel (and rapidfuzz's, for the tests) in .whl/.
# Logs and JSON reports go to $OUT (default gpu_out/).
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv | tee "$out/smi.csv"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
if [ "${STATIC:-0}" = 1 ]; then
  timeout 150 python3 benchmarks/gpu_decode_step.py --out "$out/gpu_step.json" 2>&1 | tee "$out/step.log" | tail -25
  timeout 200 python3 -m pytest -m gpu -s -p no:cacheprovider tests/engine/test_gpu.py 2>&1 | tee "$out/gpu_tests.log" | tail -40
  timeout 200 python3 benchmarks/gpu_starcoder.py --inputs .state/gpu_inputs --paths b,s --out "$out/gpu_static_16.json" 2>&1 \
    | tee "$out/static_16.log" | tail -20
  timeout 150 python3 benchmarks/gpu_starcoder.py --inputs .state/gpu_inputs64 --paths b,s --out "$out/gpu_static_64.json" 2>&1 \
    | tee "$out/static_64.log" | tail -20
  exit 0
fi
timeout 200 python3 -m pytest -m gpu -s -p no:cacheprovider tests/engine/test_gpu.py 2>&1 | tee "$out/gpu_tests.log" | tail -40
timeout 270 python3 benchmarks/gpu_starcoder.py --inputs .state/gpu_inputs --out "$out/gpu_bench_16.json" 2>&1 \
  | tee "$out/bench_16.log" | tail -16
for guesses in ${GUESSES:-0 4}; do
  timeout 100 python3 benchmarks/gpu_starcoder.py --inputs .state/gpu_inputs64 --paths b --guess-tokens $guesses \
    --out "$out/gpu_bench_64_guess$guesses.json" 2>&1 | tee "$out/bench_64_guess$guesses.log" | tail -15
done
