#!/usr/bin/env bash
# make bench-build: the time of docker buildx build with a build context
# of BENCH_BUILD_MIB (default 100) MiB of random bytes, run from a
# userns-remapped container through the installed plugin's volumes:
# idmap (the daemon's own socket, no process in the data path: the
# reference), relay, policy=full and policy=no-escalation (BuildKit's API
# followed call by call; its session, which carries the context, spliced).
# Each round builds once through each volume, in turn, from a fresh copy
# of the context (a new directory, so BuildKit sends it whole); the report
# is each volume's median and its ratio to idmap's in the same rounds.
#
#   BENCH_ENGINE   the engine of the bench's own daemon (default 29:
#                  buildx's docker driver and BuildKit as users have them)
#   BENCH_DIR      where that daemon lives (default /var/lib/sockrelay-bench-build)
#   BENCH_ROUNDS   rounds (default 5)
#
# It takes the e2e suite's lock, as make bench does.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench-build needs root (it starts a dockerd and installs a plugin)" >&2; exit 1; }
if [ -z "${SOCKRELAY_BENCH_LOCKED:-}" ]; then
	exec env SOCKRELAY_BENCH_LOCKED=1 flock -o /run/sockrelay-e2e.lock "$0" "$@"
fi
say() { echo "bench-build.sh: $*" >&2; }
mib=${BENCH_BUILD_MIB:-100}
rounds=${BENCH_ROUNDS:-5}
dir=${BENCH_DIR:-/var/lib/sockrelay-bench-build}
engine=${BENCH_ENGINE:-29}
image=sockrelay-bench-build:latest

tmp=$(mktemp -d /tmp/srbb.XXXXXX)
chmod 755 "$tmp"
vols=()
stop() {
	for v in "${vols[@]}"; do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
	scripts/engine.sh stop "$dir" || true
	rm -rf "$tmp"
}
trap stop EXIT
scripts/engine.sh start "$dir" "$engine"
export DOCKER_HOST=unix://$dir/docker.sock DOCKER_CONFIG=$dir/config
SOCKRELAY_PLUGIN_SETTINGS="sockdir.source=$dir SOCKET_DIR=$dir" make --no-print-directory install
scripts/testimage.sh "$image" >&2

head -c "$((mib << 20))" /dev/urandom >"$tmp/big"
chmod 644 "$tmp/big"
printf 'FROM %s\nCOPY big /big\n' "$image" >"$tmp/Dockerfile"

modes=(idmap relay full no-escalation)
declare -A opt=([idmap]=mode=idmap [relay]=mode=relay [full]=policy=full [no-escalation]=policy=no-escalation)
declare -A vol
for m in "${modes[@]}"; do
	v=srbb-$m
	docker volume create -d sockrelay -o "${opt[$m]}" "$v" >/dev/null
	vols+=("$v")
	vol[$m]=$v
done

declare -A times
for r in $(seq "$rounds"); do
	for m in "${modes[@]}"; do
		ctx=$tmp/ctx-$m-$r
		mkdir "$ctx"
		ln "$tmp/big" "$ctx/big"
		cp "$tmp/Dockerfile" "$ctx/Dockerfile"
		chmod 755 "$ctx"
		t0=$(date +%s.%N)
		docker run --rm -v "${vol[$m]}:/var/run" -v "$ctx:/ctx:ro" "$image" \
			docker buildx build -q --no-cache /ctx >/dev/null
		t1=$(date +%s.%N)
		times[$m]+="$(echo "$t1 - $t0" | bc) "
		rm -rf "$ctx"
	done
	say "round $r of $rounds done"
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ref=$(echo "${times[idmap]}" | median)
echo "docker buildx build, ${mib} MiB context, Engine $engine, $rounds rounds (seconds, the whole docker run)"
printf '%-15s %8s %8s   %s\n' volume median ratio "all"
for m in "${modes[@]}"; do
	med=$(echo "${times[$m]}" | median)
	printf '%-15s %8.2f %8.2f   %s\n' "$m" "$med" "$(echo "$med / $ref" | bc -l)" "${times[$m]}"
done
