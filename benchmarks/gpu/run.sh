#!/usr/bin/env bash
# The accelerator proof in one call (see bench.py): installs the wheels it brings along
# (.whl/, fetched by benchmarks/gpu/wheels.sh: Keras and what it needs that the GPU image
# lacks, KerasHub for the peer, pytest for the kernels task) into a temporary folder when this Python lacks them, puts this
# checkout on the path, and runs every check and measurement within the time budget.
# Results: $OUT/h200.json, $OUT/table.md, $OUT/log.txt.
#
#   benchmarks/gpu/run.sh                 # on the GPU machine (device tool: carry .whl)
#   benchmarks/gpu/run.sh --dry-run       # anywhere: tiny shapes, CPU
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-results}"
PYTHON="${PYTHON:-python3}"
has='import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ("keras", "keras_hub", "pytest"))))'
if ! "$PYTHON" -c "$has" && compgen -G ".whl/*.whl" > /dev/null; then
  site="$(mktemp -d)/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,memory.used --format=csv
exec "$PYTHON" benchmarks/gpu/bench.py --out "$OUT" "$@"
