#!/usr/bin/env bash
# Make sure a userns-remapped dockerd runs, for make demo, make e2e and CI.
#
#   dockerd.sh install   install Docker's packages and the tools the e2e
#                        suite calls, when missing; start nothing
#   dockerd.sh start     install Docker when missing; start dockerd with
#                        $DOCKERD_ARGS (default --userns-remap=default) when
#                        none answers; fail when the running one is not remapped
#   dockerd.sh restart   restart the daemon (ours, or systemd's docker.service)
#   dockerd.sh stop      stop the daemon this script started
#
# A daemon this script starts logs to /var/log/sockrelay-dockerd.log.
set -euo pipefail

DOCKERD_ARGS=${DOCKERD_ARGS:---userns-remap=default}
pidfile=/run/sockrelay-dockerd.pid
logfile=/var/log/sockrelay-dockerd.log

say() { echo "dockerd.sh: $*" >&2; }
die() { say "$*"; exit 1; }

answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

remapped() {
	docker info --format '{{json .SecurityOptions}}' 2>/dev/null | grep -q 'name=userns'
}

install_docker() {
	command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v socat >/dev/null &&
		command -v pgrep >/dev/null && command -v script >/dev/null && return 0
	[ "$(id -u)" = 0 ] || die "Docker is not installed and installing it needs root"
	command -v apt-get >/dev/null || die "Docker is not installed; install docker.io and docker-compose with your package manager"
	say "installing docker.io, docker-compose, socat, procps and bsdutils from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq docker.io docker-compose socat procps bsdutils >/dev/null
}

ours() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

launch() {
	[ "$(id -u)" = 0 ] || die "starting dockerd needs root"
	say "starting dockerd $DOCKERD_ARGS (log: $logfile)"
	# As docker.service does (LimitNOFILE=infinity): the daemon, its
	# plugins and containers inherit this limit, and the e2e load test holds
	# thousands of connections.
	ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	# The daemon must not die with the shell that starts it.
	setsid dockerd $DOCKERD_ARGS >>"$logfile" 2>&1 </dev/null &
	echo $! >"$pidfile"
	for _ in $(seq 1 120); do
		if answers; then return 0; fi
		kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -n 20 "$logfile" >&2; die "dockerd exited at start"; }
		sleep 0.5
	done
	tail -n 20 "$logfile" >&2
	die "dockerd did not answer within 60 s"
}

stop_ours() {
	ours || return 0
	local pid
	pid=$(cat "$pidfile")
	kill -TERM "$pid"
	for _ in $(seq 1 120); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	kill -0 "$pid" 2>/dev/null && die "dockerd $pid did not stop within 60 s"
	rm -f "$pidfile"
	# Wait until the socket no longer answers.
	for _ in $(seq 1 20); do answers || break; sleep 0.5; done
}

case "${1:-start}" in
install)
	install_docker
	;;
start)
	install_docker
	if ! answers; then
		launch
	fi
	remapped || die "the running dockerd does not use --userns-remap; sockrelay is for remapped daemons. Restart it with --userns-remap=default (or set it in /etc/docker/daemon.json: {\"userns-remap\": \"default\"})"
	;;
restart)
	if ours; then
		stop_ours
		launch
	elif command -v systemctl >/dev/null && systemctl is-active --quiet docker 2>/dev/null; then
		systemctl restart docker
		for _ in $(seq 1 120); do answers && break; sleep 0.5; done
	else
		die "cannot restart dockerd: it was not started by this script or by systemd"
	fi
	answers || die "dockerd did not come back"
	;;
stop)
	stop_ours
	;;
*)
	die "usage: dockerd.sh install|start|restart|stop"
	;;
esac
