#!/usr/bin/env bash
# The whole path on a GPU machine, one line per step: the environment, `tiny` trained on 1 GPU (32-bit, then
# bf16-mixed), on 2 GPUs as 2 DDP processes, then test, calibrate, ONNX export, and predict with the ONNX file
# (onnxruntime) and with the checkpoint on the GPU, whose scores must agree.
#   bash bench/gpu_check.sh [OUT]        # prints PASS/FAIL/SKIP STEP (log) lines and a summary; exit 1 if any failed
# Each step's output goes to OUT/STEP.log (OUT: the argument, else $OUT, else /tmp/gpu_check). Settings (environment):
#   DATA=../shared/data beside the checkout (metal_plate and magnetic_tile in it), TEXTURES=$DATA/dtd/images,
#   ACCELERATOR=cuda (cpu: the same path on this CPU, as a smoke test), EPOCHS=2, IMAGES=16 (stage-2 images per
#   category and epoch), SETTINGS="" (more SECTION.KEY=VALUE for every training), BF16=1 (0: skip that training),
#   DDP=auto (2 processes when there are 2+ GPUs; 1: always, gloo on a CPU; 0: never),
#   PREDICT_INPUT=$DATA/metal_plate/test
#   ACCELERATOR=cpu EPOCHS=1 IMAGES=8 SETTINGS=model.image_size=64 bash bench/gpu_check.sh   # a CPU smoke test
set -u
source "$(dirname "$0")/gpu_env.sh"
OUT=${1:-${OUT:-/tmp/gpu_check}}
DATA=${DATA:-$ROOT/../shared/data}
TEXTURES=${TEXTURES:-$DATA/dtd/images}
ACCELERATOR=${ACCELERATOR:-cuda}
EPOCHS=${EPOCHS:-2}
IMAGES=${IMAGES:-16}
SETTINGS=${SETTINGS:-}
BF16=${BF16:-1}
DDP=${DDP:-auto}
PREDICT_INPUT=${PREDICT_INPUT:-$DATA/metal_plate/test}
DEVICE=$([ "$ACCELERATOR" = cpu ] && echo cpu || echo cuda)  # the torch device of test, calibrate and predict
CATEGORIES=("$DATA/metal_plate" "$DATA/magnetic_tile")
MODEL=$OUT/run/model.safetensors
mkdir -p "$OUT"
rm -rf "$OUT"/run* "$OUT"/test "$OUT"/model.onnx "$OUT"/predict_*  # no step may pass on an earlier check's files
PASSED=0 FAILED=0 SKIPPED=0

mala() { python3 -m mala.cli "$@"; }  # this checkout's (gpu_env.sh), whatever `mala` is installed

last_line() {  # the log's last non-empty line, shortened: most often `mala: error: ...` or a Python exception
  grep -v '^[[:space:]]*$' "$1" | tail -n 1 | cut -c 1-200
}

step() {  # step NAME COMMAND...: runs COMMAND with its output in OUT/NAME.log and says PASS or FAIL
  local name=$1 log=$OUT/$1.log started=$SECONDS
  shift
  if "$@" > "$log" 2>&1; then
    PASSED=$((PASSED + 1)); echo "PASS $name ($((SECONDS - started)) s, $log)"
  else
    local status=$?
    FAILED=$((FAILED + 1)); echo "FAIL $name (exit $status: $(last_line "$log"); $log)"
  fi
}

skip() {  # skip NAME REASON
  SKIPPED=$((SKIPPED + 1)); echo "SKIP $1 ($2)"
}

step_on_model() {  # step_on_model NAME COMMAND...: `step`, or SKIP when training wrote no model
  if [ -f "$MODEL" ]; then step "$@"; else skip "$1" "no $MODEL from step train"; fi
}

environment() {
  if [ "$ACCELERATOR" != cpu ]; then nvidia-smi || return; fi
  python3 - "$ACCELERATOR" <<'EOF'
import sys

import lightning_fabric
import onnxruntime
import torch

import mala

accelerator = sys.argv[1]
print(f"mala from {mala.__file__}; torch {torch.__version__}, lightning_fabric {lightning_fabric.__version__}, "
      f"onnxruntime {onnxruntime.__version__}")
count = torch.cuda.device_count()
print(f"cuda available: {torch.cuda.is_available()}, {count} device(s): "
      f"{[torch.cuda.get_device_name(i) for i in range(count)]}")
if accelerator != "cpu" and not (torch.cuda.is_available() and count > 0):
    sys.exit(f"no CUDA device for ACCELERATOR={accelerator}")
EOF
}

