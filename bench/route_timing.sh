#!/bin/bash
# Routed inference speed of two checkouts of mala on one model, alternating, three rounds (`mala cost`: batch 1,
# random images, median of 15 forwards). Usage: bench/route_timing.sh OLD_TREE NEW_TREE MODEL
# e.g. git worktree add ../old fa6a673 && bench/route_timing.sh ../old . runs/s124_seed2/model.safetensors
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); model=$(realpath "$3")
for round in 1 2 3; do
  for tree in "$old" "$new"; do
    echo "round $round: $tree"
    (cd "$tree" && python -c "import sys; from mala.cli import main; sys.exit(main(sys.argv[1:]))" \
      cost --checkpoint "$model" --repeats 15 | grep -F -- "$model" | tail -1)
  done
done
