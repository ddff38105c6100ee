# The fuzz targets, sourced by run.sh and triage.sh: the lines of targets.txt
# (`name binary corpus-dir`), comments dropped. A new target is one more line
# there.
# shellcheck shell=bash
TARGETS="$(grep -v '^[[:space:]]*#' "$(dirname "${BASH_SOURCE[0]}")/targets.txt")"

# The line of TARGETS for a target name, binary name or corpus directory.
lookup() {
    echo "$TARGETS" | awk -v t="$1" 'NF && ($1 == t || $2 == t || $3 == t) { print; exit }'
}
