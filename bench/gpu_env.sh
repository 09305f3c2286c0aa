# Sourced by the bench scripts that run on a GPU machine: this checkout's mala on PYTHONPATH, unbuffered output, and
# the standalone `lightning_fabric` name that mala imports (the GPU image has only the `lightning` bundle).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! python3 -c "import lightning_fabric" 2>/dev/null; then
  mkdir -p /tmp/shim/lightning_fabric
  echo "from lightning.fabric import *" > /tmp/shim/lightning_fabric/__init__.py
  export PYTHONPATH=$PYTHONPATH:/tmp/shim
fi
