#!/usr/bin/env bash
# Check that the Dockerfile builds what make plugin assembles: the same
# file list in its one layer and a byte-identical binary. Needs the
# builder image the Dockerfile names (docker pull, or a local one).
set -euo pipefail
cd "$(dirname "$0")/.."
version=check commit=$(git rev-parse HEAD)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

DOCKER_BUILDKIT=0 docker build -q --build-arg VERSION=$version --build-arg COMMIT=$commit -t sockrelay-rootfs:check . >/dev/null
mkdir "$work/save" "$work/image"
docker save sockrelay-rootfs:check | tar -x -C "$work/save"
layers=$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))[0]["Layers"]))' "$work/save/manifest.json")
[ "$(wc -w <<<"$layers")" = 1 ] || { echo "dockerfile-check: want one layer, got: $layers" >&2; exit 1; }
tar -x -C "$work/image" -f "$work/save/$layers"

make --no-print-directory plugin-rootfs VERSION=$version COMMIT=$commit ROOTFS="$work/make" >/dev/null

(cd "$work/image" && find . | sort) >"$work/image.list"
(cd "$work/make" && find . | sort) >"$work/make.list"
diff -u "$work/make.list" "$work/image.list"
cmp "$work/make/sockrelay" "$work/image/sockrelay"
echo "dockerfile-check: the Dockerfile's rootfs equals make plugin's ($(sha256sum <"$work/make/sockrelay" | cut -c1-16)…)"
