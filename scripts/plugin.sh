#!/usr/bin/env bash
# Manage the sockrelay managed plugin: create it from an assembled bundle,
# enable it, or remove it. Used by make plugin/install/uninstall.
#
# Replacing an installed plugin keeps its volumes: the state directory (a
# record per volume) is copied from the old plugin's propagated mount into
# the new one's before enable.
# (docker plugin upgrade keeps the propagated mount by itself.)
set -euo pipefail

cmd=${1:?usage: plugin.sh create NAME DIR | enable NAME | remove NAME}
name=${2:?plugin name}
saved=${TMPDIR:-/tmp}/sockrelay-state.$$
trap 'rm -rf "$saved"' EXIT

exists() { docker plugin inspect "$1" >/dev/null 2>&1; }

# state_dir NAME: the host path of an installed plugin's state directory.
state_dir() {
	local id root
	id=$(docker plugin inspect -f '{{.Id}}' "$1")
	root=$(docker info -f '{{.DockerRootDir}}')
	echo "$root/plugins/$id/propagated-mount/.sockrelay"
}

remove() {
	exists "$1" || return 0
	local d
	d=$(state_dir "$1")
	if [ -d "$d" ] && [ "${2:-}" = keep ]; then
		cp -a "$d" "$saved"
	fi
	echo "removing the installed plugin $1"
	docker plugin disable -f "$1" >/dev/null 2>&1 || true
	docker plugin rm -f "$1" >/dev/null
}

case "$cmd" in
create)
	dir=${3:?bundle directory}
	remove "$name" keep
	if ! out=$(docker plugin create "$name" "$dir" 2>&1); then
		echo "$out" >&2
		if grep -q 'already exists' <<<"$out"; then
			echo "docker plugin create: this very build is installed under another name;" >&2
			echo "remove that one first (docker plugin ls; docker plugin rm -f NAME)" >&2
		fi
		exit 1
	fi
	if [ -d "$saved" ]; then
		d=$(state_dir "$name")
		mkdir -p "$d"
		chmod 0700 "$d"
		cp -a "$saved/." "$d/"
		echo "kept the volumes of the previous install"
	fi
	echo "created plugin $name"
	;;
enable)
	# SOCKRELAY_PLUGIN_SETTINGS: KEY=VALUE settings to apply first, e.g. the
	# sockdir mount and SOCKET_DIR of a daemon whose socket is elsewhere.
	if [ -n "${SOCKRELAY_PLUGIN_SETTINGS:-}" ]; then
		# shellcheck disable=SC2086
		docker plugin set "$name" $SOCKRELAY_PLUGIN_SETTINGS
	fi
	docker plugin enable "$name"
	echo "enabled plugin $name"
	;;
remove)
	remove "$name"
	;;
*)
	echo "plugin.sh: unknown command $cmd" >&2
	exit 2
	;;
esac
