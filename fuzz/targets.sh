# The fuzz targets, sourced by run.sh and triage.sh: one line a target,
# `name binary corpus-dir`. A new target is one more line here and one entry in
# the replay test (codec/tests/fuzz_replay.rs).
# shellcheck shell=bash
TARGETS="
message message message
http_body http_body http-body
incremental incremental_body incremental
roundtrip roundtrip roundtrip
session session session
sp sp sp
"

# The line of TARGETS for a target name, binary name or corpus directory.
lookup() {
    echo "$TARGETS" | awk -v t="$1" 'NF && ($1 == t || $2 == t || $3 == t) { print; exit }'
}
