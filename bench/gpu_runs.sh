#!/usr/bin/env bash
# Run a plan of mala trainings in parallel on one GPU machine, each tested on the real test sets.
#   python bench/compact_data.py --out .device/data     # once: a copy small enough to upload
#   bash bench/gpu_runs.sh bench/plans/explore.txt      # metrics and logs go to $OUT (default gpu_out)
# A plan line: NAME SECONDS MALA-TRAIN-ARGS...  (MT + metal_plate data and DTD textures are added)
set -u
PLAN=$1
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
D=.device/data
while read -r name budget args; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  ( timeout "$budget" python3 -m mala.cli train --data $D/magnetic_tile $D/metal_plate --textures $D/dtd --out /tmp/runs/$name $args > $OUT/$name.train.log 2>&1
    python3 -m mala.cli test --checkpoint /tmp/runs/$name/model.safetensors --data $D/magnetic_tile $D/metal_plate --device cuda --out $OUT/$name > $OUT/$name.test.log 2>&1
    cp /tmp/runs/$name/log.csv $OUT/$name.log.csv 2>/dev/null ) &
done < "$PLAN"
wait
for f in $OUT/*.test.log; do echo "== $f"; grep -E "^(magnetic_tile|metal_plate|mean) " $f; done
