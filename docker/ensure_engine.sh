#!/usr/bin/env bash
# Make sure a Docker engine answers here: install Debian's docker.io (and debootstrap, which
# docker/build_image.sh needs for its base) when missing, and start dockerd when none runs.
#
# CI and the docker tests call this (they run as root on a Debian machine without a service
# manager); on a workstation with Docker already running it only checks and returns.
set -euo pipefail

log=${DOCKERD_LOG:-/tmp/dockerd.log}

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "ensure_engine: install docker.io and debootstrap (needs root)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

if engine_up; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "ensure_engine: no Docker engine runs and starting dockerd needs root" >&2; exit 1; }
# Detached from this shell (setsid) so that it outlives the script; its log stays in $log.
setsid dockerd >"$log" 2>&1 < /dev/null &
for _ in $(seq 60); do
  engine_up && exit 0
  sleep 1
done
echo "ensure_engine: dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
