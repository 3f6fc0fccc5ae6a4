#!/usr/bin/env bash
# The GPU checks as one prepared run, for a machine with CUDA: the tests marked `gpu` (each head and the
# CAM network with OCR under autocast, the OCR loss and its gradient on CUDA against the CPU, a GPU
# checkpoint resumed on the CPU), then the training-step benchmark at batch 16 and stage 2 on a synthetic
# VOC tree (images/s, the GPU's wait for data), then the natural-image benchmark (README, "A natural-image
# benchmark") at a larger scale: 800 training images of 192-320 px, DeepLab-v2 on ResNet-18 (random
# weights) trained on its pseudo-masks with cross-entropy alone and with OCR. Writes everything under
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
nat="$out/natural"
"$py" -m benchmarks.natural_images --out "$nat/data" --train 800 --val 200 --min-side 192 --max-side 320 \
  2>&1 | tee "$out/natural_data.txt"
for sel in none oc; do
  "$py" -m study.cli train "data.name=folder" "data.root=$nat/data" data.train_split=train data.val_split=val \
    data.crop_size=193 data.workers=8 stage1.source=masks "stage1.masks_dir=$nat/data/pseudo" \
    model.name=deeplab model.backbone=resnet18 model.output_stride=8 model.head=v2 model.freeze_bn=false \
    model.optimizer=sgd seg.init=scratch seg.lr=0.01 seg.weight_decay=1e-4 seg.batch_size=16 \
    seg.iterations=3000 seg.report_every=500 eval.final_scales=0.5,0.75,1,1.25,1.5 eval.final_flip=true \
    "ocr.selection=$sel" device=cuda amp=true threads=8 "cache_dir=$nat/cache" --out "$nat/train-$sel" \
    2>&1 | tee "$out/natural_train_$sel.txt"
done
exit "$status"
