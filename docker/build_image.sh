#!/usr/bin/env bash
# Build the tfod image from docker/Dockerfile (`make image`).
#
#   docker/build_image.sh                  # CPU image tfod:latest on a local Debian bookworm base
#   SUITE=trixie docker/build_image.sh     # CPU image tfod:trixie on a local Debian trixie base
#   BASE_IMAGE=tensorflow/tensorflow:2.15.0-gpu IMAGE=tfod:gpu docker/build_image.sh  # GPU tf2.15
#   SUITE=trixie GPU=1 IMAGE=tfod:gpu docker/build_image.sh    # GPU tf2.21 (CUDA wheels from pip)
#
# The Dockerfile installs the stack of the base's python3 (tfod/stack.py): bookworm's 3.11
# gets tf2.15, trixie's 3.13 gets tf2.21. Without BASE_IMAGE, nothing is pulled: a Debian
# $SUITE base (python3, venv, CA certificates) is made with debootstrap from Debian's archive
# and `docker import`ed as tfod-base:$SUITE (once). The host's CA bundle goes into that base,
# so pip verifies TLS where the network goes through a local certificate authority.
#
# The build context is staged (only what the image installs), and the image is labelled with
# the hash of that context: an image with the same hash is not built again (FORCE=1 rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SUITE:-bookworm}
if [ "$SUITE" = bookworm ]; then
  IMAGE=${IMAGE:-tfod:latest}
else
  IMAGE=${IMAGE:-tfod:$SUITE}
fi
LOCAL_BASE=tfod-base:$SUITE
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=/etc/ssl/certs/ca-certificates.crt
CONTEXT_FILES=(requirements setup.py pyproject.toml pipeline_configs tools tfod docker/Dockerfile)

say() { echo "[build_image] $*" >&2; }

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

make_local_base() {
  # The suite's python3 picks the stack: bookworm 3.11 (tf2.15), trixie 3.13 (tf2.21).
  local root log=/tmp/tfod-debootstrap-$SUITE.log
  root=$(mktemp -d /tmp/tfod-base.XXXXXX)
  say "debootstrap $SUITE into $root (once; a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; rm -rf "$root"; return 1; }
  if [ -f "$HOST_CA" ]; then
    cp "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PIP_CERT=$HOST_CA" \
    --change 'CMD ["python3"]' \
    - "$LOCAL_BASE" >/dev/null
  rm -rf "$root"
}

stage_context() {
  local context=$1
  for path in "${CONTEXT_FILES[@]}"; do
    mkdir -p "$context/$(dirname "$path")"
    cp -r "$path" "$context/$path"
  done
  find "$context" \( -name __pycache__ -o -name '*.pyc' -o -name '*.egg-info' \) -prune \
    -exec rm -rf {} +
}

context_hash() {
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum \
    | cut -c1-16)
}

bash docker/ensure_engine.sh
# One build at a time on this machine: a second caller (the docker tests asking for an image
# that CI is building in the background) waits here, then finds the image up to date.
exec 9>"/tmp/tfod-build-image-$(id -u).lock"
flock 9
if [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && ! has_image "$LOCAL_BASE"; then
  started=$(date +%s)
  make_local_base
  say "base $LOCAL_BASE made in $(( $(date +%s) - started )) s"
fi

context=$(mktemp -d /tmp/tfod-context.XXXXXX)
trap 'rm -rf "$context"' EXIT
stage_context "$context"
hash=$(context_hash "$context")-$(echo "$BASE_IMAGE GPU=${GPU:-}" | sha256sum | cut -c1-8)
if [ -z "${FORCE:-}" ] && has_image "$IMAGE" && [ "$(docker image inspect --format \
    '{{index .Config.Labels "tfod.context"}}' "$IMAGE")" = "$hash" ]; then
  say "$IMAGE is up to date (context $hash)"
  exit 0
fi
started=$(date +%s)
say "building $IMAGE on $BASE_IMAGE (context $hash)"
docker build --force-rm -f "$context/docker/Dockerfile" -t "$IMAGE" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "GPU=${GPU:-}" \
  --label "tfod.context=$hash" "$context"
say "$IMAGE built in $(( $(date +%s) - started )) s"
docker image prune --force --filter label=tfod.context >/dev/null  # the builds it replaced
