#!/usr/bin/env bash
# MT + metal_plate runs in parallel on one GPU machine; metrics and logs go to $OUT (or ./gpu_out).
# Prepare the data first: python bench/compact_data.py --out .device/data
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import lightning_fabric" 2>/dev/null || { mkdir -p /tmp/shim/lightning_fabric; echo "from lightning.fabric import *" > /tmp/shim/lightning_fabric/__init__.py; export PYTHONPATH=$PYTHONPATH:/tmp/shim; }
nvidia-smi --query-gpu=name,memory.used --format=csv
python3 -c "import torch, lightning_fabric; print(torch.__version__, torch.cuda.is_available())"
D=.device/data; T=$D/dtd
run() {  # name, budget seconds, extra args...
  local name=$1 budget=$2; shift 2
  ( timeout $budget python3 -m mala.cli train --data $D/magnetic_tile $D/metal_plate --textures $T --out /tmp/runs/$name "$@" > $OUT/$name.train.log 2>&1
    python3 -m mala.cli test --checkpoint /tmp/runs/$name/model.safetensors --data $D/magnetic_tile $D/metal_plate --device cuda --out $OUT/$name > $OUT/$name.test.log 2>&1
    cp /tmp/runs/$name/log.csv $OUT/$name.log.csv 2>/dev/null ) &
}
run tiny_preset 400 --config tiny --set run.num_workers=3
run tiny_long 400 --config tiny --set stage1.epochs=200 --set stage1.warmup_epochs=10 --set stage2.epochs=200 --set run.num_workers=3 --set run.checkpoint_every=50
run tiny_nostage1 400 --config tiny --set stage1.enabled=false --set stage2.epochs=200 --set run.num_workers=3 --set run.checkpoint_every=50
run base_long 400 --config base --set stage1.epochs=100 --set stage1.warmup_epochs=10 --set stage2.epochs=150 --set run.num_workers=4 --set run.checkpoint_every=50
( timeout 400 python3 -c "
from pathlib import Path
from mala.demo import run_demo
import json
r = run_demo(Path('/tmp/demo'), minutes=40)
print(json.dumps(r, indent=1))
" > $OUT/demo_long.log 2>&1; cp /tmp/demo/run/log.csv $OUT/demo_long.log.csv ) &
wait
for f in $OUT/*.test.log; do echo "== $f"; grep -v "img/s\|it/s\|batch/s" $f | tail -5; done
tail -8 $OUT/demo_long.log
