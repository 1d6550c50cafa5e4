#!/usr/bin/env bash
# make demo: from a fresh Debian host (as root) to a remapped container that
# lists the host's containers through sockrelay.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make demo needs root" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a userns-remapped dockerd"
scripts/dockerd.sh start
docker info --format 'daemon {{.ServerVersion}}, root dir {{.DockerRootDir}}, security {{.SecurityOptions}}'

step "build and install the plugin (make install)"
make --no-print-directory install

step "a small image with the docker CLI, built offline"
scripts/testimage.sh sockrelay-demo:latest

step "docker volume create -d sockrelay demo-dsock"
docker volume create -d sockrelay demo-dsock >/dev/null
docker volume inspect demo-dsock --format '{{json .Status}}'

step "without sockrelay: -v /var/run/docker.sock:/var/run/docker.sock"
docker run --rm -v /var/run/docker.sock:/var/run/docker.sock sockrelay-demo:latest docker ps || true

step "with sockrelay: -v demo-dsock:/var/run"
docker run --rm --name sockrelay-demo -v demo-dsock:/var/run sockrelay-demo:latest docker ps

cat <<'EOT'

The remapped container listed the host's containers (itself included).
Try it yourself:
  docker run --rm -it -v demo-dsock:/var/run sockrelay-demo:latest docker version
Clean up:
  docker volume rm demo-dsock && docker image rm sockrelay-demo:latest
EOT
