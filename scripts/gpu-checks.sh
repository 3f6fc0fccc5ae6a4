#!/usr/bin/env bash
# The GPU checks as one prepared run, for a machine with CUDA: the tests marked `gpu` (each head and the
# CAM network with OCR under autocast, the OCR loss and its gradient on CUDA against the CPU, a GPU
# checkpoint resumed on the CPU), then the training-step benchmark at batch 16 and stage 2 on a synthetic
# VOC tree (images/s, the GPU's wait for data). Writes everything under
# ${OUT:-gpu-checks}/ (pytest's report, the benchmarks' tables, nvidia-smi). Exits non-zero when a test fails.
set -uo pipefail
out="${OUT:-gpu-checks}"
py="${PYTHON:-.venv/bin/python}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA here'; print(torch.__version__, torch.cuda.get_device_name())" \
  | tee "$out/torch.txt" || exit 2
"$py" -m pytest -q -m gpu -rA tests/pipelines/test_models_gpu.py --junitxml="$out/gpu-tests.xml" 2>&1 | tee "$out/gpu-tests.txt"
status=${PIPESTATUS[0]}
"$py" -m benchmarks.network_step --device cuda --batch 16 --repeats 10 2>&1 | tee "$out/network_step.txt"
"$py" -m benchmarks.stage2_epoch --device cuda --batch 16 --iterations 30 --workers 8 --threads 8 2>&1 \
  | tee "$out/stage2_epoch.txt"
exit "$status"
