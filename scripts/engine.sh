#!/usr/bin/env bash
# Docker Engines of the e2e suite's own: Engine 29 built from its Go
# modules, and Debian's 20.10, each run entirely apart from any daemon of
# the machine's. make engine runs `build`.
#
#   engine.sh [build]    build what is missing or outdated into the cache:
#                        dockerd and docker-proxy (github.com/moby/moby/v2),
#                        runc, and the CLI plugins docker-compose (Compose v2)
#                        and docker-buildx. A second run only verifies.
#   engine.sh path       print the cache's bin directory
#   engine.sh start DIR [ENGINE]
#                        start a userns-remapped daemon entirely of its own
#                        under DIR (socket DIR/docker.sock), with its own
#                        containerd, bridge and data; wait until it answers.
#                        ENGINE is 29 (default: the cache's) or 20.10
#                        (Debian's docker.io)
#   engine.sh restart DIR
#                        restart that dockerd alone (its containerd, and so
#                        its containers, stay), with ENGINE_DOCKERD_ARGS
#   engine.sh stop DIR   stop that daemon, then its containerd; remove its
#                        bridge; leave nothing running
#
# Settings (environment):
#   ENGINE_CACHE     the cache (default /var/cache/sockrelay/engine)
#   MOBY_VERSION, RUNC_VERSION, COMPOSE_VERSION, BUILDX_VERSION
#                    module versions; a change rebuilds that component
#   ENGINE_DOCKERD_ARGS  extra dockerd flags for start
#
# The cache:
#   bin/dockerd bin/docker-proxy bin/runc
#   cli-plugins/docker-compose cli-plugins/docker-buildx
#   manifest     one line per component: name, cache key, sha256
# A component is rebuilt when its key (module and version, Go version, build
# recipe) differs from the manifest's, or its binary is missing or changed.
#
# What start does to the host, beside the other (system) daemon, for either
# engine:
#   - a bridge sr29-<hash of DIR> with 10.K.0.1/24 (K in 200-249, free);
#   - one iptables rule, FORWARD accepting 10.K.0.0/16 to 10.K.0.0/16, since
#     dockerd runs with --iptables=false: Engine 29 with iptables on deletes
#     the DOCKER* chains the other daemon uses;
#   - containerd (Debian's) with root, state and socket under DIR; dockerd
#     with --config-file, --data-root, --exec-root, --pidfile and its socket
#     under DIR, --userns-remap=default, and the cached runc as the default
#     runtime. Managed plugins' sockets still go to /run/docker/plugins/<id>.
# stop undoes all of it; DIR keeps the data.
set -Eeuo pipefail
# Never fail silently.
trap 'echo "engine.sh: error: line $LINENO: $BASH_COMMAND failed" >&2' ERR

ENGINE_CACHE=${ENGINE_CACHE:-/var/cache/sockrelay/engine}
MOBY_VERSION=${MOBY_VERSION:-v2.0.0-beta.24}
RUNC_VERSION=${RUNC_VERSION:-v1.5.3}
COMPOSE_VERSION=${COMPOSE_VERSION:-v2.40.3}
BUILDX_VERSION=${BUILDX_VERSION:-v0.38.2}

MOBY=github.com/moby/moby/v2
RUNC=github.com/opencontainers/runc
COMPOSE=github.com/docker/compose/v2
BUILDX=github.com/docker/buildx

# Build recipes. Part of each component's cache key: editing one rebuilds it.
# dockerd as moby's hack/make.sh builds it static, less cgo: no btrfs graph
# driver, no disk quota for local volumes (both need cgo), no journald reader.
DOCKERD_TAGS="netgo osusergo static_build nri_no_wasm exclude_graphdriver_btrfs exclude_disk_quota"
# runc as its Makefile's static target, with libseccomp (libseccomp-dev) and
# without libpathrs (a Rust library Debian 12 lacks; runc falls back to Go).
RUNC_TAGS="seccomp urfave_cli_no_docs netgo osusergo"
RECIPE_REV=1

