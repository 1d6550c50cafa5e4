#!/usr/bin/env bash
# Checks the links between the project's Markdown files: every relative
# link names a file that exists, and every #anchor a heading of that file
# (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens).
# Links to other sites are not followed.
#
#   scripts/doclinks.sh [FILE.md...]    (default: README, CONTRIBUTING, CHANGELOG, docs/)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- README.md CONTRIBUTING.md CHANGELOG.md docs/*.md

# anchors FILE: the anchor of every heading outside fenced code blocks.
anchors() {
	awk '/^```/ { code = !code; next } !code && /^#+ / { sub(/^#+ /, ""); print }' "$1" |
		tr '[:upper:]' '[:lower:]' |
		sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g'
}

fail=0
for f in "$@"; do
	dir=$(dirname "$f")
	# Links outside fenced code blocks and outside inline code.
	while IFS= read -r link; do
		case $link in http://* | https://* | mailto:*) continue ;; esac
		path=${link%%#*}
		anchor=
		[[ $link == *#* ]] && anchor=${link#*#}
		target=$f
		[ -n "$path" ] && target=$dir/$path
		if [ ! -e "$target" ]; then
			echo "$f: link to $link: no file $target" >&2
			fail=1
			continue
		fi
		if [ -n "$anchor" ] && ! anchors "$target" | grep -qxF -- "$anchor"; then
			echo "$f: link to $link: no heading with anchor #$anchor in $target" >&2
			fail=1
		fi
	done < <(awk '/^```/ { code = !code; next } !code { gsub(/`[^`]*`/, ""); print }' "$f" |
		grep -o '\]([^)]*)' | sed -e 's/^](//' -e 's/)$//')
done
exit $fail
