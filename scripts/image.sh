#!/usr/bin/env bash
# Build, inspect and push the devplugin image without a Docker engine (podman/buildah, as root).
#
#   scripts/image.sh build            # `make image`: base image if needed, wheelhouse, build, info
#   scripts/image.sh info             # size and versions inside devplugin:<version>
#   scripts/image.sh push REGISTRY    # `make image-push REGISTRY=...`
#   scripts/image.sh podman ARGS...   # podman with the settings below (used by tests/image)
#   scripts/image.sh check            # exit 0 when podman can build and run containers here
#
# Nothing here names a registry or a mirror: packages come from this machine's own configured
# sources.
# * The base `debian:bookworm-slim` is made with mmdebstrap from the machine's apt sources
#   (/etc/apt/sources.list and sources.list.d, passed to mmdebstrap as files: without them it
#   would use its built-in default mirror) and imported as localhost/debian:bookworm-slim.
# * The Dockerfile's `apt-get` steps use those sources (they are the base image's) and the
#   machine's `Acquire::` settings (proxies, ...): /mnt/apt.conf, named by APT_CONFIG.
# * Its `pip install` gets a wheelhouse made first with the machine's pip and pip
#   configuration (`pip wheel`), /mnt/wheels, and /mnt/pip.conf (`no-index`, `find-links =
#   /mnt/wheels`), named by PIP_CONFIG_FILE.
#   All of it is one `podman build --volume` at /mnt, an empty directory of the base image, so
#   no layer keeps a mount point; APT_CONFIG and PIP_CONFIG_FILE are build args.
# The Dockerfile is the one an operator builds with `docker build .` against public registries:
# without these mounts the same steps use the official base image's apt sources and PyPI.
#
# Storage: vfs (works on any filesystem, no fuse/overlay needed) in a cache outside the clone,
# $DEVPLUGIN_IMAGE_CACHE (default /var/cache/devplugin-image): the base image (rebuilt after
# $DEVPLUGIN_BASE_MAX_AGE_DAYS, default 7, or when the apt sources change), podman's layer cache
# and pip's. Deleting it costs time only.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${DEVPLUGIN_IMAGE_CACHE:-/var/cache/devplugin-image}"
SUITE="${DEVPLUGIN_DEBIAN_SUITE:-bookworm}"
BASE="localhost/debian:${SUITE}-slim"
NAME="${DEVPLUGIN_IMAGE_NAME:-devplugin}"
PYTHON="${PYTHON:-python3}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)"
IMAGE="localhost/$NAME:$VERSION"

export CONTAINERS_CONF="$HERE/image/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$HERE/image/registries.conf"

podman_() {
  local runtime=()
  # crun refuses hybrid cgroup v1/v2 hosts ("cgroups in hybrid mode not supported"); runc
  # handles them, so prefer it when installed.
  if [ -n "${DEVPLUGIN_OCI_RUNTIME:-}" ]; then
    runtime=(--runtime "$DEVPLUGIN_OCI_RUNTIME")
  elif command -v runc >/dev/null 2>&1; then
    runtime=(--runtime runc)
  fi
  podman --root "$CACHE/storage" --runroot "${DEVPLUGIN_IMAGE_RUNROOT:-/run/devplugin-image}" \
    --storage-driver vfs "${runtime[@]}" "$@"
}

log() { printf '%s\n' "image: $*" >&2; }

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "missing: ${missing[*]} (Debian: apt-get install podman buildah runc mmdebstrap)"
    exit 3
  fi
}

apt_sources() {
  # The machine's apt sources, as files (mmdebstrap pastes each into the chroot).
  local f
  if [ -n "${DEVPLUGIN_APT_SOURCES:-}" ]; then
    printf '%s\n' $DEVPLUGIN_APT_SOURCES
    return
  fi
  if [ -f /etc/apt/sources.list ] && grep -qE '^[[:space:]]*deb' /etc/apt/sources.list; then
    echo /etc/apt/sources.list
  fi
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && echo "$f"
  done
}

apt_acquire_conf() {
  # The machine's Acquire:: settings (proxies, validity checks of its mirror...).
  apt-config dump 2>/dev/null | grep -E '^Acquire::(http|https|ftp)::Proxy|^Acquire::Check-' || true
}

