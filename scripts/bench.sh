#!/usr/bin/env bash
# make bench: the installed plugin as users run it, beside sockrelay serve,
# socat and wollomatic/socket-proxy, each measured beside a direct
# connection (cmd/srbench). It never touches a daemon it did not start,
# unless told to use one:
#
#   BENCH_DOCKER=SOCKET  measure the plugin PLUGIN installed in the
#                        userns-remapped daemon on SOCKET (its SOCKET_DIR
#                        must be its sockdir mount's source); the bench
#                        makes a container, an image, volumes and a
#                        directory below SOCKET_DIR of its own there, and
#                        removes them
#   otherwise            start a daemon of the bench's own under BENCH_DIR
#                        (default /var/lib/sockrelay-bench) with
#                        scripts/engine.sh (BENCH_ENGINE, default 20.10),
#                        install the plugin from this tree into it, and stop
#                        it at the end
#   SOCKET_PROXY=PATH    wollomatic/socket-proxy to compare with; unset, it
#                        is built from its module (SOCKET_PROXY_VERSION) if
#                        the module proxy serves it, and left out if not
#   BENCHFLAGS           flags for cmd/srbench (-quick, -rounds N, -json F)
#
# Runs take the e2e suite's lock (/run/sockrelay-e2e.lock): a bench
# measured while the suite runs would measure the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench needs root (it starts a dockerd and installs a plugin, or uses BENCH_DOCKER's)" >&2; exit 1; }
if [ -z "${SOCKRELAY_BENCH_LOCKED:-}" ]; then
	if ! flock -n /run/sockrelay-e2e.lock true; then
		echo "bench.sh: waiting for /run/sockrelay-e2e.lock (an e2e suite or another bench runs)" >&2
	fi
	exec env SOCKRELAY_BENCH_LOCKED=1 flock -o /run/sockrelay-e2e.lock "$0" "$@"
fi
say() { echo "bench.sh: $*" >&2; }
PLUGIN=${PLUGIN:-sockrelay:latest}
SOCKET_PROXY_VERSION=${SOCKET_PROXY_VERSION:-1.13.1}

tmp=$(mktemp -d)
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

if [ -n "${BENCH_DOCKER:-}" ]; then
	sock=${BENCH_DOCKER#unix://}
	say "measuring $PLUGIN in the daemon on $sock"
else
	dir=${BENCH_DIR:-/var/lib/sockrelay-bench}
	stop() { scripts/engine.sh stop "$dir" || true; cleanup; }
	trap stop EXIT
	scripts/engine.sh start "$dir" "${BENCH_ENGINE:-20.10}"
	sock=$dir/docker.sock
	DOCKER_HOST=unix://$sock SOCKRELAY_PLUGIN_SETTINGS="sockdir.source=$dir SOCKET_DIR=$dir" \
		make --no-print-directory install PLUGIN_NAME="${PLUGIN%%:*}" PLUGIN_TAG="${PLUGIN#*:}"
fi

proxy=${SOCKET_PROXY:-}
if [ -z "$proxy" ]; then
	# Its tags have no v prefix, so the module proxy may well not serve it.
	if GOBIN=$tmp/bin GOFLAGS=-mod=mod CGO_ENABLED=0 go install \
		"github.com/wollomatic/socket-proxy/cmd/socket-proxy@v$SOCKET_PROXY_VERSION" >"$tmp/proxy.log" 2>&1; then
		proxy=$tmp/bin/socket-proxy
	else
		say "wollomatic/socket-proxy left out: it cannot be built from its module here ($(tail -n 1 "$tmp/proxy.log")); set SOCKET_PROXY to a binary of it"
	fi
fi

# shellcheck disable=SC2086
CGO_ENABLED=0 go run ./cmd/srbench -docker "$sock" -plugin "$PLUGIN" ${proxy:+-socket-proxy "$proxy"} ${BENCHFLAGS:-}