train() {  # train RUN_DIR [FLAGS...]: `tiny` on the two categories, EPOCHS stage-2 epochs of IMAGES per category
  local out=$1
  shift
  local settings=(stage2.epochs="$EPOCHS" stage2.images_per_category="$IMAGES"
                  stage2.anomalous_per_category=$((IMAGES / 2)) $SETTINGS)
  mala train --config tiny --data "${CATEGORIES[@]}" --textures "$TEXTURES" --out "$out" \
    --accelerator "$ACCELERATOR" "${settings[@]/#/--set=}" "$@"
}

scores_agree() {  # the ONNX file's scores and decisions are the checkpoint's, image by image
  python3 - "$OUT/predict_onnx/results.csv" "$OUT/predict_checkpoint/results.csv" <<'EOF'
import csv
import sys

onnx, checkpoint = ({row["image"]: row for row in csv.DictReader(open(path))} for path in sys.argv[1:])
if onnx.keys() != checkpoint.keys() or not onnx:
    sys.exit(f"different or no images: {len(onnx)} with ONNX, {len(checkpoint)} with the checkpoint")
failed = [name for name, row in onnx.items() if row["status"] != "ok" or checkpoint[name]["status"] != "ok"]
if failed:
    sys.exit(f"{len(failed)} images failed, e.g. {failed[0]}")
gaps = {name: abs(float(row["score"]) - float(checkpoint[name]["score"])) / max(abs(float(row["score"])), 1e-6)
        for name, row in onnx.items()}
worst = max(gaps, key=gaps.get)
decisions = sum(row["decision"] == checkpoint[name]["decision"] for name, row in onnx.items())
print(f"{len(onnx)} images: largest relative score gap {gaps[worst]:.2e} ({worst}), {decisions} same decisions")
if gaps[worst] > 1e-2:  # TF32 and kernel choices on the GPU move scores by about 1e-3
    sys.exit(f"scores differ: {gaps[worst]:.2e} relative on {worst}")
if decisions < len(onnx) - 1:  # calibrated on these images, the threshold is one image's score: it may tip either way
    sys.exit(f"decisions differ on {len(onnx) - decisions} images")
EOF
}

GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
echo "gpu_check: accelerator $ACCELERATOR, $GPUS GPU(s), data $DATA, logs in $OUT"
STARTED=$SECONDS

step environment environment
step train train "$OUT/run" --devices 1
if [ "$BF16" = 1 ]; then
  step train_bf16 train "$OUT/run_bf16" --devices 1 --precision bf16-mixed
else
  skip train_bf16 "BF16=0"
fi
if [ "$DDP" = 1 ] || { [ "$DDP" = auto ] && [ "$GPUS" -ge 2 ]; }; then
  step train_ddp train "$OUT/run_ddp" --devices 2 --strategy ddp
else
  skip train_ddp "DDP=$DDP, $GPUS GPU(s)"
fi
step_on_model test mala test --checkpoint "$MODEL" --data "${CATEGORIES[@]}" --device "$DEVICE" --out "$OUT/test" \
  --figures 1
step_on_model calibrate mala calibrate --checkpoint "$MODEL" --data "${CATEGORIES[@]}" --device "$DEVICE"
step_on_model export mala export --checkpoint "$MODEL" --out "$OUT/model.onnx"
if [ -f "$OUT/model.onnx" ]; then
  step predict_onnx mala predict --model "$OUT/model.onnx" --input "$PREDICT_INPUT" --out "$OUT/predict_onnx"
else
  skip predict_onnx "no $OUT/model.onnx from step export"
fi
step_on_model predict_checkpoint mala predict --model "$MODEL" --device "$DEVICE" --input "$PREDICT_INPUT" \
  --out "$OUT/predict_checkpoint"
if [ -f "$OUT/predict_onnx/results.csv" ] && [ -f "$OUT/predict_checkpoint/results.csv" ]; then
  step scores_agree scores_agree
else
  skip scores_agree "a predict step wrote no results.csv"
fi

echo "gpu_check: $PASSED passed, $FAILED failed, $SKIPPED skipped in $((SECONDS - STARTED)) s (logs in $OUT)"
[ "$FAILED" -eq 0 ]