say() { echo "engine.sh: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

manifest=$ENGINE_CACHE/manifest

find_go() {
	GO=${GO:-go}
	if ! command -v "$GO" >/dev/null 2>&1; then
		[ -x /usr/local/go/bin/go ] || die "go is not on PATH (nor /usr/local/go/bin/go); install Go 1.26 or set GO=/path/to/go"
		GO=/usr/local/go/bin/go
	fi
	# Never download a toolchain: a module that needs a newer Go must fail
	# here, saying so, rather than fetch one.
	export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on GOFLAGS=-buildvcs=false
	GOVERSION=$("$GO" env GOVERSION)
}

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root"; }

# apt_need CMD-OR-FILE PACKAGE...: install Debian packages when the first
# argument (a command name or an absolute path) is missing.
apt_need() {
	local what=$1
	shift
	if [[ $what = /* ]]; then [ -e "$what" ] && return 0; else command -v "$what" >/dev/null 2>&1 && return 0; fi
	[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
		die "$what is missing: install $* (as root: apt-get install $*)"
	say "installing $* from Debian's packages (for $what)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; } ||
		die "apt-get install $* failed"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# key NAME: the cache key of a component.
key() {
	case $1 in
	dockerd) echo "$MOBY@$MOBY_VERSION/cmd/dockerd $GOVERSION r$RECIPE_REV tags=${DOCKERD_TAGS// /,}" ;;
	docker-proxy) echo "$MOBY@$MOBY_VERSION/cmd/docker-proxy $GOVERSION r$RECIPE_REV versioned" ;;
	runc) echo "$RUNC@$RUNC_VERSION $GOVERSION r$RECIPE_REV tags=${RUNC_TAGS// /,} static-pie" ;;
	docker-compose) echo "$COMPOSE@$COMPOSE_VERSION/cmd $GOVERSION r$RECIPE_REV" ;;
	docker-buildx) echo "$BUILDX@$BUILDX_VERSION/cmd/buildx $GOVERSION r$RECIPE_REV" ;;
	esac
}

# out NAME: the path of a component's binary in the cache.
out() {
	case $1 in
	docker-compose | docker-buildx) echo "$ENGINE_CACHE/cli-plugins/$1" ;;
	*) echo "$ENGINE_CACHE/bin/$1" ;;
	esac
}

# version_of NAME: what the cached binary says of its version (one line).
# (No pipes into head: with pipefail, a writer cut off early fails the line.)
version_of() {
	local b v
	b=$(out "$1")
	case $1 in
	docker-compose | docker-buildx) v=$("$b" version 2>&1) ;;
	*) v=$("$b" --version 2>&1) ;;
	esac || true
	echo "${v%%$'\n'*}"
}

# want_version NAME: a string the version line must contain.
want_version() {
	case $1 in
	dockerd) echo "$MOBY_VERSION" ;;
	docker-proxy) echo "$MOBY_VERSION" ;;
	runc) echo "runc version ${RUNC_VERSION#v}" ;;
	docker-compose) echo "$COMPOSE_VERSION" ;;
	docker-buildx) echo "$BUILDX_VERSION" ;;
	esac
}

# cached NAME: true when the manifest has the component with the current key
# and the binary is there, unchanged, and answers with its version.
cached() {
	local line want b
	b=$(out "$1")
	[ -x "$b" ] && [ -f "$manifest" ] || return 1
	line=$(awk -F '\t' -v n="$1" '$1 == n' "$manifest")
	[ -n "$line" ] || return 1
	[ "$(cut -f2 <<<"$line")" = "$(key "$1")" ] || return 1
	[ "$(cut -f3 <<<"$line")" = "$(sha "$b")" ] || {
		say "$1: the cached binary differs from the one the manifest records"
		return 1
	}
	want=$(want_version "$1")
	[[ $(version_of "$1") = *"$want"* ]] || {
		say "$1: the cached binary does not say $want: $(version_of "$1")"
		return 1
	}
}

record() {
	local tmp
	tmp=$(mktemp "$ENGINE_CACHE/.manifest.XXXXXX")
	if [ -f "$manifest" ]; then awk -F '\t' -v n="$1" '$1 != n' "$manifest" >"$tmp"; fi
	printf '%s\t%s\t%s\n' "$1" "$(key "$1")" "$(sha "$(out "$1")")" >>"$tmp"
	sort -o "$tmp" "$tmp"
	chmod 0644 "$tmp"
	mv "$tmp" "$manifest"
}

# moddir MODULE VERSION: a writable copy of the module's source, under $work.
# Building inside the module (not go install m@v) because compose's go.mod
# has exclude directives, which go install refuses, and to set versions.
moddir() {
	local json dir dst
	json=$(cd "$work" && "$GO" mod download -json "$1@$2" 2>&1) ||
		die "go mod download $1@$2 failed:
$json
Check the version (go list -m -versions $1) and that the module proxy answers (go env GOPROXY)."
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
	[ -d "$dir" ] || die "go mod download $1@$2 gave no directory:
$json"
	dst=$work/src/${1//\//_}@$2
	if [ ! -d "$dst" ]; then
		mkdir -p "$work/src"
		cp -r "$dir" "$dst"
		chmod -R u+w "$dst"
	fi
	echo "$dst"
}

# gobuild NAME SRCDIR PKG CGO [go build flags...]: build into the cache,
# atomically, and record it.
gobuild() {
	local name=$1 src=$2 pkg=$3 cgo=$4 dst tmp start
	shift 4
	dst=$(out "$name")
	mkdir -p "$(dirname "$dst")"
	tmp=$dst.tmp.$$
	start=$SECONDS
	say "$name: building $(key "$name" | cut -d' ' -f1)"
	if ! (cd "$src" && CGO_ENABLED=$cgo "$GO" build -trimpath "$@" -o "$tmp" "$pkg") >"$work/$name.log" 2>&1; then
		tail -n 40 "$work/$name.log" >&2
		rm -f "$tmp"
		touch "$work/.keep"
		die "$name: go build failed (above; the whole log is $work/$name.log, kept)"
	fi
	mv -f "$tmp" "$dst"
	record "$name"
	say "$name: built in $((SECONDS - start)) s: $(version_of "$name")"
}

# moby_ldflags SRC: the version strings of dockerd and docker-proxy
# ("library-import" unless set). A v2 module version is a snapshot of moby's
# main branch and carries no 29.x number of its own: say the last release it
# follows (its releases/versions.yaml) and, as semver build metadata, the
# module version, e.g. 29.8.0+moby.v2.0.0-beta.24.
moby_ldflags() {
	local v p=$MOBY/dockerversion
	v=$(sed -n 's/^[[:space:]]*last:[[:space:]]*"\{0,1\}\([0-9][0-9.]*\)"\{0,1\}[[:space:]]*$/\1/p;T;q' "$1/releases/versions.yaml" 2>/dev/null) || true
	v=${v:+$v+}moby.$MOBY_VERSION
	echo "-w -X $p.Version=$v -X $p.GitCommit=moby/v2@$MOBY_VERSION -X $p.BuildTime=$(date -u +%Y-%m-%dT%H:%M:%SZ) -X $p.PlatformName=sockrelay-engine"
}

build_dockerd() {
	local src
	src=$(moddir "$MOBY" "$MOBY_VERSION")
	gobuild dockerd "$src" ./cmd/dockerd 0 -tags "$DOCKERD_TAGS" -ldflags "$(moby_ldflags "$src")"
}

build_docker_proxy() {
	local src
	src=$(moddir "$MOBY" "$MOBY_VERSION")
	gobuild docker-proxy "$src" ./cmd/docker-proxy 0 -ldflags "$(moby_ldflags "$src")"
}

build_runc() {
	local src
	apt_need gcc gcc
	apt_need pkg-config pkg-config
	apt_need /usr/include/seccomp.h libseccomp-dev
	src=$(moddir "$RUNC" "$RUNC_VERSION")
	gobuild runc "$src" . 1 -buildmode=pie -tags "$RUNC_TAGS" \
		-ldflags "-X main.gitCommit=$RUNC@$RUNC_VERSION -linkmode external -extldflags -static-pie"
}

build_compose() {
	local src
	src=$(moddir "$COMPOSE" "$COMPOSE_VERSION")
	# CGO_ENABLED=0: the docker CLI ignores a plugin it cannot run, and a
	# dynamically linked one does not run in a minimal image.
	gobuild docker-compose "$src" ./cmd 0 -ldflags "-w -X $COMPOSE/internal.Version=$COMPOSE_VERSION"
}

build_buildx() {
	local src
	src=$(moddir "$BUILDX" "$BUILDX_VERSION")
	gobuild docker-buildx "$src" ./cmd/buildx 0 \
		-ldflags "-w -X $BUILDX/version.Version=$BUILDX_VERSION -X $BUILDX/version.Package=$BUILDX"
}

components="runc dockerd docker-proxy docker-compose docker-buildx"

build() {
	local start=$SECONDS c todo=()
	find_go
	mkdir -p "$ENGINE_CACHE" || die "cannot create $ENGINE_CACHE; set ENGINE_CACHE to a writable directory"
	[ -w "$ENGINE_CACHE" ] || die "$ENGINE_CACHE is not writable; run as root or set ENGINE_CACHE"
	# One build at a time per cache.
	exec 9>"$ENGINE_CACHE/.lock"
	flock -n 9 || {
		say "another build holds $ENGINE_CACHE/.lock; waiting"
		flock 9
	}
	say "cache $ENGINE_CACHE, $GOVERSION"
	for c in $components; do
		if cached "$c"; then
			say "$c: cached, $(version_of "$c")"
		else
			todo+=("$c")
		fi
	done
	if [ ${#todo[@]} -eq 0 ]; then
		say "all cached and verified in $((SECONDS - start)) s; bin: $ENGINE_CACHE/bin"
		return 0
	fi
	say "to build: ${todo[*]}"
	[ ${#todo[@]} -lt 3 ] || say "(all five take about 15 minutes on 2 idle cores: dockerd is most of it)"
	work=$(mktemp -d "${TMPDIR:-/tmp}/sockrelay-engine.XXXXXX")
	# Keep the work directory (the build log) when a build fails.
	trap '[ -e "$work/.keep" ] || rm -rf "$work"' EXIT
	for c in "${todo[@]}"; do
		case $c in
		dockerd) build_dockerd ;;
		docker-proxy) build_docker_proxy ;;
		runc) build_runc ;;
		docker-compose) build_compose ;;
		docker-buildx) build_buildx ;;
		esac
	done
	say "built ${todo[*]} in $((SECONDS - start)) s; bin: $ENGINE_CACHE/bin"
	say "the CLI plugins are in $ENGINE_CACHE/cli-plugins: use them with"
	say "  mkdir -p ~/.docker/cli-plugins && cp $ENGINE_CACHE/cli-plugins/* ~/.docker/cli-plugins/"
	say "or point DOCKER_CONFIG at a directory whose cli-plugins/ holds them (links will do):"
	say "scripts/engine.sh start DIR makes DIR/config so (buildx keeps its state there too)"
}

# ---- start / stop ---------------------------------------------------------

# instance DIR: set the instance's paths. Everything of the daemon is under
# DIR but the plugin sockets: Engine 29 puts those in /run/docker/plugins/<id>/
# whatever --exec-root says (daemon/daemon_linux.go), beside the other
# daemon's, by plugin ID.
instance() {
	[ -n "${1:-}" ] || die "usage: engine.sh start|stop DIR"
	dir=$(realpath -m "$1")
	sock=$dir/docker.sock
	ctd=$dir/containerd
	ctd_sock=$ctd/containerd.sock
	dockerd_pidfile=$dir/dockerd.pid
	ctd_pidfile=$dir/containerd.pid
	dockerd_log=$dir/dockerd.log
	ctd_log=$dir/containerd.log
	envfile=$dir/engine.env
	enginefile=$dir/engine
}

# pick_engine [ENGINE]: the engine of this DIR (given, or as it was
# started), and its binaries.
pick_engine() {
	engine=${1:-}
	[ -n "$engine" ] || engine=$(cat "$enginefile" 2>/dev/null) || engine=29
	case "$engine" in
	29)
		dockerd_bin=$ENGINE_CACHE/bin/dockerd
		engine_bin=$ENGINE_CACHE/bin
		;;
	20.10)
		dockerd_bin=$(command -v dockerd || true)
		[ -n "$dockerd_bin" ] || die "ENGINE=20.10 needs Debian's dockerd: apt-get install docker.io"
		"$dockerd_bin" --version | grep -q ' 20\.10\.' || die "ENGINE=20.10: $dockerd_bin is $("$dockerd_bin" --version), not 20.10"
		engine_bin=
		;;
	*) die "unknown ENGINE $engine: want 29 or 20.10" ;;
	esac
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

answers() { timeout 10 docker -H "unix://$sock" version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; }

# pick_network: a bridge name and a /16 of its own for this DIR, the same for
# the same DIR, free of any address or route on the host. The bridge gets
# 10.K.0.1/24, and the FORWARD rule below covers 10.K.0.0/16, so networks
# created with --subnet inside it work too.
pick_network() {
	local h k i kk a
	h=$(printf '%s' "$dir" | sha256sum | cut -c1-8)
	bridge=srd-$h
	a=$(ip -4 -o addr show dev "$bridge" 2>/dev/null | awk '{print $4}') || true
	if [[ $a =~ ^10\.([0-9]+)\.0\.1/24$ ]]; then
		net=10.${BASH_REMATCH[1]}
		return 0
	fi
	k=$((0x${h:0:4} % 50))
	# (Into variables first: grep -q in a pipe with pipefail is a race.)
	local addrs routes
	addrs=$(ip -4 -o addr show)
	routes=$(ip -4 route show)
	for i in $(seq 0 49); do
		kk=$((200 + (k + i) % 50))
		if ! grep -q " 10\.$kk\." <<<"$addrs" && ! grep -q "^10\.$kk\." <<<"$routes"; then
			net=10.$kk
			return 0
		fi
	done
	die "no free 10.K.0.0/16 (K in 200-249) for the bridge; ip -4 route shows them all in use"
}

# Engine 29 deletes the link named docker0 (the other daemon's bridge) at
# start when it runs with --bridge none, and when it finds its "bridge"
# network from an earlier start while default-address-pools are set
# (configureNetworking, daemon/daemon_unix.go). So no pools, no --bridge
# none; and should docker0 vanish all the same, put it back as it was.
docker0_save() {
	[ -z "${docker0_mac:-}" ] || return 0
	docker0_mac=$(cat /sys/class/net/docker0/address 2>/dev/null) || docker0_mac=
	docker0_addrs=$(ip -o addr show dev docker0 2>/dev/null | awk '$3 == "inet" || $3 == "inet6" { print $3, $4 }' | grep -v ' fe80:') || true
}

docker0_check() {
	local a
	[ -n "${docker0_mac:-}" ] || return 0
	ip link show docker0 >/dev/null 2>&1 && return 0
	say "WARNING: docker0, the other daemon's bridge, disappeared $1; re-creating it ($docker0_mac, $docker0_addrs)"
	ip link add docker0 type bridge
	ip link set docker0 address "$docker0_mac"
	while read -r _ a; do
		[ -n "$a" ] && ip addr add "$a" dev docker0
	done <<<"$docker0_addrs"
	ip link set docker0 up
}

check_args() {
	local a=" ${ENGINE_DOCKERD_ARGS:-} "
	if [[ $a =~ [[:space:]](--bridge|-b)[=[:space:]]+none[[:space:]] ]]; then
		die "ENGINE_DOCKERD_ARGS: --bridge none makes Engine 29 delete docker0, the other daemon's bridge"
	fi
	if [[ $a == *" --default-address-pool"* ]]; then
		die "ENGINE_DOCKERD_ARGS: with --default-address-pool Engine 29 deletes docker0, the other daemon's bridge, when it restarts; create networks with --subnet inside the bridge's 10.K.0.0/16 instead"
	fi
	if [[ $a =~ [[:space:]]--iptables(=true)?[[:space:]] ]]; then
		die "ENGINE_DOCKERD_ARGS: with --iptables Engine 29 deletes the DOCKER and DOCKER-ISOLATION chains that the other daemon uses (removeIPChains, daemon/libnetwork/drivers/bridge/internal/iptabler)"
	fi
}

# forward_rule: the one iptables rule this script adds. The daemon runs with
# --iptables=false so that it leaves the other daemon's rules alone (Engine
# 29 rewrites FORWARD and shares the DOCKER* chain names with 20.10). But the
# host's FORWARD policy is DROP (the other daemon set it) and br_netfilter
# passes bridged traffic through FORWARD, so this daemon's containers could
# not reach each other: accept traffic within its own /16, nothing more.
forward_rule() {
	rule=(FORWARD -s "$net.0.0/16" -d "$net.0.0/16" -m comment --comment "sockrelay-engine $bridge" -j ACCEPT)
}

# A remapped daemon's root (uid 100000) must be able to traverse every
# directory above its data-root.
check_traversable() {
	local d=$dir
	while [ "$d" != / ]; do
		if [ -d "$d" ] && [ $((0$(stat -c %a "$d") & 1)) = 0 ]; then
			die "$d is not world-traversable (mode $(stat -c %a "$d")): the remapped root could not reach $dir/data. Choose a DIR under /tmp or /var/lib, or chmod o+x $d"
		fi
		d=$(dirname "$d")
	done
}

write_containerd_config() {
	mkdir -p "$ctd"
	cat >"$ctd/config.toml" <<-TOML
		# written by scripts/engine.sh: a containerd of its own for $dir
		version = 2
		root = "$ctd/root"
		state = "$ctd/state"
		disabled_plugins = ["io.containerd.grpc.v1.cri"]
		[grpc]
		  address = "$ctd_sock"
		[debug]
		  address = ""
		[metrics]
		  address = ""
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$ctd/opt"
	TOML
}

# kill_wait PIDFILE NAME SECONDS: SIGTERM, then SIGKILL after SECONDS.
kill_wait() {
	local pid i
	alive "$1" || {
		rm -f "$1"
		return 0
	}
	pid=$(cat "$1")
	say "stopping $2 (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 $(($3 * 2))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$2 (pid $pid) did not stop within $3 s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 1
	fi
	rm -f "$1"
}

# Processes whose command line names this instance's containerd socket: the
# shims it started (containerd-shim-runc-v2 ... -address $ctd_sock ...).
shim_pids() {
	local p c
	for p in /proc/[0-9]*; do
		c=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
		if [[ $c == *" -address $ctd_sock "* ]]; then echo "${p#/proc/}"; fi
	done
	return 0
}

start() {
	need_root "engine.sh start"
	instance "$1"
	pick_engine "${2:-}"
	local c rule
	if [ "$engine" = 29 ]; then
		find_go
		for c in runc dockerd docker-proxy; do
			cached "$c" || die "$c is not built in $ENGINE_CACHE (or is outdated): run make engine (scripts/engine.sh build) first"
		done
	fi
	command -v docker >/dev/null || die "no docker CLI on PATH: install docker.io (apt-get install docker.io), or any docker CLI 20.10+"
	apt_need containerd containerd
	apt_need containerd-shim-runc-v2 containerd
	apt_need ip iproute2
	[ ${#ctd_sock} -lt 100 ] || die "DIR is too long: $ctd_sock.ttrpc must fit a unix socket path (107 bytes); use a shorter DIR, e.g. /tmp/engine29"
	mkdir -p "$dir"
	chmod 0755 "$dir"
	check_traversable
	if alive "$dockerd_pidfile"; then
		answers && {
			say "Engine $(cat "$enginefile" 2>/dev/null) already runs on $sock (pid $(cat "$dockerd_pidfile")); DOCKER_CONFIG=$dir/config has its CLI plugins"
			return 0
		}
		die "a dockerd from an earlier start (pid $(cat "$dockerd_pidfile")) runs but does not answer on $sock; run engine.sh stop $dir first (log: $dockerd_log)"
	fi
	if [ -S "$sock" ] && answers; then
		die "something else answers on $sock; not starting a second daemon there"
	fi
	if [ -s "$enginefile" ] && [ "$(cat "$enginefile")" != "$engine" ] && [ -d "$dir/data" ]; then
		die "$dir holds the data of Engine $(cat "$enginefile"), not $engine: use another DIR, or rm -rf $dir"
	fi
	echo "$engine" >"$enginefile"

	check_args
	pick_network
	printf 'bridge=%s\nnet=%s\n' "$bridge" "$net" >"$envfile"
	if ! ip link show "$bridge" >/dev/null 2>&1; then
		say "creating bridge $bridge with $net.0.1/24"
		ip link add "$bridge" type bridge
		ip addr add "$net.0.1/24" dev "$bridge"
		ip link set "$bridge" up
	fi
	if command -v iptables >/dev/null; then
		forward_rule
		iptables -C "${rule[@]}" 2>/dev/null || iptables -I "${rule[@]}"
	else
		say "no iptables: if FORWARD drops bridged traffic here, this daemon's containers cannot reach each other"
	fi
	start_containerd
	start_dockerd
	# A DOCKER_CONFIG for this daemon whose cli-plugins are the cached ones.
	mkdir -p "$dir/config/cli-plugins"
	for c in docker-compose docker-buildx; do
		if [ -x "$(out "$c")" ]; then ln -sfn "$(out "$c")" "$dir/config/cli-plugins/$c"; fi
	done
	say "use it with: export DOCKER_HOST=unix://$sock DOCKER_CONFIG=$dir/config (that has docker compose and docker buildx, once make engine built them)"
	say "containers reach each other on the default bridge and on networks created with --subnet inside $net.0.0/16"
	say "stop it with: scripts/engine.sh stop $dir"
}

# PATH for the daemons: for Engine 29 the cache's bin first, so that
# containerd's shims find runc 1.5 for the stock "runc" runtime too, and
# dockerd finds its docker-proxy.
daemon_path() {
	if [ -n "$engine_bin" ]; then echo "$engine_bin:$PATH"; else echo "$PATH"; fi
}

start_containerd() {
	alive "$ctd_pidfile" && return 0
	write_containerd_config
	say "starting containerd $(containerd --version | awk '{print $3}') on $ctd_sock (log: $ctd_log)"
	PATH=$(daemon_path) setsid containerd --config "$ctd/config.toml" >>"$ctd_log" 2>&1 </dev/null &
	echo $! >"$ctd_pidfile"
	for _ in $(seq 1 60); do
		[ -S "$ctd_sock" ] && ctr --address "$ctd_sock" version >/dev/null 2>&1 && break
		alive "$ctd_pidfile" || {
			tail -n 20 "$ctd_log" >&2
			stop_instance
			die "containerd exited at start (its log's tail above; all of it: $ctd_log)"
		}
		sleep 0.5
	done
	ctr --address "$ctd_sock" version >/dev/null 2>&1 || {
		tail -n 20 "$ctd_log" >&2
		stop_instance
		die "containerd did not answer on $ctd_sock within 30 s (log: $ctd_log)"
	}
}

start_dockerd() {
	docker0_save
	# Not /etc/docker/daemon.json, which is the other daemon's.
	[ -f "$dir/daemon.json" ] || echo '{}' >"$dir/daemon.json"
	local args=(
		--config-file "$dir/daemon.json"
		--data-root "$dir/data"
		--exec-root "$dir/run"
		--pidfile "$dockerd_pidfile"
		-H "unix://$sock"
		--containerd "$ctd_sock"
		--userns-remap=default
		--bridge "$bridge"
		--iptables=false --ip6tables=false
	)
	if [ "$engine" = 29 ]; then
		args+=(--userland-proxy-path "$engine_bin/docker-proxy" --add-runtime "runc-engine=$engine_bin/runc" --default-runtime runc-engine)
	fi
	# shellcheck disable=SC2206
	args+=(${ENGINE_DOCKERD_ARGS:-})
	say "starting dockerd $("$dockerd_bin" --version | sed 's/^Docker version //') on $sock (log: $dockerd_log)"
	say "  dockerd ${args[*]}"
	echo "--- $(date -u +%FT%TZ) engine.sh start: dockerd ${args[*]}" >>"$dockerd_log"
	local path
	path=$(daemon_path)
	(
		# As docker.service does (LimitNOFILE=infinity).
		ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
		PATH=$path exec setsid "$dockerd_bin" "${args[@]}" >>"$dockerd_log" 2>&1 </dev/null
	) &
	local pid=$!
	for _ in $(seq 1 120); do
		answers && break
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 30 "$dockerd_log" >&2
			stop_instance
			die "dockerd exited at start (its log's tail above; all of it: $dockerd_log)"
		fi
		sleep 0.5
	done
	if ! answers; then
		tail -n 30 "$dockerd_log" >&2
		stop_instance
		die "dockerd did not answer on $sock within 60 s (its log's tail above; all of it: $dockerd_log)"
	fi
	[ -s "$dockerd_pidfile" ] || echo "$pid" >"$dockerd_pidfile"
	docker0_check "when the daemon started"
	[[ $(docker -H "unix://$sock" info --format '{{json .SecurityOptions}}') == *name=userns* ]] ||
		die "the daemon on $sock is not remapped (docker info shows no name=userns)"
	say "Engine $engine answers: $(docker -H "unix://$sock" version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}} (minimum {{.Server.MinAPIVersion}})')"
}

# restart DIR: dockerd alone, with ENGINE_DOCKERD_ARGS; containerd and the
# containers it runs stay (with --live-restore, they keep running).
restart() {
	need_root "engine.sh restart"
	instance "$1"
	[ -s "$enginefile" ] || die "no daemon was started in $dir"
	pick_engine
	# shellcheck disable=SC1090
	. "$envfile"
	alive "$ctd_pidfile" || die "the containerd of $dir does not run; use engine.sh start $dir"
	check_args
	kill_wait "$dockerd_pidfile" dockerd 60
	start_dockerd
}

stop_instance() {
	local bridge='' net='' p ns m rule
	# shellcheck disable=SC1090
	[ -f "$envfile" ] && . "$envfile"
	docker0_save
	kill_wait "$dockerd_pidfile" dockerd 60
	# Containers or plugins left running (a killed dockerd, live-restore):
	# kill their tasks before containerd goes.
	if alive "$ctd_pidfile" && [ -S "$ctd_sock" ]; then
		for ns in $(ctr --address "$ctd_sock" namespaces list -q 2>/dev/null); do
			for p in $(ctr --address "$ctd_sock" -n "$ns" tasks list -q 2>/dev/null); do
				say "killing task $ns/$p left by dockerd"
				ctr --address "$ctd_sock" -n "$ns" tasks kill -s SIGKILL "$p" >/dev/null 2>&1 || true
				sleep 0.2
				ctr --address "$ctd_sock" -n "$ns" tasks delete -f "$p" >/dev/null 2>&1 || true
			done
		done
	fi
	kill_wait "$ctd_pidfile" containerd 20
	for p in $(shim_pids); do
		say "killing shim $p left by containerd"
		kill -KILL "$p" 2>/dev/null || true
	done
	# Plugin sockets are in /run/docker/plugins/<id>/ whatever the exec-root,
	# and a killed dockerd leaves its plugins' there. Plugin IDs are random:
	# those of this data-root are this daemon's alone.
	for p in "$dir"/data/*/plugins/*/; do
		p=$(basename "$p")
		if [[ $p =~ ^[0-9a-f]{64}$ ]] && [ -d "/run/docker/plugins/$p" ]; then
			rm -rf "/run/docker/plugins/$p"
			say "removed /run/docker/plugins/$p"
		fi
	done
	# Mounts left under DIR (a killed daemon leaves some).
	for m in $(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		umount -l "$m" 2>/dev/null && say "unmounted $m"
	done
	if [ -n "$net" ] && command -v iptables >/dev/null; then
		forward_rule
		while iptables -D "${rule[@]}" 2>/dev/null; do :; done
	fi
	if [ -n "$bridge" ] && ip link show "$bridge" >/dev/null 2>&1; then
		say "removing bridge $bridge"
		ip link del "$bridge"
	fi
	docker0_check "while the daemon stopped"
	rm -f "$envfile"
}

stop() {
	need_root "engine.sh stop"
	instance "$1"
	if [ ! -d "$dir" ]; then
		say "$dir does not exist; nothing to stop"
		return 0
	fi
	stop_instance
	say "stopped; the data stays in $dir (rm -rf it to start afresh)"
}

case "${1:-build}" in
build) build ;;
path) echo "$ENGINE_CACHE/bin" ;;
start) start "${2:-}" "${3:-}" ;;
restart) restart "${2:-}" ;;
stop) stop "${2:-}" ;;
*)
	die "usage: engine.sh build | path | start DIR [29|20.10] | restart DIR | stop DIR"
	;;
esac
