#!/usr/bin/env bash
# The wheels benchmarks/gpu/run.sh installs on the GPU image (Python 3.12, no Keras, no
# TensorFlow, no network): Keras and what it needs beyond that image, and KerasHub for the peer,
# at the versions of constraints.txt, into .whl/ (git-ignored; the device tool's `carry`).
#
#   benchmarks/gpu/wheels.sh        # here, where pip reaches a package index
#   device run: command="OUT=$OUT benchmarks/gpu/run.sh --budget 470", carry=[".whl"]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
pin() { grep -i "^$1==" constraints.txt | head -1; }
packages=()
# pytest and its own requirements: the kernels task runs tests/test_kernels.py on the GPU.
for name in keras namex optree keras-hub kagglehub kagglesdk pytest pluggy iniconfig packaging; do
  spec="$(pin "$name")"
  [ -n "$spec" ] || { echo "wheels.sh: $name is not pinned in constraints.txt" >&2; exit 2; }
  packages+=("$spec")
done
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "${packages[@]}"
ls -1 .whl
