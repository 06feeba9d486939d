#!/usr/bin/env bash
# Build the horovod 0.28.1 wheel once (Gloo, no MPI) for the installed torch and, when importable,
# TensorFlow; cache it (in $DMLOPS_WHEEL_CACHE, default ~/.cache/dmlops/wheels) and install it. Running it
# again, from any clone on the same machine, reuses the cached wheel.
#
#   scripts/build_horovod.sh [PYTHON]      (default: .venv/bin/python)
#
# horovod 0.28.1 is the last release; against torch 2.x and TensorFlow 2.21 it compiles only as C++17,
# so CMAKE_CXX_STANDARD is patched to 17 in its CMakeLists.txt files before building. Its XLA custom-call
# ops (xla_mpi_ops.cc, for XLA-compiled GPU graphs) need headers the TensorFlow wheel no longer ships
# (highwayhash), so they are left out of the build.
set -euo pipefail

VERSION=0.28.1
# The sha256 of horovod-0.28.1.tar.gz as PyPI serves it: the download is checked against it.
SDIST_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${1:-$ROOT/.venv/bin/python}
WHEELS=${DMLOPS_WHEEL_CACHE:-$HOME/.cache/dmlops/wheels}
mkdir -p "$WHEELS"

frameworks=torch
if "$PYTHON" -c "import tensorflow" >/dev/null 2>&1; then
  frameworks=torch-tf
fi
# The wheel name does not say which frameworks it was built for; a marker file beside it does.
marker=$WHEELS/horovod-$VERSION.$frameworks.built
# A wheel built for both frameworks serves a torch-only environment too.
if [ "$frameworks" = torch ] && [ -f "$WHEELS/horovod-$VERSION.torch-tf.built" ]; then
  marker=$WHEELS/horovod-$VERSION.torch-tf.built
fi
wheel=$(ls "$WHEELS"/horovod-$VERSION-*.whl 2>/dev/null | head -n 1 || true)

if [ -z "$wheel" ] || [ ! -f "$marker" ]; then
  rm -f "$WHEELS"/horovod-$VERSION-*.whl "$WHEELS"/horovod-$VERSION.*.built
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "horovod==$VERSION --hash=sha256:$SDIST_SHA256" > "$work/horovod.txt"
  "$PYTHON" -m pip download --require-hashes --no-build-isolation --no-binary :all: --no-deps -d "$work" \
    -r "$work/horovod.txt"
  tar -xzf "$work"/horovod-$VERSION.tar.gz -C "$work"
  src=$work/horovod-$VERSION
  for cmakelists in "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt" \
                    "$src/horovod/tensorflow/CMakeLists.txt"; do
    sed -i -E 's/CMAKE_CXX_STANDARD [0-9]+/CMAKE_CXX_STANDARD 17/' "$cmakelists"
  done
  sed -i '/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
  with_tf=HOROVOD_WITHOUT_TENSORFLOW
  [ "$frameworks" = torch-tf ] && with_tf=HOROVOD_WITH_TENSORFLOW
  echo "building horovod $VERSION for $frameworks (a few minutes)"
  env HOROVOD_WITH_PYTORCH=1 "$with_tf=1" HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1 \
      HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
      "$PYTHON" -m pip wheel --no-build-isolation --no-deps -w "$WHEELS" "$src"
  wheel=$(ls "$WHEELS"/horovod-$VERSION-*.whl | head -n 1)
  touch "$marker"
fi

if ! "$PYTHON" -c "import horovod, sys; sys.exit(horovod.__version__ != '$VERSION')" >/dev/null 2>&1; then
  "$PYTHON" -m pip install "$wheel"
fi
echo "horovod $VERSION ($frameworks): $wheel"
