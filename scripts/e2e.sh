#!/usr/bin/env bash
# make e2e: the end-to-end suite against a real userns-remapped dockerd.
# Starts one when none runs (installing Docker when missing), installs the
# plugin from this tree, and runs the suite. It never skips: no daemon, no
# pass.
#
#   E2E_RUN=REGEXP   run only the tests that match (go test -run)
#
# Runs take a lock (/run/sockrelay-e2e.lock): two suites at once would
# reinstall each other's plugin and remove each other's containers.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make e2e needs root (it drives dockerd and installs a plugin)" >&2; exit 1; }
# flock -o: the lock's descriptor is not inherited, so a daemon that a
# test restarts does not hold it after the run.
if [ -z "${SOCKRELAY_E2E_LOCKED:-}" ]; then
	exec env SOCKRELAY_E2E_LOCKED=1 flock -o /run/sockrelay-e2e.lock "$0" "$@"
fi
scripts/dockerd.sh start
make install
run=()
[ -n "${E2E_RUN:-}" ] && run=(-run "$E2E_RUN")
go test -tags e2e -count=1 -timeout 30m -v "${run[@]}" ./e2e/ 2>&1 | tee "${E2E_LOG:-/tmp/sockrelay-e2e.log}"
exit "${PIPESTATUS[0]}"