build_base() {
  need mmdebstrap
  mkdir -p "$CACHE"
  local sources key stamp="$CACHE/base.key" max_age="${DEVPLUGIN_BASE_MAX_AGE_DAYS:-7}"
  mapfile -t sources < <(apt_sources)
  if [ "${#sources[@]}" -eq 0 ]; then
    log "no apt sources found on this machine (/etc/apt/sources.list[.d]); set DEVPLUGIN_APT_SOURCES"
    exit 3
  fi
  key="$(cat "${sources[@]}" "$HERE/image/base.sh" | sha256sum | cut -d' ' -f1) $SUITE"
  if podman_ image exists "$BASE" && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] \
     && [ -z "$(find "$stamp" -mtime +"$max_age")" ]; then
    log "base $BASE: cached ($(date -r "$stamp" +%F))"
    return
  fi
  log "base $BASE: mmdebstrap $SUITE from ${sources[*]}"
  local tar="$CACHE/base.tar" aptconf
  aptconf="$(mktemp)"
  apt_acquire_conf >"$aptconf"
  bash "$HERE/image/base.sh" "$SUITE" "$tar" "$aptconf" "${sources[@]}"
  rm -f "$aptconf"
  podman_ import --change 'CMD ["bash"]' "$tar" "$BASE" >/dev/null
  rm -f "$tar"
  echo "$key" >"$stamp"
}

wheelhouse() {
  # Every runtime dependency (and the build backend) as wheels, by the machine's pip with the
  # machine's pip configuration. The project itself is built inside the image from /src.
  local dir="$1" pyver
  pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$pyver" != "${DEVPLUGIN_IMAGE_PYTHON:-3.11}" ]; then
    log "$PYTHON is Python $pyver; the image's Debian python3 is ${DEVPLUGIN_IMAGE_PYTHON:-3.11}: set PYTHON=python3.11"
    exit 3
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  log "wheelhouse: pip wheel (Python $pyver, the machine's pip configuration)"
  PIP_CACHE_DIR="$CACHE/pip" "$PYTHON" -m pip wheel --quiet --wheel-dir "$dir" \
    "$ROOT" "setuptools>=77" wheel 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  rm -f "$dir"/devplugin-*.whl
}

cmd_build() {
  need podman
  local t0 status
  t0=$(date +%s)
  build_base
  work="$(mktemp -d "${TMPDIR:-/tmp}/devplugin-image.XXXXXX")"
  trap 'rm -rf "${work:-}"' EXIT
  wheelhouse "$work/wheels"
  printf '[global]\nno-index = true\nfind-links = /mnt/wheels\n' >"$work/pip.conf"
  apt_acquire_conf >"$work/apt.conf"
  log "podman build $IMAGE"
  status=0
  podman_ build --pull=never --network host --layers \
    --volume "$work:/mnt:ro" \
    --build-arg APT_CONFIG=/mnt/apt.conf --build-arg PIP_CONFIG_FILE=/mnt/pip.conf \
    --build-arg "VERSION=$VERSION" \
    --tag "$IMAGE" --file "$ROOT/Dockerfile" "$ROOT" >"$work/build.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$work/build.log" >&2
    log "podman build failed ($status)"
    exit "$status"
  fi
  cp "$work/build.log" "$CACHE/last-build.log"
  # keep recent intermediate images: they are the layer cache of the build stage
  podman_ image prune --force --filter until=168h >/dev/null 2>&1 || true
  log "built $IMAGE in $(( $(date +%s) - t0 )) s"
  cmd_info
}

cmd_info() {
  need podman
  local bytes
  bytes="$(podman_ image inspect --format '{{.Size}}' "$IMAGE")"
  echo "image:    $IMAGE"
  echo "size:     $(( bytes / 1000000 )) MB ($bytes bytes, uncompressed)"
  podman_ run --rm --pull=never --ulimit host --network none --read-only \
    --cap-drop ALL --security-opt no-new-privileges --entrypoint python3 "$IMAGE" -c '
import sys, grpc, importlib.metadata as md
print("python:  ", sys.version.split()[0])
print("grpcio:  ", grpc.__version__)
print("devplugin:", md.version("devplugin"))'
  podman_ run --rm --pull=never --ulimit host --network none --read-only \
    --cap-drop ALL --security-opt no-new-privileges "$IMAGE" --version
}

cmd_push() {
  need podman
  local registry="${1:-}"
  if [ -z "$registry" ]; then
    log "usage: make image-push REGISTRY=<registry>[/<path>]"
    exit 2
  fi
  local target="${registry%/}/$NAME:$VERSION"
  podman_ tag "$IMAGE" "$target"
  podman_ push ${DEVPLUGIN_PUSH_FLAGS:-} "$target"
  log "pushed $target"
}

cmd_check() {
  # Can this machine build and run containers? Prints the reason when not.
  need podman
  build_base
  podman_ run --rm --pull=never --ulimit host --network none --read-only \
    --cap-drop ALL --security-opt no-new-privileges "$BASE" true
}

case "${1:-}" in
  build) cmd_build ;;
  info) cmd_info ;;
  push) shift; cmd_push "$@" ;;
  check) cmd_check ;;
  base) build_base ;;
  podman) shift; podman_ "$@" ;;
  image-name) echo "$IMAGE" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
