#!/usr/bin/env bash
# make e2e: the end-to-end suite against a real userns-remapped dockerd.
# Starts one when none runs (installing Docker when missing), installs the
# plugin from this tree, and runs the suite. It never skips: no daemon, no
# pass.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make e2e needs root (it drives dockerd and installs a plugin)" >&2; exit 1; }
scripts/dockerd.sh start
make install
go test -tags e2e -count=1 -timeout 30m -v ./e2e/ 2>&1 | tee "${E2E_LOG:-/tmp/sockrelay-e2e.log}"
exit "${PIPESTATUS[0]}"
