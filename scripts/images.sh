#!/usr/bin/env bash
# Build the five dmlops images (base, torch-horovod CPU, tf-horovod, serve, spark) from this tree, tagged as the
# compiled components name them: $REGISTRY/<name>:<package version> (default ghcr.io/dmlops, see
# src/dmlops/images.py). What `make images` runs.
#
#   scripts/images.sh [NAME...]   (default: base torch-horovod tf-horovod serve spark; torch-horovod-cuda builds
#                                  the CUDA variant, <version>-cuda, from nvidia/cuda images)
#
# It brings up what the machine lacks, so the same command works on a laptop with Docker Hub and on a
# machine without a registry behind a TLS-intercepting proxy:
# - no Docker engine: as root, installs Debian's docker.io and starts dockerd (log: /var/log/dmlops-dockerd.log);
# - no buildx plugin: builds with a client that has BuildKit built in (Debian's /usr/bin/docker);
# - PYTHON_IMAGE (default python:3.11.14-slim-bookworm) neither present nor pullable: builds a Debian
#   bookworm base with debootstrap (python3.11 + venv) and `docker import`s it as $LOCAL_BASE;
# - CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt when it exists): given to pip inside the build as
#   the BuildKit secret `ca`, never written to a layer;
# - the torch CPU wheel: TORCH_INDEX_URL when set; else a torch-<version>+cpu wheel in pip's find-links
#   folder on this machine, served on 127.0.0.1 and reached with `--network host`; else the Dockerfiles'
#   default, https://download.pytorch.org/whl/cpu.
# Layers are cached by the engine: a second run with an unchanged tree takes seconds. Build time and size of
# each image are printed and appended to local_outputs/images.tsv.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
REGISTRY=${REGISTRY:-ghcr.io/dmlops}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.14-slim-bookworm}
LOCAL_BASE=${LOCAL_BASE:-dmlops-local/python:3.11-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
WHEELS_PORT=${WHEELS_PORT:-38517}
RECORD=${RECORD:-local_outputs/images.tsv}
TORCH_VERSION=$(sed -n 's/^torch==//p' containers/constraints.txt)
if [ $# -gt 0 ]; then names=("$@"); else names=(base torch-horovod tf-horovod serve spark); fi

log() { echo "images: $*" >&2; }
mkdir -p local_outputs

# A client that builds with BuildKit: one with the buildx plugin, or one with BuildKit built in (Docker
# < 23, e.g. Debian's docker.io); newer clients without buildx refuse DOCKER_BUILDKIT=1.
choose_client() {
  if [ -n "${DOCKER:-}" ]; then return; fi
  if command -v docker >/dev/null && docker buildx version >/dev/null 2>&1; then
    DOCKER=docker
  elif [ -x /usr/bin/docker ]; then
    DOCKER=/usr/bin/docker
  elif command -v docker >/dev/null; then
    DOCKER=docker
  else
    DOCKER=""
  fi
}

ensure_engine() {
  choose_client
  if [ -n "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" != 0 ]; then
    log "no Docker engine answers and this is not root: start Docker (or run as root to install Debian's docker.io)"
    exit 1
  fi
  if ! command -v dockerd >/dev/null; then
    log "installing Debian's docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
    DOCKER=""
    choose_client
  fi
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: /var/log/dmlops-dockerd.log)"
    setsid dockerd >/var/log/dmlops-dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 60); do
    "$DOCKER" info >/dev/null 2>&1 && return
    sleep 1
  done
  log "dockerd did not answer within 60 s; see /var/log/dmlops-dockerd.log"
  exit 1
}

