#!/usr/bin/env bash
# make e2e: the end-to-end suite against a real userns-remapped dockerd of
# its own. It never touches a daemon it did not start: it starts one under
# E2E_DIR with scripts/engine.sh (its own data-root, exec-root, socket,
# containerd and bridge), installs the plugin from this tree into it, runs
# the suite, and stops it. It never skips: no daemon, no pass.
#
#   ENGINE=20.10|29  the engine (default 20.10, Debian's docker.io; 29 is
#                    built from its Go modules by make engine)
#   E2E_RUN=REGEXP   run only the tests that match (go test -run)
#   E2E_DIR=DIR      where the daemon lives (default
#                    /var/lib/sockrelay-e2e/ENGINE; kept between runs)
#
# Runs take a lock (/run/sockrelay-e2e.lock): two suites at once would share
# /run/docker/plugins and the test image names.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make e2e needs root (it starts a dockerd and installs a plugin)" >&2; exit 1; }
# flock -o: the lock's descriptor is not inherited, so a daemon that a
# test restarts does not hold it after the run.
if [ -z "${SOCKRELAY_E2E_LOCKED:-}" ]; then
	exec env SOCKRELAY_E2E_LOCKED=1 flock -o /run/sockrelay-e2e.lock "$0" "$@"
fi
ENGINE=${ENGINE:-20.10}
dir=${E2E_DIR:-/var/lib/sockrelay-e2e/$ENGINE}
say() { echo "e2e.sh: $*" >&2; }

scripts/dockerd.sh install
# Compose v2 and buildx are tested on both engines; Engine 29 itself too.
scripts/engine.sh build

# The machine's own daemon, if one answers, is left exactly as it was:
# its lists are compared before and after the run.
host_lists() {
	local h=unix:///var/run/docker.sock
	timeout 10 docker -H "$h" version >/dev/null 2>&1 || { echo "no daemon"; return 0; }
	docker -H "$h" ps -a --no-trunc --format '{{.ID}} {{.Status}}' | sed 's/ Up .*/ Up/; s/ Exited .*/ Exited/'
	docker -H "$h" volume ls -q
	docker -H "$h" plugin ls --no-trunc --format '{{.ID}} {{.Name}} {{.Enabled}}'
	docker -H "$h" network ls -q --no-trunc
	docker -H "$h" images -q --no-trunc
}
before=$(host_lists)

stop() { scripts/engine.sh stop "$dir" || true; }
trap stop EXIT
scripts/engine.sh start "$dir" "$ENGINE"
export DOCKER_HOST=unix://$dir/docker.sock DOCKER_CONFIG=$dir/config
export SOCKRELAY_E2E_DIR=$dir SOCKRELAY_E2E_ENGINE=$ENGINE
export SOCKRELAY_PLUGIN_SETTINGS="sockdir.source=$dir SOCKET_DIR=$dir"
make install
run=()
[ -n "${E2E_RUN:-}" ] && run=(-run "$E2E_RUN")
set +e
go test -tags e2e -count=1 -timeout 60m -v "${run[@]}" ./e2e/ 2>&1 | tee "${E2E_LOG:-/tmp/sockrelay-e2e-$ENGINE.log}"
rc=${PIPESTATUS[0]}
set -e
stop
trap - EXIT
after=$(host_lists)
if [ "$before" != "$after" ]; then
	say "FAIL: the machine's own daemon changed during the run:"
	diff <(echo "$before") <(echo "$after") >&2 || true
	exit 1
fi
say "the machine's own daemon is as it was ($(echo "$before" | head -c 60 | tr '\n' ' ')...)"
exit "$rc"
