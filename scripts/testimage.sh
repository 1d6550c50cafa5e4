#!/usr/bin/env bash
# Build the small test image (default sockrelay-e2e:latest) offline: no
# registry, no base image. It holds /bin/srclient (e2e/srclient, static)
# and /bin/docker, a static docker CLI (E2E_DOCKER_CLI, default the docker
# first on PATH), with the CLI plugins docker-buildx and docker-compose
# that make engine builds (E2E_CLI_PLUGINS, default the engine cache's).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-sockrelay-e2e:latest}
cli=${E2E_DOCKER_CLI:-$(command -v docker)}
if command -v file >/dev/null && ! file -L "$cli" | grep -q 'statically linked'; then
	echo "testimage.sh: $cli is not a static binary; set E2E_DOCKER_CLI to a static docker CLI" >&2
	exit 1
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/bin "$dir"/tmp "$dir"/etc "$dir"/var/run "$dir"/run
chmod 1777 "$dir"/tmp
CGO_ENABLED=0 go build -trimpath -o "$dir"/bin/srclient ./e2e/srclient
cp "$cli" "$dir"/bin/docker
plugins=${E2E_CLI_PLUGINS:-${ENGINE_CACHE:-/var/cache/sockrelay/engine}/cli-plugins}
mkdir -p "$dir"/usr/libexec/docker/cli-plugins
for p in docker-buildx docker-compose; do
	if [ -x "$plugins/$p" ]; then
		cp "$plugins/$p" "$dir"/usr/libexec/docker/cli-plugins/
	elif [ -n "${E2E_CLI_PLUGINS_REQUIRED:-}" ]; then
		echo "testimage.sh: no $plugins/$p; run make engine first" >&2
		exit 1
	fi
done
tar -C "$dir" -c . | docker import -c 'ENV PATH=/bin' -c 'ENV HOME=/tmp' - "$image" >/dev/null
echo "built image $image"
