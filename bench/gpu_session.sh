#!/usr/bin/env bash
# One GPU session, prepared to run as it is on a lent device (no network; random-init configs and synthetic images
# only): the engine's CUDA tests, then bench/gpu_throughput.py at full size (ViT-B/16, 224 px, batch 128). Results
# go to $OUT (the device tool's folder) or bench/results. About 6 minutes on one H100 is the plan; it has not run
# yet (no device was lent to issue 24).
#   bash bench/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 CLDASH_CACHE="${CLDASH_CACHE:-$(mktemp -d)}"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
# the CUDA tests (the tiny bf16 / fp16 runs) and the engine's own tests with a GPU present
timeout 180 python -m pytest tests/engine -q -n 0 -p no:cacheprovider 2>&1 | tee "$out/engine_tests_cuda.log" | tail -5
timeout 420 python bench/gpu_throughput.py --size full 2>&1 | tee "$out/gpu_throughput.log" | tail -40
cp bench/results/gpu_throughput_cuda_full.json "$out/" 2>/dev/null || true