# A bookworm root file system with Debian's python3.11, imported as an image: the base where no registry
# answers. Debian's python3.11 lacks the headers python:slim ships; the horovod build stages install
# python3.11-dev when it is missing.
local_base() {
  if "$DOCKER" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then return; fi
  if ! command -v debootstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  fi
  local rootfs
  rootfs=$(mktemp -d)
  log "building $LOCAL_BASE with debootstrap from $DEBIAN_MIRROR (log: local_outputs/images-debootstrap.log)"
  # debootstrap does not resolve every dependency of --include packages: python comes from apt in the chroot.
  { debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" \
    && chroot "$rootfs" apt-get update \
    && DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y --no-install-recommends \
         python3.11 python3.11-venv python-is-python3 ; } > local_outputs/images-debootstrap.log 2>&1 \
    || { tail -n 20 local_outputs/images-debootstrap.log >&2; log "debootstrap failed"; exit 1; }
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$rootfs"
}

choose_base() {
  local limit=()
  if command -v timeout >/dev/null; then limit=(timeout 120); fi
  if "$DOCKER" image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 \
     || ${limit[@]+"${limit[@]}"} "$DOCKER" pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
    base=$PYTHON_IMAGE
  else
    log "$PYTHON_IMAGE cannot be pulled: using a local Debian base"
    local_base
    base=$LOCAL_BASE
  fi
}

# The torch CPU wheel as this machine's pip finds it (its find-links folder), served as a one-package
# index on 127.0.0.1 for the build.
serve_torch_wheel() {
  build_network=()
  if [ -n "${TORCH_INDEX_URL:-}" ]; then return; fi
  local links wheel=""
  links=$(python3 -m pip config get global.find-links 2>/dev/null || true)
  for folder in ${PIP_FIND_LINKS:-} $links; do
    wheel=$(ls "$folder"/torch-"$TORCH_VERSION"+cpu-cp311-*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$wheel" ] && break
  done
  [ -n "$wheel" ] || return 0
  index=$(mktemp -d)
  mkdir "$index/torch"
  ln -s "$wheel" "$index/torch/"
  python3 -m http.server --bind 127.0.0.1 --directory "$index" "$WHEELS_PORT" >/dev/null 2>&1 &
  wheel_server=$!
  trap 'kill "$wheel_server" 2>/dev/null; rm -rf "$index"' EXIT
  TORCH_INDEX_URL=http://127.0.0.1:$WHEELS_PORT/
  build_network=(--network host)
  log "torch wheel $(basename "$wheel") served at $TORCH_INDEX_URL"
}

ensure_engine
choose_base
serve_torch_wheel
secret=()
if [ -n "$CA_BUNDLE" ] && [ -f "$CA_BUNDLE" ]; then secret=(--secret "id=ca,src=$CA_BUNDLE"); fi
torch_arg=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then torch_arg=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"); fi

# A horovod wheel this machine already built (make horovod) goes into the build context, so that the
# horovod images install it instead of compiling horovod again (containers/wheels/README.md).
rm -f containers/wheels/horovod-*
cached_wheels=${DMLOPS_WHEEL_CACHE:-$HOME/.cache/dmlops/wheels}
if [ -f "$cached_wheels/horovod-0.28.1.torch-tf.built" ] \
   && ls "$cached_wheels"/horovod-0.28.1-cp311-*.whl >/dev/null 2>&1; then
  cp "$cached_wheels"/horovod-0.28.1-cp311-*.whl "$cached_wheels/horovod-0.28.1.torch-tf.built" containers/wheels/
  log "horovod wheel from $cached_wheels"
fi

mkdir -p local_outputs "$(dirname "$RECORD")"
printf '%-16s %-40s %9s %9s\n' image tag seconds MB
for name in "${names[@]}"; do
  if [ "$name" = torch-horovod-cuda ]; then
    # The CUDA variant: its own CUDA base images and torch index (Dockerfile.cuda's defaults).
    tag=$REGISTRY/torch-horovod:$VERSION-cuda
    args=(-f containers/torch-horovod/Dockerfile.cuda)
  else
    tag=$REGISTRY/$name:$VERSION
    args=(-f "containers/$name/Dockerfile" --build-arg "PYTHON_IMAGE=$base" ${torch_arg[@]+"${torch_arg[@]}"}
          ${build_network[@]+"${build_network[@]}"})
  fi
  start=$(date +%s)
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain "${args[@]}" --build-arg "VERSION=$VERSION" \
    ${secret[@]+"${secret[@]}"} -t "$tag" . > "local_outputs/images-$name.log" 2>&1 \
    || { tail -n 40 "local_outputs/images-$name.log" >&2; log "building $tag failed (see its log)"; exit 1; }
  seconds=$(( $(date +%s) - start ))
  megabytes=$(( $("$DOCKER" image inspect -f '{{.Size}}' "$tag") / 1000000 ))
  printf '%-16s %-40s %9s %9s\n' "$name" "$tag" "$seconds" "$megabytes"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$tag" "$base" "$seconds" "$megabytes" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo -)" >> "$RECORD"
done
